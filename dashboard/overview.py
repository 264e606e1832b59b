"""Overview: the story on the first screen — the stereotype bias of the standard reward, Faro's, whether that is
certified, what it cost, and held-out examples — then the run store's runs.

Everything shown is built by :mod:`faro_core.results.story` (cached as the run store's ``story.json``, so this
page reads JSON and Parquet only); the page only lays it out.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import streamlit as st  # noqa: E402
from common import guard, no_runs_message, page, run_table, runs_root, store, store_signature  # noqa: E402

page("Overview")
st.title("Faro — fair reward models")
st.caption("A reward model scores a chatbot's answers; a chatbot trained on it learns what the scores favour. "
           "Faro trains the reward under a fairness constraint, certifies it on held-out data, and shows here "
           "whether the bias went down.")


@st.cache_data(show_spinner="building the story…", max_entries=8)
def _story(root: str, sig: tuple) -> dict:
    from faro_core.results.story import load_story
    from faro_core.store.runs import RunStore

    return load_story(RunStore(root))


def show_example(ex: dict, i: int) -> None:
    """One held-out item: its text, its three answers, both rewards' scores and which each ranks first."""
    from faro_core.results.story import example_caption, example_table

    head = {"bt_stereotyped_faro_correct": "where Faro corrects BT",
            "bt_leans_faro_not": "where BT leans to the stereotyped person and Faro does not",
            "both_stereotyped": "where both are wrong (shown for honesty)"}[ex["kind"]]
    with st.container(border=True):
        st.markdown(f"**Example {i}** · {ex['category'].replace('_', ' ')} · {head}")
        st.write(ex["prompt"])
        st.table(example_table(ex).set_index("answer"))
        st.caption(example_caption(ex))


with guard():
    table = run_table()
    if table.empty:
        no_runs_message()
        st.stop()
    from faro_core.errors import FaroError

    try:
        story = _story(runs_root(), store_signature(runs_root()))
    except FaroError as exc:
        story = None
        from faro_core.integrations.trl_import import imported_note, is_imported

        done_imported = [r for r in store().list() if r.status == "done" and is_imported(r.config)]
        st.info(imported_note(done_imported[-1]) if done_imported else f"No before/after story yet: {exc}.")
    if story:
        from faro_core.results.plots import story_svg

        st.subheader("Does the reward prefer the stereotype? Before and after Faro")
        st.markdown(f"#### {story.get('headline') or ''}")
        st.write(story["sentence"])
        st.markdown(story_svg(story), unsafe_allow_html=True)  # SVG: drawn at once (plotly in the report)
        if story.get("note"):
            st.caption(f"Note: {story['note']}.")
        c = story["certificate"]
        st.caption(f"Runs: BT `{story['bt_run']}`, {story['faro_family']} `{story['faro_run']}` (ε = "
                   f"{story['epsilon']:g}, {story['split']} split, split by {story.get('split_by', 'item')}). "
                   f"Faro's run is picked by a rule fixed in advance: {story.get('rule', '')}. Certificate: "
                   f"{c['faro']['bound']} at δ = {c['faro']['delta']:g}; it covers "
                   f"{c['faro'].get('estimand') or 'held-out items drawn like these'}. The Pareto page compares "
                   f"every constraint type.")
        if story["examples"]:
            st.subheader("Held-out examples")
            st.caption("Scores are in standard deviations within each question (only their order matters). "
                       "★ = the answer the reward ranks first; ✓ = the correct answer.")
            n_good = sum(e["kind"] != "both_stereotyped" for e in story["examples"])
            if n_good < 3:
                st.caption(f"Only {n_good} held-out question(s) on this data where Faro corrects BT or removes its "
                           "lean to the stereotyped person; all are shown.")
            cols = st.columns(2)
            for i, ex in enumerate(story["examples"], start=1):
                with cols[(i - 1) % 2]:
                    show_example(ex, i)
    done = table[table["status"] == "done"]
    with st.expander(f"All runs in the store ({len(table)}; {len(done)} finished)"):
        c1, c2, c3, c4 = st.columns(4)
        c1.metric("runs", len(table))
        c2.metric("finished", len(done))
        c3.metric("running / queued", int(table["status"].isin(["running", "queued"]).sum()))
        c4.metric("with policy results", int(table["has_policy"].sum()))
        st.dataframe(table[["run_id", "status", "family", "epsilon", "seed", "accuracy", "viol_dp", "viol_eo",
                            "viol_cf", "certified", "has_policy"]], hide_index=True, width="stretch")
    st.caption(f"Run store: `{store().root}` — the same one `faro train/sweep/eval --runs-dir` writes to.")
