"""Pareto page: accuracy vs violation per constraint type, frontier, seeds, certificates; open a run."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import streamlit as st  # noqa: E402
from common import guard, no_runs_message, page, run_label, run_table, store  # noqa: E402

from faro_core import results  # noqa: E402
from faro_core.results.plots import pareto_figure  # noqa: E402

page("Pareto")
st.title("Accuracy–fairness front")

with guard():
    table = run_table()
    if table.empty:
        no_runs_message()
        st.stop()
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
    event = st.plotly_chart(fig, width="stretch", on_select="rerun", selection_mode="points", key=f"front-{kind}")
    picked = None
    try:
        sel = (event or {}).get("selection", {}).get("points", []) if isinstance(event, dict) else \
            event.selection.points
        if sel:
            cd = sel[0].get("customdata")
            picked = cd[0] if isinstance(cd, list | tuple) else None
    except (AttributeError, KeyError, TypeError):
        picked = None
    if not pts.empty:
        st.dataframe(pts.drop(columns=["run_ids"]), hide_index=True, width="stretch")
    ids = list(table["run_id"])
    if picked in ids:
        st.session_state["open_run"] = picked
    current = st.session_state.get("open_run")
    run_id = st.selectbox("Open a run (or click a point)", ids, index=ids.index(current) if current in ids else 0,
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
            badge = {True: "✅ certified", False: "❌ not certified", None: "—"}[cert["certified"]]
            st.write(badge)
            st.json(cert["raw"], expanded=False)
    with c3:
        st.markdown("**Config**")
        st.json(run.config, expanded=False)
