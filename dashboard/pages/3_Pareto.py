"""Pareto page: the DP, EO and CF fronts side by side, one notion in detail, certificates; open a run."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import streamlit as st  # noqa: E402
from common import (  # noqa: E402
    guard,
    no_runs_message,
    open_selected,
    page,
    refresh_as_runs_finish,
    run_label,
    run_table,
    store,
)

from faro_core import results  # noqa: E402
from faro_core.results.plots import fronts_figure, pareto_figure  # noqa: E402

page("Pareto")
st.title("Accuracy–fairness front")

with guard():
    table = run_table()
    if table.empty:
        no_runs_message()
        st.stop()
    refresh_as_runs_finish(table)
    st.subheader("Constraint types side by side")
    st.caption("One accuracy axis; each panel its own violation axis. BT and the baselines appear in every panel, "
               "Faro runs in the panel of the notion they were trained for. Hover a point for its violation of "
               "the other notions; click it to open its run below.")
    fronts = results.constraint_fronts(table)
    st.plotly_chart(fronts_figure(fronts, highlight=st.session_state.get("open_run")), width="stretch",
                    on_select=functools.partial(open_selected, "fronts"), selection_mode="points", key="fronts")
    with st.expander("Every run's violation of each notion (the cost of one constraint on the others)"):
        st.dataframe(results.cross_violations(table), hide_index=True, width="stretch")
    st.subheader("One notion in detail")
    c1, c2 = st.columns(2)
    kind = c1.selectbox("Fairness notion", list(results.KINDS), format_func=lambda k: results.KIND_LABEL[k])
    splits = ["test", "val", "train"]
    default = results.best_split(table, kind)
    split = c2.selectbox("Split", splits, index=splits.index(default),
                         help="held-out test by default; small splits can leave group cells unestimated")
    if split != "test":
        st.caption(f"Violations on the **{split}** split (the test split has too few pairs per group cell "
                   "for this notion on this data).")
    pts = results.pareto_points(table, kind, split)
    fig = pareto_figure(pts, kind, highlight=st.session_state.get("open_run"))
    st.plotly_chart(fig, width="stretch", on_select=functools.partial(open_selected, f"front-{kind}"),
                    selection_mode="points", key=f"front-{kind}")
    if not pts.empty:
        st.dataframe(pts.drop(columns=["run_ids"]), hide_index=True, width="stretch")
    ids = list(table["run_id"])
    if st.session_state.get("open_run_pick") not in ids:
        current = st.session_state.get("open_run")
        st.session_state["open_run_pick"] = current if current in ids else ids[0]
    run_id = st.selectbox("Open a run (or click a point)", ids, key="open_run_pick",
                          format_func=lambda r: run_label(table, r))
    st.session_state["open_run"] = run_id
    run = store().get(run_id)
    row = table[table["run_id"] == run_id].iloc[0]
    st.subheader(run_label(table, run_id))
    if row["status"] == "failed":
        st.error(f"this run failed: {row['error']} — fix the cause and relaunch it from the Train page")
    c1, c2, c3 = st.columns(3)
    with c1:
        st.markdown("**Metrics**")
        st.json(run.metrics() or {"status": row["status"]}, expanded=False)
        for line in results.chance_lines(run):
            st.caption(line)
    with c2:
        st.markdown("**Certificate**")
        cert = results.certificate_summary(run)
        if cert is None:
            st.info(f"not computed yet — run `faro certify {run_id} --runs-dir {store().root}`")
        else:
            badge = {True: "✓ certified", False: "✗ not certified", None: "—"}[cert["certified"]]
            st.write(badge)
            st.json(cert["raw"], expanded=False)
    with c3:
        st.markdown("**Config**")
        st.json(run.config, expanded=False)
