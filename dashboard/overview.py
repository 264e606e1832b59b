"""Faro dashboard: ``streamlit run dashboard/app.py``.

The overview page: what the run store holds and the headline result. Pages under ``pages/`` explore the
data, launch training, the accuracy–fairness front, per-group views, the policy and the report.
Start-up does no heavy work: it reads JSON files of the run store only (build the demo with `faro demo`).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import streamlit as st  # noqa: E402
from common import guard, no_runs_message, page, run_table, runs_root  # noqa: E402

page("Overview")
st.title("Faro — fair reward models")
st.caption("Bradley–Terry reward models trained under demographic parity (DP), equalized odds (EO) and "
           "counterfactual (CF) constraints, with slack ε. Explore the accuracy–fairness trade-off.")

with guard():
    table = run_table()
    if table.empty:
        no_runs_message()
    else:
        from faro_core.explore import KIND_LABEL, headline

        done = table[table["status"] == "done"]
        c1, c2, c3, c4 = st.columns(4)
        c1.metric("runs", len(table))
        c2.metric("finished", len(done))
        c3.metric("running / queued", int(table["status"].isin(["running", "queued"]).sum()))
        c4.metric("with policy results", int(table["has_policy"].sum()))
        st.subheader("Headline")
        heads = headline(table)
        if not heads:
            st.write("No BT baseline with a finished Faro run to compare yet.")
        for kind, h in heads.items():
            st.markdown(
                f"- **{KIND_LABEL[kind]}**: plain BT (`{h['bt_run']}`) violates by **{h['bt_violation']:.3f}** "
                f"at accuracy {h['bt_accuracy']:.3f}; Faro at ε={h['faro_epsilon']:g} (`{h['faro_run']}`) "
                f"{'brings it down' if h['faro_violation'] < h['bt_violation'] else 'does not lower it'}: "
                f"**{h['faro_violation']:.3f}** at accuracy {h['faro_accuracy']:.3f} ({h['split']} split).")
        st.subheader("Runs")
        st.dataframe(table[["run_id", "status", "family", "epsilon", "seed", "accuracy", "viol_dp", "viol_eo",
                            "viol_cf", "certified", "has_policy"]], hide_index=True, width="stretch")
    st.caption(f"Run store: `{runs_root()}` — the same one `faro train/sweep/eval --runs-dir` writes to.")
    cols = st.columns(6)
    for col, (path, label) in zip(cols, [("pages/1_Data.py", "Data"), ("pages/2_Train.py", "Train"),
                                         ("pages/3_Pareto.py", "Pareto"), ("pages/4_Groups.py", "Groups"),
                                         ("pages/5_Policy.py", "Policy"), ("pages/6_Report.py", "Report")]):
        try:
            col.page_link(path, label=label)
        except Exception:  # page_link needs the multipage runtime (not in AppTest)
            col.write(label)
