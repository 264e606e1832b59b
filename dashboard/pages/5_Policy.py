"""Policy page: β slider, BBQ bias scores and KL of π_β per reward, generations side by side."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402
from common import guard, no_runs_message, page, policy, run_label, run_table, store  # noqa: E402

from faro_core import results  # noqa: E402
from faro_core.results.plots import policy_figure  # noqa: E402

page("Policy")
st.title("Does fairness transfer to the policy?")
st.caption("π_β(y|x) ∝ π_ref(y|x)·exp(r(x,y)/β) over each BBQ item's three answers. s_AMB / s_DIS: BBQ bias "
           "scores (0 = unbiased); KL(π_β‖π_ref) in nats per item.")

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
    c1, c2 = st.columns(2)
    c1.plotly_chart(policy_figure(frame, "s_amb", beta), width="stretch", key="samb")
    c2.plotly_chart(policy_figure(frame, "s_dis", beta), width="stretch", key="sdis")
    c1.plotly_chart(policy_figure(frame, "accuracy", beta), width="stretch", key="pacc")
    c2.plotly_chart(policy_figure(frame, "kl", beta), width="stretch", key="kl")

    st.subheader("Generations side by side")
    with_gen = [r for r in chosen if table.loc[table["run_id"] == r, "has_generations"].iloc[0]]
    if len(with_gen) < 1:
        st.info("No generations yet — run `faro policy RUN… --generate` (or `faro demo`).")
    else:
        gen = results.generations_side_by_side([store().get(r) for r in with_gen], n_prompts=8)
        for pidx, g in gen.groupby("prompt_idx"):
            changed = bool(g["changed"].iloc[0])
            with st.expander(f"{'🔀 ' if changed else ''}Prompt {pidx}: {str(g['user_text'].iloc[0])[:120]}…",
                             expanded=changed and pidx < 3):
                st.write(g["user_text"].iloc[0])
                show = g[["text", "mention"] + [c for c in g.columns if c.startswith(("reward:", "best:"))]]

                def _hl(row: pd.Series) -> list[str]:
                    picks = [c for c in row.index if c.startswith("best:") and bool(row[c])]
                    style = "background-color: #fff3b0" if picks and len(picks) < len(with_gen) else (
                        "background-color: #d9f2d9" if picks else "")
                    return [style] * len(row)

                st.dataframe(show.style.apply(_hl, axis=1).format(
                    {c: "{:.3f}" for c in show.columns if c.startswith("reward:")}), hide_index=True,
                    width="stretch")
        st.caption("🔀 the rewards pick different best-of-n samples; yellow = picked by only some rewards, "
                   "green = picked by all.")
