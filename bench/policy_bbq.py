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

from _common import Benchmark  # noqa: E402

from faro_core.paths import SHARED_DATA  # noqa: E402
from faro_core.train.method_spec import is_reference  # noqa: E402

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
                 epochs: int | None, only: list[str] | None = None) -> list[Any]:
    """BT + Faro-DP/EO/CF in head mode (or the ``only`` names), each trained as a sweep does
    (:func:`faro_core.studies.sweep.train_or_resume`: a finished run is reused, an interrupted one resumes).
    A stored run of the same name on other data, or any with ``retrain``, is left alone: the model trains
    under a new id."""
    from faro_core.studies.sweep import train_or_resume
    from faro_core.train import FaroConfig

    runs = []
    for name, method, cons in MODELS:
        if only is not None and name not in only:
            continue
        rid = f"policy-{name}-skew{skew:g}-eps{epsilon:g}-seed{seed}"
        if store.has(rid) and (retrain or store.get(rid).config.get("data") != data):
            rid = f"{rid}-{int(time.time())}"
        cfg = FaroConfig(name=name, data=data, skew=skew, constraints=cons, method=method,
                         epsilon=epsilon if cons else math.inf, mode="head", seed=seed, epochs=epochs)
        t0 = time.time()
        run, was_done = train_or_resume(cfg, store, run_id=rid)
        say(f"reusing run {rid}" if was_done else f"trained {rid} ({method} {cons or ''}) in {time.time() - t0:.0f} s")
        runs.append(run)
    return runs


def fmt(x: Any, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{nd}f}"


def paired_bootstrap(log_ref: np.ndarray, z: dict[str, np.ndarray], items: Any, betas: list[float],
                     a: str, b: str, target: float, n_boot: int = 200, seed: int = 0) -> dict[str, list[float]]:
    """95% paired bootstrap interval (over items) of policy(a) − policy(b) for s_AMB / s_DIS / accuracy at
    KL = ``target`` (each resample re-sweeps β and re-interpolates at the target KL)."""
    from faro_core.policy.gibbs import bbq_scores, gibbs_log_policy, interpolate_at_kl, kl_divergence

    rng = np.random.default_rng(seed)
    pol = {m: [gibbs_log_policy(log_ref, z[m], beta) for beta in betas] for m in (a, b)}
    kls = {m: [kl_divergence(lp, log_ref) for lp in pol[m]] for m in (a, b)}
    diffs: dict[str, list[float]] = {"s_amb": [], "s_dis": [], "accuracy": []}
    for _ in range(n_boot):
        idx = rng.integers(0, len(items), len(items))
        sub = items.iloc[idx].reset_index(drop=True)
        vals = {}
        for m in (a, b):
            sc = [bbq_scores(np.exp(lp[idx]), sub) for lp in pol[m]]
            kl = [float(k[idx].mean()) for k in kls[m]]
            vals[m] = {key: interpolate_at_kl(kl, [x[key] for x in sc], target) for key in diffs}
        for key in diffs:
            diffs[key].append(vals[a][key] - vals[b][key])
    return {key: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))] for key, v in diffs.items()}


def generation_section(gen: dict[str, Any], n: int) -> list[str]:
    """Markdown for the free-generation rerank: which group the chosen reply names, per reward and category."""
    def cells(sh: dict[str, float]) -> str:
        return " | ".join(fmt(sh[k], 2) for k in ("target", "other", "both", "neither", "biased"))

    md = ["## Free generation: best-of-n and softmax reweighting", "",
          f"{gen['n_prompts']} open BBQ test prompts (context + question, no options; ambiguous first) × {n} "
          f"samples from the reference LM (T = {gen['config']['temperature']}, top-p = {gen['config']['top_p']}, "
          f"≤ {gen['config']['max_new_tokens']} tokens), {gen['seconds']:.0f} s. Share of chosen replies naming "
          "the stereotyped group only (target), the other group only, both, neither; biased = names only the "
          "group the BBQ bias direction points at. Softmax: a sample ∝ exp(z/β) (expected shares).", "",
          "| reward | choice | target | other | both | neither | biased |", "|---|---|---|---|---|---|---|",
          f"| – | samples (π_ref) | {cells(gen['samples'])} |"]
    for name, s in gen["models"].items():
        md.append(f"| {name} | best-of-{n} | {cells(s['best_of_n'])} |")
        for b, sh in s["softmax"].items():
            md.append(f"| {name} | softmax β={b} | {cells(sh)} |")
    md += ["", "Per category (best-of-n; samples in brackets = share among all samples):", "",
           "| reward | category | prompts | target | other | both | neither | biased |",
           "|---|---|---|---|---|---|---|---|"]
    for name, s in gen["models"].items():
        for g, gs in (s.get("by_group") or {}).items():
            md.append(f"| {name} | {g} | {gs['n_prompts']} | " + " | ".join(
                f"{fmt(gs['best_of_n'][k], 2)} ({fmt(gs['samples'][k], 2)})"
                for k in ("target", "other", "both", "neither", "biased")) + " |")
    ex = gen.get("examples") or []
    if ex:
        md += ["", "Example samples:", ""]
        for e in ex[: 2 * n]:
            md.append(f"- [{e['mention']}] {str(e['text'])[:200]!r}")
    md.append("")
    return md


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
    ap.add_argument("--generate", type=int, default=20, metavar="P",
                    help="also sample --n replies for P open BBQ prompts and rerank them (0 = skip)")
    ap.add_argument("--n", type=int, default=4, help="samples per prompt (--generate)")
    ap.add_argument("--bootstrap", type=int, default=200, help="paired bootstrap resamples (0 = skip)")
    ap.add_argument("--out", default=str(RESULTS / "policy_bbq.md"))
    args = ap.parse_args(argv)

    import torch

    from faro_core.policy.evaluate import evaluate_policies, load_items, select_items, write_policy
    from faro_core.policy.gibbs import bbq_scores, interpolate_at_kl
    from faro_core.policy.lm import lm_name, load_lm, torch_threads
    from faro_core.policy.plots import transfer_figure
    from faro_core.policy.reference import reference_logprobs
    from faro_core.store.runs import RunStore

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
    load_after = os.getloadavg()[0]
    rec_path = RESULTS / "pi_ref_throughput.json"
    if t_ref > 60:  # a real (uncached) measurement: record it
        rec = {"items": len(items), "seconds": round(t_ref, 1), "items_per_s": round(len(items) / t_ref, 3),
               "threads": threads, "load_avg": [round(load_before, 1), round(load_after, 1)],
               "dtype": "float32", "when": time.strftime("%Y-%m-%d %H:%M")}
        rec_path.write_text(json.dumps(rec, indent=1))
    rec = json.loads(rec_path.read_text()) if rec_path.exists() else None
    cached = t_ref <= 60
    if cached and rec:
        t_ref, ref_rate = float(rec["seconds"]), float(rec["items_per_s"])
    else:
        ref_rate = len(items) / t_ref if t_ref > 0 else float("inf")
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
           f"| π_ref: {rec['items'] if cached and rec else len(items)} items × 3 answers (float32"
           f"{', measured ' + rec['when'] + ' and read from the cache this time' if cached and rec else ''}) | "
           f"{t_ref:.0f} s = **{ref_rate:.2f} items/s** ({3 * ref_rate:.1f} answers/s) |",
           f"| torch threads / CPU cores / load avg during π_ref | "
           f"{(rec or {}).get('threads', threads) if cached else threads} / {os.cpu_count()} / "
           f"{(rec or {}).get('load_avg', '?') if cached else [round(load_before, 1), round(load_after, 1)]} |",
           f"| total | {time.time() - t_all:.0f} s |", "",
           f"Full BBQ (10,380 items) at this rate: ~{10380 / max(ref_rate, 1e-9) / 60:.0f} min, hence the test "
           "split. The machine was shared with other jobs (load avg above, 2 cores); `--lm-dtype bfloat16` "
           "(AMX) measured ~3.8× faster per forward at ~0.15 nats mean error per answer.", ""]
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
    bt = next((r.run_id for r in runs if is_reference(r.config)), None)
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
    if bt and args.bootstrap > 0:
        from faro_core.policy.evaluate import run_rewards
        from faro_core.policy.gibbs import standardize

        say(f"paired bootstrap ({args.bootstrap} resamples)")
        z = {r.run_id: standardize(run_rewards(r, items)) for r in runs}
        md += ["", f"Paired bootstrap over items ({args.bootstrap} resamples), 95% interval of Faro − BT at equal KL "
               "(negative s = less stereotyped than BT):", "",
               "| Faro run | KL | Δ s_AMB | Δ s_DIS | Δ accuracy |", "|---|---|---|---|---|"]
        boot = {}
        for run in runs:
            if run.run_id == bt:
                continue
            for target in (0.1, 0.3):
                ci = paired_bootstrap(log_ref, z, items, list(args.beta), run.run_id, bt, target,
                                      n_boot=args.bootstrap, seed=args.seed)
                boot[f"{run.run_id}@{target:g}"] = ci
                md.append(f"| {run.run_id} | {target:g} | " + " | ".join(
                    f"[{ci[k][0]:+.3f}, {ci[k][1]:+.3f}]" for k in ("s_amb", "s_dis", "accuracy")) + " |")
        result["bootstrap"] = boot
    md += ["", "See `policy_bbq_transfer.html` (left: s_AMB vs KL per reward; right: per-category policy "
           "s_AMB at β≈1 vs the reward's bias rate).", ""]

    if args.generate > 0:
        from faro_core.policy.generate import GenerationConfig, rerank_runs

        say(f"generation: {args.n} samples × {args.generate} prompts")
        gen = rerank_runs(runs, items, n_prompts=args.generate, config=GenerationConfig(n=args.n, seed=args.seed),
                          lm=args.lm, betas=[1.0, 0.3], progress=say)
        result["generation"] = gen
        write_policy(runs, result)
        md += generation_section(gen, args.n)

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


BENCH = Benchmark("policy_bbq", "study", "fairness transfer from the reward to the KL-regularized policy",
                  run=main, quick=("--limit", "40", "--generate", "0"), json="", md="--out", runs_dir=True,
                  tables=("policy_bbq.md", "policy_bbq_role.md"))

if __name__ == "__main__":
    raise SystemExit(BENCH.run())
