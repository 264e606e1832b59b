"""Data shaping for the dashboard and the report: run tables, Pareto points, per-group views.

Everything here reads the run store's files (``config.json``, ``metrics.json``, ``scores.parquet``,
``history.jsonl``, ``constraints.json``, ``certificate.json``, ``policy.json``,
``policy_generations.parquet``) and returns plain pandas frames / dicts; the figures are drawn by
:mod:`faro_core.plots_groups`. No Streamlit here, so the CLI report and tests share it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from faro_core.errors import RunError
from faro_core.runs import Run, RunStore

KINDS = ("dp", "eo", "cf")
KIND_LABEL = {"dp": "demographic parity (DP)", "eo": "equalized odds (EO)", "cf": "counterfactual (CF)"}


class MissingFile(RunError):
    """A run lacks a file a view needs; the message says which ``faro`` command makes it."""


def need(run: Run, name: str, command: str) -> Any:
    """Path of ``name`` in ``run`` or :class:`MissingFile` naming the command that writes it."""
    p = run.file(name)
    if not p.exists():
        raise MissingFile(f"{name} of run {run.run_id} is not computed yet — run `{command}`")
    return p


def family(cfg: dict[str, Any]) -> str:
    """Display family of a run: ``BT``, ``Faro-DP``, ``Faro-DP+CF``, or the baseline's name."""
    # faro_core.sweep.method_label's rule, without importing the sweep (and torch) on the dashboard's first screen
    method = cfg.get("method") or "faro"
    if method == "expgrad" and cfg.get("expgrad_base") == "head":
        method = "expgrad_head"
    cons = [c for c in (cfg.get("constraints") or []) if c]
    eps = cfg.get("epsilon")
    unconstrained = not cons or eps is None or (isinstance(eps, float) and not math.isfinite(eps))
    if method == "bt" or (method == "faro" and unconstrained):
        return "BT"
    if method == "faro":
        return "Faro-" + "+".join(c.upper() for c in cons)
    return {"reweight": "Reweighting", "posthoc": "Post-hoc shift", "fixed_lambda": "Fixed λ",
            "expgrad": "ExpGrad", "expgrad_head": "ExpGrad (MLP head)"}.get(method, method)


def certificate_summary(run: Run) -> dict[str, Any] | None:
    """``{"certified": bool|None, "epsilon": ..., "bounds": {...}}`` from ``certificate.json``, or None."""
    cert = run.read("certificate.json")
    if not isinstance(cert, dict):
        return None
    certified = cert.get("certified")
    if certified is None and isinstance(cert.get("constraints"), list):
        ok = [c.get("certified") for c in cert["constraints"] if isinstance(c, dict)]
        certified = all(ok) if ok and None not in ok else None
    return {"certified": certified, "epsilon": cert.get("epsilon"), "delta": cert.get("delta"), "raw": cert}


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


def run_table(store: RunStore) -> pd.DataFrame:
    """One row per run: id, status, family, ε, seed, test accuracy / gold accuracy / violations, files."""
    rows = []
    for run in store.list():
        cfg = run.read("config.json", {}) or {}
        m = run.metrics() or {}
        test = m.get("test") or {}
        viol = test.get("violation") or {}
        cert = certificate_summary(run)
        eps = cfg.get("epsilon")
        if family(cfg) == "BT":
            eps = None  # unconstrained: ε = ∞ whatever the config's default says
        rows.append({
            "run_id": run.run_id, "status": run.status, "family": family(cfg),
            "method": cfg.get("method", "faro"), "constraints": ",".join(cfg.get("constraints") or []) or "none",
            "epsilon": float("inf") if eps is None else float(eps), "seed": cfg.get("seed", 0),
            "sweep": cfg.get("sweep"), "mode": cfg.get("mode"), "epochs": cfg.get("epochs"),
            "accuracy": test.get("accuracy", m.get("accuracy")),
            "gold_accuracy": test.get("gold_accuracy", m.get("gold_accuracy")),
            **{f"viol_{k}": viol.get(k) for k in KINDS},
            **{f"val_viol_{k}": (m.get("violation") or {}).get(k) for k in KINDS},
            **{f"train_viol_{k}": ((m.get("train") or {}).get("violation") or {}).get(k) for k in KINDS},
            "val_accuracy": m.get("accuracy"), "train_accuracy": (m.get("train") or {}).get("accuracy"),
            "cf_flip_rate": test.get("cf_flip_rate"),
            "feasible": m.get("feasible"), "selected_by": m.get("selected_by"),
            "certified": None if cert is None else cert["certified"],
            "has_policy": run.file("policy.json").exists(),
            "has_generations": run.file("policy_generations.parquet").exists(),
            "error": run.raw_status().get("error"),
        })
    cols = ["run_id", "status", "family", "method", "constraints", "epsilon", "seed", "sweep", "mode", "epochs",
            "accuracy", "gold_accuracy", *[f"viol_{k}" for k in KINDS], *[f"val_viol_{k}" for k in KINDS],
            *[f"train_viol_{k}" for k in KINDS], "val_accuracy", "train_accuracy",
            "cf_flip_rate", "feasible", "selected_by", "certified", "has_policy", "has_generations", "error"]
    return pd.DataFrame(rows, columns=cols)


def split_columns(split: str, kind: str) -> tuple[str, str]:
    """(violation column, accuracy column) of :func:`run_table` for a split (test | val | train)."""
    if split == "test":
        return f"viol_{kind}", "accuracy"
    return f"{split}_viol_{kind}", f"{split}_accuracy"


def best_split(table: pd.DataFrame, kind: str) -> str:
    """The first of test, val, train on which some finished run has a ``kind`` violation (small held-out
    splits can leave every group cell under ``min_count``, hence unestimated)."""
    for split in ("test", "val", "train"):
        col = split_columns(split, kind)[0]
        if col in table and table.loc[table["status"] == "done", col].notna().any():
            return split
    return "test"


def pareto_points(table: pd.DataFrame, kind: str, split: str = "test") -> pd.DataFrame:
    """Accuracy vs ``kind`` violation on ``split`` per (family, ε), mean ± sd over seeds, finished runs.

    Columns: family, epsilon, violation, violation_sd, accuracy, accuracy_sd, n_seeds, run_ids,
    certified (all seeds certified; None when no certificate), on_front.
    Faro runs of other constraint kinds are left out; BT and baselines are kept as references.
    """
    vcol, accuracy = split_columns(split, kind)
    done = table[(table["status"] == "done") & table[vcol].notna() & table[accuracy].notna()]
    fam = done["family"]
    keep = ~fam.str.startswith("Faro-") | fam.str.contains(kind.upper())
    done = done[keep]
    if done.empty:
        return pd.DataFrame(columns=["family", "epsilon", "violation", "violation_sd", "accuracy", "accuracy_sd",
                                     "n_seeds", "run_ids", "certified", "on_front"])
    rows = []
    for (fam_, eps), g in done.groupby(["family", "epsilon"], dropna=False):
        certs = g["certified"].tolist()
        rows.append({"family": fam_, "epsilon": eps,
                     "violation": float(g[vcol].mean()),
                     "violation_sd": float(g[vcol].std(ddof=1)) if len(g) > 1 else 0.0,
                     "accuracy": float(g[accuracy].mean()),
                     "accuracy_sd": float(g[accuracy].std(ddof=1)) if len(g) > 1 else 0.0,
                     "n_seeds": len(g), "run_ids": list(g["run_id"]),
                     "certified": None if any(c is None or c != c for c in certs) else bool(all(certs))})
    pts = pd.DataFrame(rows).sort_values(["family", "epsilon"]).reset_index(drop=True)
    pts["on_front"] = pareto_mask(pts["violation"].to_numpy(), pts["accuracy"].to_numpy())
    return pts


def pareto_mask(violation: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """True for points no other point beats on both axes (lower violation, higher accuracy)."""
    v, a = np.asarray(violation, float), np.asarray(accuracy, float)
    mask = np.ones(len(v), dtype=bool)
    for i in range(len(v)):
        dom = (v <= v[i]) & (a >= a[i]) & ((v < v[i]) | (a > a[i]))
        mask[i] = not dom.any()
    return mask


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


def headline(table: pd.DataFrame) -> dict[str, Any]:
    """Plain-language numbers: BT vs the least-violating Faro run per kind (on :func:`best_split`)."""
    out: dict[str, Any] = {}
    for kind in KINDS:
        split = best_split(table, kind)
        vcol, acol = split_columns(split, kind)
        ok = (table["status"] == "done") & table[vcol].notna() & table[acol].notna()
        bt = table[(table["family"] == "BT") & ok]
        faro = table[table["family"].str.contains(f"Faro-.*{kind.upper()}", regex=True) & ok]
        if bt.empty or faro.empty:
            continue
        b = bt.iloc[0]
        best = faro.sort_values([vcol, acol], ascending=[True, False]).iloc[0]
        out[kind] = {"split": split, "bt_run": b["run_id"], "bt_violation": float(b[vcol]),
                     "bt_accuracy": float(b[acol]), "faro_run": best["run_id"],
                     "faro_epsilon": float(best["epsilon"]), "faro_violation": float(best[vcol]),
                     "faro_accuracy": float(best[acol])}
    return out


# ----------------------------------------------------------------------------------------------
# constraint types side by side
# ----------------------------------------------------------------------------------------------
def constraint_fronts(table: pd.DataFrame, split: str | None = None) -> pd.DataFrame:
    """The DP, EO and CF fronts in one long frame, for small multiples on one accuracy axis.

    One row per (kind, family, ε): :func:`pareto_points` of that kind (Faro runs of the kind, BT and the
    baselines as references) on ``split`` (default: :func:`best_split` per kind), plus the seed-mean
    violation of the *other* kinds by the same runs (``other_dp``, ``other_eo``, ``other_cf``; NaN where a
    run has none), so the cost of constraining one notion on the others is visible. Columns: kind, split and
    those of :func:`pareto_points`.
    """
    parts = []
    for kind in KINDS:
        s = split or best_split(table, kind)
        pts = pareto_points(table, kind, s)
        if pts.empty:
            continue
        pts = pts.assign(kind=kind, split=s)
        by_id = table.set_index("run_id")
        for other in KINDS:
            col = split_columns(s, other)[0]
            pts[f"other_{other}"] = [float(pd.to_numeric(by_id.loc[ids, col], errors="coerce").mean())
                                     for ids in pts["run_ids"]]
        parts.append(pts)
    if not parts:
        return pd.DataFrame(columns=["kind", "split", "family", "epsilon", "violation", "violation_sd", "accuracy",
                                     "accuracy_sd", "n_seeds", "run_ids", "certified", "on_front",
                                     *[f"other_{k}" for k in KINDS]])
    return pd.concat(parts, ignore_index=True)


def cross_violations(table: pd.DataFrame) -> pd.DataFrame:
    """Every finished run's held-out violation of each kind (DP, EO, CF), whatever it was trained for:
    columns run_id, family, epsilon, seed, accuracy, viol_dp, viol_eo, viol_cf (test split)."""
    done = table[table["status"] == "done"]
    return done[["run_id", "family", "epsilon", "seed", "accuracy", *[f"viol_{k}" for k in KINDS]]].reset_index(
        drop=True)


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
    from faro_core.data.labels import group_caption

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
    from faro_core.fairness.role import role_items

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
