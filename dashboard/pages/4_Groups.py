"""Groups page: per-group reward distributions (violin, ECDF), accuracy and calibration, BT vs Faro."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import streamlit as st  # noqa: E402
from common import guard, no_runs_message, page, run_label, run_table, scores  # noqa: E402

from faro_core import results  # noqa: E402
from faro_core.results import plots as pg  # noqa: E402

page("Groups")
st.title("Groups: before (BT) vs after (Faro)")

with guard():
    table = run_table()
    done = table[table["status"] == "done"] if not table.empty else table
    if done.empty:
        no_runs_message()
        st.stop()
    ids = list(done["run_id"])
    bts = [r for r in ids if done.loc[done["run_id"] == r, "family"].iloc[0] == "BT"] or ids
    faros = [r for r in ids if r not in bts] or ids
    opened = st.session_state.get("open_run")
    c1, c2, c3 = st.columns(3)
    before = c1.selectbox("Before", bts, format_func=lambda r: run_label(table, r))
    after = c2.selectbox("After", faros, index=faros.index(opened) if opened in faros else 0,
                         format_func=lambda r: run_label(table, r))
    split = c3.selectbox("Split", ["test", "val", "train", "all"])
    s_before, s_after = scores(before, split), scores(after, split)
    rewards = {f"BT ({before})": results.response_rewards(s_before),
               f"Faro ({after})": results.response_rewards(s_after)}
    groups = sorted(set(rewards[next(iter(rewards))]["group"]))
    show = st.multiselect("Groups", groups, default=groups[:8])
    sub = {k: v[v["group"].isin(show)] for k, v in rewards.items()}
    m1, m2 = st.columns(2)
    m1.metric("spread of group mean rewards (BT)", f"{results.bias_gap(s_before):.3f} sd")
    m2.metric("spread of group mean rewards (Faro)", f"{results.bias_gap(s_after):.3f} sd",
              delta=f"{results.bias_gap(s_after) - results.bias_gap(s_before):+.3f}", delta_color="inverse")
    tab1, tab2, tab3, tab4 = st.tabs(["Violin", "ECDF", "Accuracy", "Reliability"])
    with tab1:
        st.plotly_chart(pg.violin_before_after(sub), width="stretch", key="violin")
    with tab2:
        st.plotly_chart(pg.ecdf_figure(sub, groups=show[:5]), width="stretch", key="ecdf")
        st.caption("Dotted: BT, solid: Faro; one colour per group (first five selected).")
    with tab3:
        by = st.radio("Group by", ["group", "category"], horizontal=True)
        acc = {f"BT ({before})": results.group_accuracy(s_before, by),
               f"Faro ({after})": results.group_accuracy(s_after, by)}
        col = "gold_accuracy" if s_before["gold"].notna().any() else "accuracy"
        st.plotly_chart(pg.group_accuracy_bars(acc, by, col), width="stretch", key="acc")
    with tab4:
        by_r = st.radio("Per", ["all", "category"], horizontal=True, key="rel_by")
        rel = {"BT": results.reliability(s_before, None if by_r == "all" else by_r),
               "Faro": results.reliability(s_after, None if by_r == "all" else by_r)}
        st.plotly_chart(pg.reliability_figure(rel), width="stretch", key="rel")
