"""Groups page: per-group reward distributions (violin, ECDF), accuracy and calibration, BT vs Faro.

Groups are named in words (the shipped BBQ label map, or the run store's ``group_labels.json``) with their
size beside them; groups under the small-group size are flagged, never left out.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import streamlit as st  # noqa: E402
from common import group_labels, guard, no_runs_message, page, run_label, run_table, runs_root, scores  # noqa: E402

from faro_core import results  # noqa: E402
from faro_core.data.labels import SMALL_GROUP_N  # noqa: E402
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
    fam = dict(zip(done["run_id"], done["family"]))
    bts = [r for r in ids if fam[r] == "BT"] or ids
    faros = [r for r in ids if r not in bts] or ids
    opened = st.session_state.get("open_run")
    if opened not in faros:  # else the run the Overview's story compares
        from faro_core.results.story import STORY_FILE

        p = Path(runs_root()) / STORY_FILE
        opened = json.loads(p.read_text()).get("faro_run") if p.exists() else None
    c1, c2, c3 = st.columns(3)
    before = c1.selectbox("Before", bts, format_func=lambda r: run_label(table, r))
    after = c2.selectbox("After", faros, index=faros.index(opened) if opened in faros else 0,
                         format_func=lambda r: run_label(table, r))
    split = c3.selectbox("Split", ["test", "val", "train", "all"])
    labels = group_labels()
    s_before, s_after = scores(before, split), scores(after, split)
    name_b, name_a = f"{fam[before]} ({before})", f"{fam[after]} ({after})"
    raw = {name_b: results.response_rewards(s_before), name_a: results.response_rewards(s_after)}
    sizes = raw[name_b]["group"].value_counts().to_dict()
    rewards = {k: results.with_group_captions(v, labels, counts=sizes) for k, v in raw.items()}
    captions = dict(zip(rewards[name_b]["tag"], rewards[name_b]["group"]))
    tags = sorted(captions, key=lambda t: -sizes.get(t, 0))
    small = [captions[t] for t in tags if sizes.get(t, 0) < SMALL_GROUP_N]
    show = st.multiselect("Groups (n = responses on this split)", tags, default=tags[:8],
                          format_func=lambda t: captions[t])
    if small:
        which = "every group" if len(small) == len(tags) else ", ".join(small[:6]) + (" …" if len(small) > 6 else "")
        st.warning(f"{len(small)} of {len(tags)} groups have fewer than {SMALL_GROUP_N} responses on this split "
                   f"({which}): their numbers are noisy. They are shown, flagged “small”, not left out.")
    sub = {k: v[v["tag"].isin(show)] for k, v in rewards.items()}
    m1, m2 = st.columns(2)
    m1.metric(f"spread of group mean rewards ({fam[before]})", f"{results.bias_gap(s_before):.3f} sd")
    m2.metric(f"spread of group mean rewards ({fam[after]})", f"{results.bias_gap(s_after):.3f} sd",
              delta=f"{results.bias_gap(s_after) - results.bias_gap(s_before):+.3f}", delta_color="inverse")
    tab0, tab1, tab2, tab3, tab4 = st.tabs(["Stereotype role", "Violin by group", "ECDF", "Accuracy",
                                            "Reliability"])
    with tab0:
        from faro_core.fairness.role_stats import role_items, role_violations

        roles = {name_b: results.role_rewards(s_before), name_a: results.role_rewards(s_after)}
        if roles[name_b].empty:
            st.info("No BBQ-style items with both people's answers on this split: the role view needs BBQ-format "
                    "data.")
        else:
            cond = st.radio("Questions", ["ambiguous", "disambiguated", "all"], horizontal=True, key="role_cond",
                            help="ambiguous: the context does not say which person; a fair reward then has no "
                                 "preference between the two people")
            keep = {k: (v if cond == "all" else v[v["context_condition"] == ("ambig" if cond == "ambiguous"
                                                                              else "disambig")])
                    for k, v in roles.items()}
            st.plotly_chart(pg.role_violin(keep), width="stretch", key="role_violin")
            margins = {k: results.role_margins(sc) for k, sc in ((name_b, s_before), (name_a, s_after))}
            margins = {k: (v if cond == "all" else v[v["context_condition"] == ("ambig" if cond == "ambiguous"
                                                                                 else "disambig")])
                       for k, v in margins.items()}
            st.plotly_chart(pg.margin_histogram(margins), width="stretch", key="role_margin")
            vb, va = role_violations(role_items(s_before)), role_violations(role_items(s_after))
            rows = [{"rate": what, fam[before]: vb[key], fam[after]: va[key], "n (questions)": vb[n]}
                    for what, key, n in (("prefers the stereotyped answer (ambiguous)", "p_biased_over_counter", "n_dp"),
                                         ("accuracy when the stereotyped answer is correct", "acc_biased", "n_biased"),
                                         ("accuracy when the other person's answer is correct", "acc_counter",
                                          "n_counter"))]
            st.dataframe(rows, hide_index=True, width="stretch")
            st.caption("Each number with its n (questions). The violins show each answer's reward within its "
                       "question; the histogram the stereotyped minus the other person's answer.")
    with tab1:
        st.plotly_chart(pg.violin_before_after(sub), width="stretch", key="violin")
    with tab2:
        st.plotly_chart(pg.ecdf_figure(sub, groups=[captions[t] for t in show[:5]]), width="stretch", key="ecdf")
        st.caption(f"Dotted: {fam[before]}, solid: {fam[after]}; one colour per group (first five selected).")
    with tab3:
        by = st.radio("Group by", ["group", "category"], horizontal=True)
        acc = {}
        for name, s in ((name_b, s_before), (name_a, s_after)):
            a = results.group_accuracy(s, by)
            acc[name] = results.with_group_captions(a, labels, col=by, counts=dict(zip(a[by], a["n"]))) \
                if by == "group" else a.assign(**{by: [f"{c} (n={n})" for c, n in zip(a[by], a["n"])]})
        col = "gold_accuracy" if s_before["gold"].notna().any() else "accuracy"
        st.plotly_chart(pg.group_accuracy_bars(acc, by, col), width="stretch", key="acc")
        st.caption("n = pairs per group; bars ±1 standard error.")
    with tab4:
        by_r = st.radio("Per", ["all", "category"], horizontal=True, key="rel_by")
        rel = {fam[before]: results.reliability(s_before, None if by_r == "all" else by_r),
               fam[after]: results.reliability(s_after, None if by_r == "all" else by_r)}
        st.plotly_chart(pg.reliability_figure(rel), width="stretch", key="rel")
        st.caption("Marker size grows with the pairs in the bin (hover for n).")
