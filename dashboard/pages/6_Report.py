"""Report page: choose runs, download the self-contained HTML report (same as `faro report`)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import streamlit as st  # noqa: E402
from common import guard, no_runs_message, page, run_label, run_table, runs_root, store  # noqa: E402

page("Report")
st.title("Stakeholder report")
st.caption("One HTML file with plotly inline (opens offline): data and groups, what was trained, the front, "
           "certificates, per-group plots, example generations and a plain-language summary.")


@st.cache_data(show_spinner="building the report…", max_entries=8)
def _report(root: str, run_ids: tuple[str, ...], title: str, sig: tuple) -> str:
    from faro_core.results.report import build_report
    from faro_core.store.runs import RunStore

    return build_report(RunStore(root), list(run_ids), title=title)


with guard():
    table = run_table()
    if table.empty:
        no_runs_message()
        st.stop()
    done = list(table.loc[table["status"] == "done", "run_id"])
    chosen = st.multiselect("Runs", list(table["run_id"]), default=done,
                            format_func=lambda r: run_label(table, r))
    title = st.text_input("Title", value="Faro fairness report")
    if not chosen:
        st.info("Choose at least one run.")
        st.stop()
    from common import store_signature

    text = _report(runs_root(), tuple(chosen), title, store_signature(runs_root()))
    st.download_button("Download report.html", data=text, file_name="faro-report.html", mime="text/html",
                       type="primary")
    st.caption(f"{len(text) / 1e6:.1f} MB · same as `faro report {' '.join(chosen[:3])}"
               f"{' …' if len(chosen) > 3 else ''} --runs-dir {store().root} --out report.html`")
