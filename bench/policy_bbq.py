"""Does fairness transfer from the reward to the KL-regularized policy? BBQ, SmolLM2 as π_ref.

For the reference LM, plain BT and Faro-DP / Faro-EO / Faro-CF rewards (head mode, trained here through
``faro_core.train`` unless ``--runs`` are given), builds the exact Gibbs policy π_β ∝ π_ref · exp(r/β) over
each BBQ test item's three answers and reports, at each β: accuracy, s_AMB, s_DIS (expected values under π;
argmax variant too), KL(π‖π_ref) and E_π[r]; then the same metrics interpolated at equal KL, next to the
reward-level bias, and the π_ref throughput.

    python bench/policy_bbq.py [--runs RUN ...] [--runs-dir runs/policy_bbq] [--data ../shared/data/bbq]
                               [--skew 0.3] [--epsilon 0.05] [--beta 0.1 0.3 1 3 10 inf] [--limit N]

Writes bench/results/policy_bbq.md, bench/results/policy_bbq.json, bench/results/policy_bbq_transfer.html
and ``policy.json`` in each run; prints a JSON summary as its last line. Rerunning reuses finished runs with
the same name and data (``--retrain`` to force) and the π_ref cache.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from faro_core.paths import SHARED_DATA  # noqa: E402

RESULTS = ROOT / "bench" / "results"
MODELS = (  # name, method, constraints
    ("bt", "bt", []),
    ("faro-dp", "faro", ["dp"]),
    ("faro-eo", "faro", ["eo"]),
    ("faro-cf", "faro", ["cf"]),
)
KL_TARGETS = (0.01, 0.03, 0.1, 0.3)


def say(msg: str) -> None:
    print(f"[policy_bbq {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def train_models(store: Any, data: str, skew: float, epsilon: float, seed: int, retrain: bool,
                 epochs: int | None) -> list[Any]:
    """BT + Faro-DP/EO/CF in head mode; a finished run with the same name and data is reused."""
    from faro_core.train import FaroConfig, train

    runs = []
    for name, method, cons in MODELS:
        rid = f"policy-{name}-skew{skew:g}-eps{epsilon:g}-seed{seed}"
        if store.has(rid) and not retrain:
            run = store.get(rid)
            cfg = run.config
            if run.status == "done" and cfg.get("data") == data and float(cfg.get("skew", -1)) == skew:
                say(f"reusing run {rid}")
                runs.append(run)
                continue
            rid = f"{rid}-{int(time.time())}"
        cfg = FaroConfig(name=name, data=data, skew=skew, constraints=cons, method=method,
                         epsilon=epsilon if cons else math.inf, mode="head", seed=seed, epochs=epochs)
        t0 = time.time()
        say(f"training {rid} ({method} {cons or ''})")
        runs.append(train(cfg, store, run_id=rid, progress=False))
        say(f"trained {rid} in {time.time() - t0:.0f} s")
    return runs


def fmt(x: Any, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{nd}f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="*", default=None, help="existing run ids (default: train BT + Faro-DP/EO/CF)")
    ap.add_argument("--runs-dir", default=str(ROOT / "runs" / "policy_bbq"))
    ap.add_argument("--data", default=str(SHARED_DATA / "bbq"))
    ap.add_argument("--skew", type=float, default=0.3)
    ap.add_argument("--epsilon", type=float, default=0.05)
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default: the trainer's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--retrain", action="store_true")
    ap.add_argument("--beta", type=float, nargs="+", default=[0.1, 0.3, 1.0, 3.0, 10.0, math.inf])
    ap.add_argument("--lm", default=None)
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=None, help="at most N test items (quick look)")
    ap.add_argument("--out", default=str(RESULTS / "policy_bbq.md"))
    args = ap.parse_args(argv)

    import torch

    from faro_core.policy.evaluate import evaluate_policies, load_items, select_items, write_policy
    from faro_core.policy.gibbs import bbq_scores, interpolate_at_kl
    from faro_core.policy.lm import lm_name, load_lm, torch_threads
    from faro_core.policy.plots import transfer_figure
    from faro_core.policy.reference import reference_logprobs
    from faro_core.runs import RunStore

    torch.set_num_threads(torch_threads())  # the encoder too: on a busy CPU extra threads only spin
    t_all = time.time()
    store = RunStore(args.runs_dir)
    t0 = time.time()
    if args.runs:
        runs = [store.get(r) for r in args.runs]
    else:
        runs = train_models(store, args.data, args.skew, args.epsilon, args.seed, args.retrain, args.epochs)
    t_train = time.time() - t0

    items = select_items(load_items(args.data), runs, split=args.split, seed=args.seed, limit=args.limit)
    say(f"{len(items)} {args.split} items")
    load_lm(args.lm)
    threads = torch_threads()
    load_before = os.getloadavg()[0]
    t0 = time.time()
    last = [t0]

    def prog(done: int, total: int) -> None:
        if time.time() - last[0] > 30 or done == total:
            last[0] = time.time()
            say(f"π_ref {done}/{total} items ({done / max(time.time() - t0, 1e-9):.2f} items/s)")

    log_ref = reference_logprobs(items, lm=args.lm, normalize="sum", progress=prog)
    t_ref = time.time() - t0
    ref_rate = len(items) / t_ref if t_ref > 0 else float("inf")
    load_after = os.getloadavg()[0]
    log_ref_mean = reference_logprobs(items, lm=args.lm, normalize="mean")  # from the cache
    ref_mean = bbq_scores(np.exp(log_ref_mean), items)

    result = evaluate_policies(runs, items, betas=args.beta, lm=args.lm, log_ref=log_ref, progress=say)
    result.update({"data": args.data, "split": args.split, "skew": args.skew, "seconds_reference": t_ref})
    write_policy(runs, result)
    models = result["models"]

    # ---- tables
    md = ["# Does fairness transfer to the policy? BBQ, Gibbs policy over the three answers", ""]
    md += [f"`python bench/policy_bbq.py{' --limit ' + str(args.limit) if args.limit else ''}` — "
           f"{time.strftime('%Y-%m-%d %H:%M')}. Data: `{args.data}`, skew ρ = {args.skew}, reward models in head mode "
           f"(BT and Faro-DP/EO/CF at ε = {args.epsilon}, seed {args.seed}), evaluated on the runs' held-out "
           f"**{args.split}** split: {len(items)} items ({result['n_amb']} ambiguous). π_ref = "
           f"{lm_name(args.lm)} (summed answer log-likelihood under the chat template, renormalized over the "
           "3 answers). β in sd units of each reward's within-item spread; β = ∞ is π_ref. Counts are expected "
           "values under π (argmax = greedy variant). KL in nats per item.", ""]
    md += ["## Timing", "",
           "| step | value |", "|---|---|",
           f"| reward-model training (4 runs{', reused' if t_train < 5 else ''}) | {t_train:.0f} s |",
           f"| π_ref: {len(items)} items × 3 answers | {t_ref:.0f} s = **{ref_rate:.2f} items/s** "
           f"({3 * ref_rate:.1f} answers/s; 0 s if all cached) |",
           f"| torch threads / CPU cores / load avg before → after | {threads} / {os.cpu_count()} / "
           f"{load_before:.1f} → {load_after:.1f} |",
           f"| total | {time.time() - t_all:.0f} s |", "",
           f"Full BBQ (10,380 items) at this rate: ~{10380 / max(ref_rate, 1e-9) / 60:.0f} min, hence the test "
           "split.", ""]
    md += ["## Per β", "",
           "| model | β | accuracy | s_AMB | s_DIS | KL | E_π[r] | argmax acc | argmax s_AMB | argmax s_DIS |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in models.items():
        for i, b in enumerate(m["betas"]):
            if name == "reference" and i != len(m["betas"]) - 1:
                continue
            am = m["argmax"]
            md.append(f"| {name} | {'∞' if not math.isfinite(b) else f'{b:g}'} | {fmt(m['accuracy'][i])} | "
                      f"{fmt(m['s_amb'][i])} | {fmt(m['s_dis'][i])} | {fmt(m['kl'][i], 4)} | "
                      f"{fmt(m['expected_reward'][i])} | {fmt(am['accuracy'][i])} | {fmt(am['s_amb'][i])} | "
                      f"{fmt(am['s_dis'][i])} |")
    md += ["", f"Reference LM with per-token-mean scores instead (`--normalize mean`): accuracy "
           f"{fmt(ref_mean['accuracy'])}, s_AMB {fmt(ref_mean['s_amb'])}, s_DIS {fmt(ref_mean['s_dis'])} "
           f"(summed: accuracy {fmt(models['reference']['accuracy'][-1])}, s_AMB "
           f"{fmt(models['reference']['s_amb'][-1])}, s_DIS {fmt(models['reference']['s_dis'][-1])}).", ""]

    # ---- reward level
    md += ["## Reward level (same test items)", "",
           "| model | reward bias rate amb / dis (0.5 = unbiased) | bias gap amb (sd) | test gold acc | "
           "test violation DP / EO / CF |", "|---|---|---|---|---|"]
    for run in runs:
        m = models[run.run_id]
        rb = m["reward_bias"]
        met = (run.metrics() or {}).get("test", {}) or {}
        viol = met.get("violation", {}) or {}
        md.append(f"| {run.run_id} | {fmt(rb['bias_rate_amb'])} / {fmt(rb['bias_rate_dis'])} | "
                  f"{fmt(rb['bias_gap_amb'])} | {fmt(met.get('gold_accuracy'))} | "
                  f"{fmt(viol.get('dp'))} / {fmt(viol.get('eo'))} / {fmt(viol.get('cf'))} |")

    # ---- equal KL
    md += ["", "## At equal KL (linear interpolation along each β sweep)", "",
           "| KL (nats) | model | accuracy | s_AMB | s_DIS |", "|---|---|---|---|---|"]
    at_kl: dict[str, dict[str, dict[str, float]]] = {}
    for target in KL_TARGETS:
        for run in runs:
            m = models[run.run_id]
            row = {k: interpolate_at_kl(m["kl"], m[k], target) for k in ("accuracy", "s_amb", "s_dis")}
            at_kl.setdefault(str(target), {})[run.run_id] = row
            md.append(f"| {target:g} | {run.run_id} | {fmt(row['accuracy'])} | {fmt(row['s_amb'])} | "
                      f"{fmt(row['s_dis'])} |")
    md += ["", "(– : that reward's policy never reaches this KL on the β grid.)", ""]

    # ---- transfer verdict
    bt = next((r.run_id for r in runs if (r.config.get("method") == "bt" or not r.config.get("constraints"))), None)
    verdict = []
    if bt:
        for run in runs:
            if run.run_id == bt:
                continue
            for target in KL_TARGETS:
                a, b = at_kl[str(target)][run.run_id], at_kl[str(target)][bt]
                if all(math.isfinite(x) for x in (a["s_amb"], b["s_amb"])):
                    verdict.append({"run": run.run_id, "kl": target, "s_amb": a["s_amb"], "s_amb_bt": b["s_amb"],
                                    "s_dis": a["s_dis"], "s_dis_bt": b["s_dis"],
                                    "bias_rate_amb": models[run.run_id]["reward_bias"]["bias_rate_amb"],
                                    "bias_rate_amb_bt": models[bt]["reward_bias"]["bias_rate_amb"]})
    md += ["## Transfer: a fairer reward → a less biased policy at equal KL?", ""]
    if verdict:
        md += ["| Faro run | KL | reward bias rate (amb): Faro vs BT | policy |s_AMB|: Faro vs BT | "
               "policy |s_DIS|: Faro vs BT | less biased policy? |", "|---|---|---|---|---|---|"]
        for v in verdict:
            less = abs(v["s_amb"]) < abs(v["s_amb_bt"])
            md.append(f"| {v['run']} | {v['kl']:g} | {fmt(v['bias_rate_amb'])} vs {fmt(v['bias_rate_amb_bt'])} | "
                      f"{fmt(abs(v['s_amb']))} vs {fmt(abs(v['s_amb_bt']))} | {fmt(abs(v['s_dis']))} vs "
                      f"{fmt(abs(v['s_dis_bt']))} | {'yes' if less else 'no'} |")
    else:
        md.append("No KL level is reached by both BT and a Faro policy on this β grid; widen it (smaller β).")
    md += ["", "See `policy_bbq_transfer.html` (left: s_AMB vs KL per reward; right: per-category policy "
           "s_AMB at β≈1 vs the reward's bias rate).", ""]

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(md) + "\n")
    from faro_core.io import to_json

    out_json = Path(args.out).with_suffix(".json")
    out_json.write_text(to_json({**result, "at_kl": at_kl, "verdict": verdict}, indent=1))
    try:
        transfer_figure(result).write_html(str(Path(args.out).with_name("policy_bbq_transfer.html")),
                                           include_plotlyjs="cdn")
    except Exception as exc:  # the figure is a convenience; the tables are the result
        say(f"figure not written: {exc}")
    print("\n".join(md))
    print(json.dumps({"n_items": len(items), "pi_ref_items_per_s": round(ref_rate, 3),
                      "seconds_reference": round(t_ref, 1), "seconds_train": round(t_train, 1),
                      "runs": [r.run_id for r in runs], "verdict": verdict}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
