"""Faro dashboard: ``streamlit run dashboard/app.py``.

The entry point only declares the pages (``st.navigation``), so the sidebar reads "Overview", "Data", ...
in pipeline order; each page is its own script (``overview.py``, ``pages/*.py``) that only calls faro_core.
Start-up does no heavy work: the Overview reads JSON and Parquet files of the run store only (build the demo
with `faro demo`).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import streamlit as st  # noqa: E402

# (script, sidebar title, icon); the URL of each page is its file name without the number prefix
PAGES = [("overview.py", "Overview", ":material/insights:"), ("pages/1_Data.py", "Data", ":material/table:"),
         ("pages/2_Train.py", "Train", ":material/model_training:"),
         ("pages/3_Pareto.py", "Pareto", ":material/scatter_plot:"),
         ("pages/4_Groups.py", "Groups", ":material/groups:"), ("pages/5_Policy.py", "Policy", ":material/chat:"),
         ("pages/6_Report.py", "Report", ":material/description:")]

nav = st.navigation([st.Page(str(HERE / path), title=title, icon=icon, default=i == 0)
                     for i, (path, title, icon) in enumerate(PAGES)])
nav.run()
