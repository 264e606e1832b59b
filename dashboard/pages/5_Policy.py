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
from faro_core.train.method_spec import is_reference  # noqa: E402

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


def show_choices(choices: pd.DataFrame, fam: dict[str, str], limit: int | None = 8) -> None:
    """Per prompt (those where the rewards' choices differ first): each reward's best-of-n choice in its own
    column, in the method's colour: the reply (hidden when the filter flags it), its reward in sd units
    and what it names, in words."""
    order = compare.ordered_prompts(choices)
    for p in order[:limit] if limit else order:
        g = choices[choices["prompt_idx"] == p]
        differs = bool(g["differs"].iloc[0])
        st.markdown(f"{'⇄ ' if differs else '= '}**{g['category'].iloc[0]}** — {g['user_text'].iloc[0]}")
        if not differs and len(g) > 1:
            st.caption("The rewards agree: they all choose the same reply.")
        cols = st.columns(len(g))
        for col, (_, row) in zip(cols, g.iterrows()):
            with col.container(border=True):
                f = fam.get(row["model"], row["model"])
                col_ = method_color(f)
                st.markdown(f"<span style='color:{col_};font-weight:600'>■ {f}</span> <code>{row['model']}</code>",
                            unsafe_allow_html=True)
                c = compare.card(row)
                if c["hidden"]:
                    st.write(f"*(reply hidden by the filter: {c['hidden']}; this reward chose it)*")
                else:
                    st.write(c["text"])
                st.caption(f"{c['reward']} · {c['names']}")


def overview_run(root: str) -> str | None:
    """The Overview's Faro run (``story.json``), if the store has one."""
    import json

    try:
        return json.loads((Path(root) / "story.json").read_text()).get("faro_run")
    except (OSError, ValueError, AttributeError):
        return None


def reward_induced_section(chosen: list[str], table: pd.DataFrame) -> None:
    """What the reward adds to the reference LM's bias, in words, for the Overview's run (else the first
    chosen Faro run), and a table for every chosen reward."""
    from common import runs_root

    from faro_core.policy.evaluate import reward_induced_sentence, share_is_stated

    ri = None
    for r in chosen:
        ri = (store().get(r).read("policy.json") or {}).get("reward_induced")
        if ri and ri.get("models"):
            break
    if not ri or not ri.get("models"):
        return
    fam = dict(zip(table["run_id"], table["family"]))
    eps = dict(zip(table["run_id"], table["epsilon"]))
    labels = {r: (fam[r] if fam[r] == "BT" or not isinstance(eps.get(r), int | float) or eps[r] != eps[r]
                  else f"{fam[r]} ε = {eps[r]:g}") for r in ri["models"] if r in fam}
    ov = overview_run(runs_root())
    faro = [r for r in ri["models"] if r != ri.get("baseline")]
    run = ov if ov in ri["models"] else (next((r for r in chosen if r in faro), faro[0] if faro else None))
    if run is None:
        return
    st.subheader("What the reward adds to the reference LM's bias")
    st.markdown(reward_induced_sentence(ri, run, labels)
                + (" This is the Overview's Faro run." if run == ov else ""))
    rows = []
    for r, m in ri["models"].items():
        row = {"reward": labels.get(r, r), "run": r,
               f"adds at β = {ri['beta']:g}": f"{m['at_beta']['value']:+.3f} [{m['at_beta']['lo']:+.3f}, "
                                               f"{m['at_beta']['hi']:+.3f}]",
               "adds at matched KL": (f"{m['at_kl']['value']:+.3f} [{m['at_kl']['lo']:+.3f}, {m['at_kl']['hi']:+.3f}]"
                                      if np.isfinite(m["at_kl"]["value"]) else "n/a")}
        base = ri["models"].get(ri.get("baseline"), {})
        for key, point, name in (("removed_at_beta", "at_beta", "share of BT's removed (β)"),
                                 ("removed_at_kl", "at_kl", "share of BT's removed (KL)")):
            v = m.get(key)
            if not v or not np.isfinite(v["value"]) or r == ri.get("baseline"):
                row[name] = "—"
            elif not share_is_stated(base.get(point)):
                row[name] = "— (BT adds ≈ 0)"
            else:
                row[name] = f"{100 * v['value']:.0f} % [{100 * v['lo']:.0f}, {100 * v['hi']:.0f}]"
        rows.append(row)
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def role_counts_section(choices: pd.DataFrame, samples_hidden: int, n_samples: int, fam: dict[str, str],
                        colors: dict[str, str]) -> None:
    """Choices counted by what they name, with intervals and the paired difference against BT; how often
    each reward's choice is a filtered reply."""
    from faro_core.policy.choices import counts_table, role_counts
    from faro_core.policy.mentions import CLASS_WORDS, CLASSES
    from faro_core.policy.plots import role_counts_figure

    if not set(choices["mention"].dropna()) & set(CLASSES):
        return
    bt = next((m for m in choices["model"].unique() if fam.get(m) == "BT"), None)
    rc = role_counts(choices, compare.prompt_clusters(choices), baseline=bt)
    labels = {m: f"{fam.get(m, m)} ({m})" for m in rc["models"]}
    st.plotly_chart(role_counts_figure(rc, labels, colors), width="stretch", key="rolecounts")
    tab = counts_table(rc, labels)
    tab["names"] = tab["class"].map(CLASS_WORDS)
    tab["share [95 %]"] = [f"{v:.2f} [{lo:.2f}, {hi:.2f}]" for v, lo, hi in zip(tab["share"], tab["lo"], tab["hi"])]
    cols = ["reward", "names", "count", "share [95 %]"]
    if "diff_vs_bt" in tab:
        tab["minus BT [95 %]"] = [("—" if pd.isna(v) else f"{v:+.2f} [{lo:+.2f}, {hi:+.2f}]")
                                  for v, lo, hi in zip(tab["diff_vs_bt"], tab["diff_lo"], tab["diff_hi"])]
        cols.append("minus BT [95 %]")
    st.dataframe(tab[cols], hide_index=True, width="stretch")
    st.caption(f"Intervals: cluster-robust 95 % over the prompts' {rc['clusters']} BBQ templates; 'minus BT' pairs "
               "each prompt's choice with BT's on the same replies.")
    filt = ", ".join(f"{fam.get(m, m)} {int(round(e['filtered']['value'] * e['n_prompts']))} of {e['n_prompts']}"
                     for m, e in rc["models"].items())
    st.caption(f"The filter (profanity and slurs, empty or non-English text) hides {samples_hidden} of {n_samples} "
               f"replies from the cards; they stay in the data. Best-of-n choices that are filtered replies: {filt}.")


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
    from common import runs_root

    # BT, the Overview's Faro run (the pair the page's counts compare), then one more reward
    bt_of = {r: is_reference(store().get(r).read("config.json", {}) or {}) for r in with_pol}
    bt_runs = [r for r in with_pol if bt_of[r]]
    ov = overview_run(runs_root())
    default = bt_runs[:1] + ([ov] if ov in with_pol and ov not in bt_runs else [])
    default += [r for r in with_pol if r not in default and r not in bt_runs][:3 - len(default)]
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
    reward_induced_section(chosen, table)
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
            gen0 = pd.read_parquet(store().get(with_gen[0]).file("policy_generations.parquet"))
            n_all = choices["prompt_idx"].nunique()
            n_diff = int(choices.groupby("prompt_idx")["differs"].first().sum())
            bt = next((m for m in with_gen if fam.get(m) == "BT"), None)
            pair = ""
            if bt and len(with_gen) > 1:
                from faro_core.policy.choices import differing_prompts

                pair = "; " + ", ".join(f"{differing_prompts(choices, bt, m)} between BT and {fam.get(m, m)} "
                                        f"(`{m}`)" for m in with_gen if m != bt)
            st.markdown(f"**{n_all} prompts** × {int(gen0.groupby('prompt_idx').size().max())} replies; "
                        f"**{n_diff}** where the chosen rewards do not all pick the same reply{pair}.")
            role_counts_section(choices, compare.hidden_count(gen0), len(gen0), fam, colors)
            c1, c2, c3 = st.columns([2, 2, 1])
            cats = c1.multiselect("Category", sorted(choices["category"].astype(str).unique()), default=[])
            tags = c2.multiselect("Group named by a choice", sorted(choices["mention"].astype(str).unique()),
                                  default=[], help="stereotyped: the person the stereotype picks for this question; "
                                                   "other: the other person; both / unknown (says it cannot be "
                                                   "determined) / neither")
            only = c3.checkbox("Only where choices differ", value=False)
            shown = compare.filter_choices(choices, cats, tags, only)
            n_prompts = shown["prompt_idx"].nunique()
            show_all = st.checkbox(f"Show all {n_prompts} prompts", value=False,
                                   help="By default the first 10: prompts where the rewards disagree come first")
            st.caption(f"{n_prompts} of {n_all} prompts; {n_diff} with differing choices (⇄, shown first). "
                       "Each card: the reply, its reward in sd units over the prompt's replies, what it names.")
            show_choices(shown, fam, limit=None if show_all else 10)
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
        n = c1.slider("Replies to sample (n)", 2, 16, 4)
        go = c2.button("Sample and rerank", type="primary")
        if go:
            bar = st.progress(0.0, text="starting…")
            samples, choices = compare.rerank_prompt([store().get(r) for r in chosen], text, n=n,
                                                     progress=lambda f, m: bar.progress(min(max(f, 0.0), 1.0), text=m))
            st.session_state["typed_result"] = (text, samples, choices)
        if st.session_state.get("typed_result"):
            t, samples, choices = st.session_state["typed_result"]
            st.caption(f"Prompt: {t}")
            picks = choices["sample_idx"].nunique()
            st.markdown("**The rewards agree**: they all choose the same reply." if picks == 1 else
                        f"**The rewards disagree**: {picks} different replies chosen by {len(choices)} rewards.")
            show_choices(choices, fam, limit=1)
            with st.expander("All samples with every reward's score"):
                st.dataframe(samples.drop(columns=["prompt_idx", "user_text", "category", "mention"], errors="ignore"),
                             hide_index=True, width="stretch")
            ft = [r for r in chosen if compare.finetuned_policy_dir(store().get(r)) is not None]
            for r in ft:
                st.markdown(f"**{fam.get(r, r)} fine-tuned policy** (`{r}`)")
                st.dataframe(compare.finetuned_samples(store().get(r), [t], n=2)[["text"]], hide_index=True,
                             width="stretch")
