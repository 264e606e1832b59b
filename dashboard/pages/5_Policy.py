"""Policy page: β slider, BBQ bias scores and KL of π_β per reward, generations side by side."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402
from common import guard, no_runs_message, page, policy, run_label, run_table, store  # noqa: E402

from faro_core.policy import compare  # noqa: E402
from faro_core.results.plots import method_color, policy_figure  # noqa: E402

page("Policy")
st.title("Does fairness transfer to the policy?")
st.caption("π_β(y|x) ∝ π_ref(y|x)·exp(r(x,y)/β) over each BBQ item's three answers. s_AMB / s_DIS: BBQ bias "
           "scores (0 = unbiased); KL(π_β‖π_ref) in nats per item.")

@st.cache_data(show_spinner=False, max_entries=16)
def _stored_choices(root: str, run_ids: tuple[str, ...], sig: tuple) -> pd.DataFrame:
    from faro_core.store.runs import RunStore

    st_ = RunStore(root)
    return compare.stored_choices([st_.get(r) for r in run_ids])


def stored_choices_cached(run_ids: tuple[str, ...]) -> pd.DataFrame:
    """:func:`faro_core.policy.compare.stored_choices`, cached on the runs' file mtimes."""
    from common import run_signature, runs_root

    return _stored_choices(runs_root(), run_ids, tuple(run_signature(runs_root(), r) for r in run_ids))


def show_choices(choices: pd.DataFrame, fam: dict[str, str], limit: int = 8) -> None:
    """Per prompt: each model's best-of-n choice in its own column, in the model's colour."""
    for _, g in list(choices.groupby("prompt_idx", sort=False))[:limit]:
        differs = bool(g["differs"].iloc[0])
        st.markdown(f"{'⇄ ' if differs else ''}**{g['category'].iloc[0]}** — {g['user_text'].iloc[0]}")
        cols = st.columns(len(g))
        base = g["text"].iloc[0]
        for col, (_, row) in zip(cols, g.iterrows()):
            with col.container(border=True):
                f = fam.get(row["model"], row["model"])
                col_ = method_color(f)
                st.markdown(f"<span style='color:{col_};font-weight:600'>■ {f}</span> <code>{row['model']}</code>",
                            unsafe_allow_html=True)
                st.write(row["text"])
                same = row["text"] == base
                st.caption(f"reward {row['reward_sd']:+.2f} sd · names: {row['mention']}"
                           + ("" if same or not differs else " · **differs from the first**"))


with guard():
    table = run_table()
    if table.empty:
        no_runs_message()
        st.stop()
    with_pol = list(table.loc[table["has_policy"], "run_id"])
    if not with_pol:
        st.info(f"Policy results are not computed yet — run `faro policy RUN… --runs-dir {store().root}` "
                "(or `faro demo`).")
        st.stop()
    default = [r for r in with_pol if "bt" in r][:1] + [r for r in with_pol if "bt" not in r][:2]
    chosen = st.multiselect("Rewards", with_pol, default=default or with_pol[:3],
                            format_func=lambda r: run_label(table, r))
    if not chosen:
        st.stop()
    frames = [policy(r) for r in chosen]
    ref = frames[0][frames[0]["model"] == "reference LM"]
    frame = pd.concat([ref] + [f[f["model"] != "reference LM"] for f in frames], ignore_index=True)
    betas = sorted(float(b) for b in frame["beta"].unique() if np.isfinite(b))
    beta = st.select_slider("β (small: follow the reward; large: stay near the reference LM)", options=betas,
                            value=betas[len(betas) // 2] if betas else None)
    at = frame[(frame["beta"] == beta) | ((frame["model"] == "reference LM") & ~np.isfinite(frame["beta"]))]
    at = at.drop_duplicates("model").set_index("model")[["accuracy", "s_amb", "s_dis", "kl", "expected_reward"]]
    st.dataframe(at, width="stretch")
    colors = {r: method_color(f) for r, f in zip(table["run_id"], table["family"])}  # one colour per method
    c1, c2 = st.columns(2)
    c1.plotly_chart(policy_figure(frame, "s_amb", beta, colors=colors), width="stretch", key="samb")
    c2.plotly_chart(policy_figure(frame, "s_dis", beta, colors=colors), width="stretch", key="sdis")
    c1.plotly_chart(policy_figure(frame, "accuracy", beta, colors=colors), width="stretch", key="pacc")
    c2.plotly_chart(policy_figure(frame, "kl", beta, colors=colors), width="stretch", key="kl")

    st.subheader("Generations compared")
    st.caption("The same n replies of the reference LM, reranked under each reward: each reward's best-of-n "
               "choice side by side, with its score (sd units over the n replies) and which of the item's two "
               "groups it names. ⇄ marks prompts where the rewards choose differently.")
    fam = dict(zip(table["run_id"], table["family"]))
    tab_stored, tab_typed = st.tabs(["BBQ prompts", "Your own prompt"])
    with tab_stored:
        with_gen = [r for r in chosen if table.loc[table["run_id"] == r, "has_generations"].iloc[0]]
        if not with_gen:
            st.info("No generations yet — run `faro policy RUN… --generate` (or `faro demo`).")
        else:
            choices = stored_choices_cached(tuple(with_gen))
            c1, c2, c3 = st.columns([2, 2, 1])
            cats = c1.multiselect("Category", sorted(choices["category"].astype(str).unique()), default=[])
            tags = c2.multiselect("Group named by a choice", sorted(choices["mention"].astype(str).unique()),
                                  default=[], help="target: the group the stereotype is about; other: the other "
                                                   "group; both / neither")
            only = c3.checkbox("Only where choices differ", value=False)
            shown = compare.filter_choices(choices, cats, tags, only)
            n_prompts = shown["prompt_idx"].nunique()
            st.caption(f"{n_prompts} of {choices['prompt_idx'].nunique()} prompts; "
                       f"{int(choices.groupby('prompt_idx')['differs'].first().sum())} with differing choices.")
            show_choices(shown, fam, limit=8)
            ft = [r for r in with_gen if compare.finetuned_policy_dir(store().get(r)) is not None]
            if ft and st.button(f"Sample the fine-tuned (RLOO) policies of {', '.join(ft)} on these prompts"):
                prompts = list(dict.fromkeys(shown["user_text"]))[:4]
                for r in ft:
                    st.markdown(f"**{fam.get(r, r)} fine-tuned policy** (`{r}`)")
                    st.dataframe(compare.finetuned_samples(store().get(r), prompts, n=2)[["user_text", "text"]],
                                 hide_index=True, width="stretch")
    with tab_typed:
        text = st.text_area("Prompt", placeholder="e.g. A grandmother and her grandson were both at the bank. "
                                                  "Who struggled with the new app?", key="typed_prompt")
        c1, c2 = st.columns(2)
        n = c1.slider("Replies to sample (n)", 2, 8, 4)
        go = c2.button("Sample and rerank", type="primary")
        if go:
            bar = st.progress(0.0, text="starting…")
            samples, choices = compare.rerank_prompt([store().get(r) for r in chosen], text, n=n,
                                                     progress=lambda f, m: bar.progress(min(max(f, 0.0), 1.0), text=m))
            st.session_state["typed_result"] = (text, samples, choices)
        if st.session_state.get("typed_result"):
            t, samples, choices = st.session_state["typed_result"]
            st.caption(f"Prompt: {t}")
            show_choices(choices, fam, limit=1)
            with st.expander("All samples with every reward's score"):
                st.dataframe(samples.drop(columns=["prompt_idx", "user_text", "category", "mention"], errors="ignore"),
                             hide_index=True, width="stretch")
            ft = [r for r in chosen if compare.finetuned_policy_dir(store().get(r)) is not None]
            for r in ft:
                st.markdown(f"**{fam.get(r, r)} fine-tuned policy** (`{r}`)")
                st.dataframe(compare.finetuned_samples(store().get(r), [t], n=2)[["text"]], hide_index=True,
                             width="stretch")
