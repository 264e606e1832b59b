"""Per-run views for the dashboard and the report: scores, rewards by group, calibration, history, policy.

Everything here reads the run store's files (``config.json``, ``metrics.json``, ``scores.parquet``,
``history.jsonl``, ``constraints.json``, ``certificate.json``, ``policy.json``,
``policy_generations.parquet``) and returns plain pandas frames / dicts; the figures are drawn by
:mod:`faro_core.results.plots`. No Streamlit here, so the CLI report and tests share it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from faro_core.data.labels import group_caption
from faro_core.errors import RunError
from faro_core.fairness.kinds import KIND_LABEL
from faro_core.store.runs import Run


class MissingFile(RunError):
    """A run lacks a file a view needs; the message says which ``faro`` command makes it."""


def need(run: Run, name: str, command: str) -> Any:
    """Path of ``name`` in ``run`` or :class:`MissingFile` naming the command that writes it."""
    p = run.file(name)
    if not p.exists():
        raise MissingFile(f"{name} of run {run.run_id} is not computed yet — run `{command}`")
    return p


def chance_lines(run: Run) -> list[str]:
    """Plain sentences on the run's held-out DP/EO violations against their chance level (from ``eval.json``,
    written by ``faro eval``); empty when the run has not been evaluated."""
    ev = run.read("eval.json", {}) or {}
    lines = []
    for kind, c in (ev.get("chance") or {}).items():
        if c.get("chance_median") is None or c["chance_median"] != c["chance_median"]:
            continue
        verdict = ("not distinguishable from a reward that ignores the group" if c["p_value"] >= 0.05
                   else "larger than chance: a real group difference")
        lines.append(f"{KIND_LABEL.get(kind, kind)}: held-out violation {c['observed']:.3f}; a reward ignoring the "
                     f"group would show {c['chance_median']:.3f} (90% of the time up to {c['chance_p90']:.3f}) on "
                     f"this split, p = {c['p_value']:.2f}: {verdict}.")
    return lines


# ----------------------------------------------------------------------------------------------
# per-run views
# ----------------------------------------------------------------------------------------------
def load_scores(run: Run, split: str | None = "test") -> pd.DataFrame:
    """``scores.parquet`` of a run (one split, or all with ``split=None``)."""
    p = need(run, "scores.parquet", f"faro train ... --run-id {run.run_id}")
    df = pd.read_parquet(p)
    if split and split != "all":
        df = df[df["split"] == split]
    return df.reset_index(drop=True)


def response_rewards(scores: pd.DataFrame, standardize: bool = True) -> pd.DataFrame:
    """Long frame of response-level rewards: group (the group the response names), reward, role.

    A response's reward is taken *relative to its pair partner*, (r_self - r_other) / 2: Bradley-Terry
    rewards carry an arbitrary offset per prompt, so raw rewards of different prompts are not comparable;
    this is the quantity DP constrains (a response is selected when it is above 0) and what the
    KL-regularized policy sees. Responses that name no group are left out. ``standardize``: in sd units of
    this split's pair margins, so models are comparable.
    """
    d = (scores["r_chosen"].to_numpy(float) - scores["r_rejected"].to_numpy(float)) / 2.0
    sd = float(np.std(np.concatenate([d, -d])))
    d = d / (sd if standardize and sd > 0 else 1.0)
    parts = []
    for role, sign, gcol in (("chosen", 1.0, "chosen_group"), ("rejected", -1.0, "rejected_group")):
        parts.append(pd.DataFrame({"group": scores[gcol], "reward": sign * d, "role": role,
                                   "category": scores.get("category")}))
    out = pd.concat(parts, ignore_index=True)
    return out[out["group"].notna()].reset_index(drop=True)


def group_accuracy(scores: pd.DataFrame, by: str = "group") -> pd.DataFrame:
    """Pairwise accuracy per value of ``by`` (observed labels, and gold where present), with counts."""
    correct = (scores["r_chosen"] > scores["r_rejected"]).astype(float)
    gold = scores["gold"].to_numpy(float)
    gold_ok = np.where(np.isnan(gold), np.nan, np.where(gold == 1.0, correct, 1.0 - correct))
    df = pd.DataFrame({by: scores[by].fillna("(none)"), "correct": correct, "gold_correct": gold_ok})
    g = df.groupby(by)
    out = pd.DataFrame({"accuracy": g["correct"].mean(), "gold_accuracy": g["gold_correct"].mean(),
                        "n": g.size()}).reset_index()
    out["se"] = np.sqrt(out["accuracy"] * (1 - out["accuracy"]) / out["n"].clip(lower=1))
    return out


def presented_probabilities(scores: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(p, y): σ(r₁ − r₂) for each pair in its random presentation order, and y = 1 if y₁ is preferred."""
    rc, rr = scores["r_chosen"].to_numpy(float), scores["r_rejected"].to_numpy(float)
    first_is_chosen = scores["order"].to_numpy() == 0 if "order" in scores else np.ones(len(rc), bool)
    d = np.where(first_is_chosen, rc - rr, rr - rc)
    return 1.0 / (1.0 + np.exp(-d)), first_is_chosen.astype(float)


def reliability(scores: pd.DataFrame, by: str | None = None, bins: int = 8) -> pd.DataFrame:
    """Reliability-diagram table: per (group, bin) mean predicted probability, observed rate, count.

    Also returns ECE per group in column ``ece`` (same on every row of a group).
    """
    p, y = presented_probabilities(scores)
    groups = scores[by].fillna("(none)").to_numpy() if by else np.array(["all"] * len(p))
    edges = np.linspace(0, 1, bins + 1)
    b = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    rows = []
    for gname in sorted(set(groups)):
        m = groups == gname
        ece = 0.0
        grows = []
        for k in range(bins):
            mk = m & (b == k)
            n = int(mk.sum())
            if n == 0:
                continue
            conf, acc = float(p[mk].mean()), float(y[mk].mean())
            ece += n / max(int(m.sum()), 1) * abs(conf - acc)
            grows.append({"group": gname, "bin": k, "predicted": conf, "observed": acc, "n": n})
        for r in grows:
            r["ece"] = ece
        rows += grows
    return pd.DataFrame(rows, columns=["group", "bin", "predicted", "observed", "n", "ece"])


def history_frame(run: Run) -> pd.DataFrame:
    """Per-step history: step, loss, bt_loss, lambda_max, viol_<kind> (strict batch violations)."""
    rows = []
    for h in run.history():
        row = {"step": h.get("step"), "loss": h.get("loss"), "bt_loss": h.get("bt_loss"),
               "lambda_max": h.get("lambda_max")}
        for k, v in (h.get("violation") or {}).items():
            row[f"viol_{k}"] = v
        rows.append(row)
    return pd.DataFrame(rows)


def top_multipliers(run: Run, k: int = 6) -> pd.DataFrame:
    """Long frame (step, constraint, lambda) for the ``k`` constraints with the largest final multipliers."""
    hist = run.history()
    cons = run.read("constraints.json", {}) or {}
    names = cons.get("names") or []
    lam_rows = [(h.get("step"), h["lambda"]) for h in hist if isinstance(h.get("lambda"), list)]
    if not lam_rows or not names:
        return pd.DataFrame(columns=["step", "constraint", "lambda"])
    mat = np.array([r[1] for r in lam_rows], dtype=float)
    steps = [r[0] for r in lam_rows]
    order = np.argsort(-np.abs(mat).max(axis=0))[:k]
    out = [{"step": s, "constraint": names[j] if j < len(names) else f"#{j}", "lambda": mat[i, j]}
           for j in order for i, s in enumerate(steps)]
    return pd.DataFrame(out)


def group_summary(scores: pd.DataFrame) -> pd.DataFrame:
    """Per response group: count and mean standardized reward (chosen and rejected pooled)."""
    rr = response_rewards(scores)
    g = rr.groupby("group")["reward"]
    return pd.DataFrame({"n": g.size(), "mean_reward": g.mean()}).reset_index()


def bias_gap(scores: pd.DataFrame) -> float:
    """Spread of per-group mean standardized rewards (max − min): one number for 'how unequal'."""
    s = group_summary(scores)
    return float(s["mean_reward"].max() - s["mean_reward"].min()) if len(s) else float("nan")


# ----------------------------------------------------------------------------------------------
# policy
# ----------------------------------------------------------------------------------------------
def policy_frame(run: Run) -> pd.DataFrame:
    """Long frame from ``policy.json``: model (reference or run id), beta, accuracy, s_amb, s_dis, kl, E[r]."""
    pol = run.read(str(need(run, "policy.json", f"faro policy {run.run_id}").name))
    rows = []
    for name, m in (pol.get("models") or {}).items():
        for i, b in enumerate(m.get("betas") or []):
            beta = float("inf") if b is None else float(b)  # JSON stores inf as null
            rows.append({"model": "reference LM" if name == "reference" else name, "beta": beta,
                         **{k: (m.get(k) or [None] * (i + 1))[i] for k in
                            ("accuracy", "s_amb", "s_dis", "kl", "expected_reward")}})
    return pd.DataFrame(rows)


def generations_side_by_side(runs: list[Run], n_prompts: int = 5) -> pd.DataFrame:
    """Per prompt and sample: the text, what it mentions, and each run's reward and best-of-n pick.

    Columns: prompt_idx, user_text, sample, text, mention, ``reward:<run>``, ``best:<run>``,
    ``changed`` (the runs disagree on the best sample of this prompt).
    """
    base = None
    for run in runs:
        p = need(run, "policy_generations.parquet", f"faro policy {run.run_id} --generate")
        df = pd.read_parquet(p)
        df["sample"] = df.groupby("prompt_idx").cumcount()
        keep = df[["prompt_idx", "sample", "reward", "best_of_n"]].rename(
            columns={"reward": f"reward:{run.run_id}", "best_of_n": f"best:{run.run_id}"})
        if base is None:
            cols = [c for c in ("prompt_idx", "sample", "user_text", "text", "mention", "category") if c in df]
            base = df[cols].merge(keep, on=["prompt_idx", "sample"])
        else:
            base = base.merge(keep, on=["prompt_idx", "sample"], how="inner")
    if base is None:
        return pd.DataFrame()
    base = base[base["prompt_idx"] < n_prompts].reset_index(drop=True)
    best_cols = [c for c in base.columns if c.startswith("best:")]
    picks = base.groupby("prompt_idx")[best_cols].apply(
        lambda g: tuple(int(np.argmax(g[c].to_numpy())) for c in best_cols))
    base["changed"] = base["prompt_idx"].map(lambda i: len(set(picks[i])) > 1)
    return base


def selected_run(selection: Any) -> str | None:
    """The run id of the first point of a plotly selection (``st.plotly_chart(on_select=...)``'s state, a dict
    or an object with ``.selection.points``), from the point's ``customdata[0]``; None if nothing is selected
    or the point carries no run id (a front line, a marker)."""
    try:
        sel = selection.get("selection", {}) if isinstance(selection, dict) else selection.selection
        points = sel.get("points", []) if isinstance(sel, dict) else sel.points
    except (AttributeError, KeyError, TypeError):
        return None
    for p in points or []:
        cd = p.get("customdata") if isinstance(p, dict) else None
        if isinstance(cd, list | tuple) and cd and isinstance(cd[0], str):
            return cd[0]
        if isinstance(cd, str):
            return cd
    return None


def with_group_captions(frame: pd.DataFrame, labels: dict[str, str] | None = None, col: str = "group",
                        counts: dict[Any, int] | None = None) -> pd.DataFrame:
    """``frame`` with ``col``'s tags replaced by words and sizes, ``"women (n=64)"``, flagged ``small`` under
    :data:`faro_core.data.labels.SMALL_GROUP_N` (never dropped). ``counts``: the size of each tag (default:
    its rows in ``frame``; pass a table's ``n`` column for aggregated frames). The tag is kept in ``tag``."""
    if frame.empty or col not in frame:
        return frame
    n = counts if counts is not None else frame[col].value_counts().to_dict()
    out = frame.copy()
    out["tag"] = out[col]
    out[col] = [group_caption(t, n.get(t, 0), labels) for t in out[col]]
    return out


def role_rewards(scores: pd.DataFrame) -> pd.DataFrame:
    """Each held-out BBQ item's three answers by stereotype role, in sd units: columns item_id, category,
    context_condition, role ("biased" | "counter" | "unknown"), reward (the answer's reward minus the item's mean
    over its answers, divided by the split's sd of those deviations: a reward's offset per prompt is arbitrary).
    Items without both people's answers are left out (:func:`faro_core.fairness.role.role_items`)."""
    from faro_core.fairness.role_stats import role_items

    items = role_items(scores)
    if items.empty:
        return pd.DataFrame(columns=["item_id", "category", "context_condition", "role", "reward"])
    r = items[["r_biased", "r_counter", "r_unknown"]].to_numpy(dtype=float)
    dev = r - np.nanmean(r, axis=1, keepdims=True)
    sd = float(np.nanstd(dev)) or 1.0
    parts = [pd.DataFrame({"item_id": items["item_id"], "category": items["category"],
                           "context_condition": items["context_condition"], "role": role, "reward": dev[:, j] / sd})
             for j, role in enumerate(("biased", "counter", "unknown"))]
    out = pd.concat(parts, ignore_index=True)
    return out[out["reward"].notna()].reset_index(drop=True)


def role_margins(scores: pd.DataFrame) -> pd.DataFrame:
    """Within-item margin r_biased − r_counter per item (sd units of the split's within-item margins' scale as in
    :func:`role_rewards`): columns item_id, category, context_condition, margin. Positive: the reward prefers
    the stereotyped person's answer."""
    rr = role_rewards(scores)
    if rr.empty:
        return pd.DataFrame(columns=["item_id", "category", "context_condition", "margin"])
    w = rr.pivot_table(index=["item_id", "category", "context_condition"], columns="role", values="reward")
    w = w.dropna(subset=["biased", "counter"])
    return pd.DataFrame({"margin": (w["biased"] - w["counter"]).to_numpy()},
                        index=w.index).reset_index()
