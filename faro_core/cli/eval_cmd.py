"""``faro eval``, ``faro certify`` and ``faro audit``: held-out metrics, fairness certificate, outside audits.

All take a RUN id and ``--runs-dir``; an unknown or unsafe run id is a user error (exit code 2).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from faro_core.io import to_json


def _run(args: argparse.Namespace) -> Any:
    from faro_core.store.runs import RunStore

    return RunStore(args.runs_dir).get(args.run)


def _fmt(v: dict[str, Any] | None) -> str:
    if not v or v.get("value") is None or v["value"] != v["value"]:
        return "n/a"
    lo, hi = v.get("lo"), v.get("hi")
    if lo is None or hi is None or lo != lo:
        return f"{v['value']:.4f}"
    why = f"  ({v['why']})" if v.get("why") else ""
    return f"{v['value']:.4f} [{lo:.4f}, {hi:.4f}]{why}"


def role_lines(role: dict) -> str:
    """The role violations in words: raw rates, gaps and item counts (``eval.json["role"]``)."""
    def f(k: str) -> str:
        v, iv = role.get(k), (role.get("interval") or {}).get(k)
        if v is None:
            return "n/a"
        return f"{v:.4f}" + (f" [{iv[0]:.4f}, {iv[1]:.4f}]" if iv and iv[0] is not None else "")

    return "\n".join([
        f"  stereotype role, ambiguous items (n={role.get('n_dp')}): P(r_biased > r_counter) {f('p_biased_over_counter')}"
        f" (1/2 = unbiased), v_DP {f('dp')}",
        f"    against 'unknown': biased answer wins {f('rate_biased_vs_unknown')}, counter answer wins "
        f"{f('rate_counter_vs_unknown')} (n={role.get('n_dp_unknown')})",
        f"  disambiguated items: accuracy when the correct answer is the biased one {f('acc_biased')} "
        f"(n={role.get('n_biased')}), the counter one {f('acc_counter')} (n={role.get('n_counter')})",
        f"    gap {f('eo_gap')}, v_EO = |gap| / 2 {f('eo')}"])


def run_eval(args: argparse.Namespace) -> int:
    from faro_core.evaluate.metrics import evaluate_run

    run = _run(args)
    res = evaluate_run(run, data=args.data, format=args.format, split=args.split, n_boot=args.n_boot,
                       seed=args.seed, limit=args.limit)
    if args.json:
        print(to_json(res))
        return 0
    print(f"run {run.run_id}: {res['pairs']} pairs ({res['items']} items), 95% BCa bootstrap intervals by item")
    for k, v in res["metrics"].items():
        print(f"  {k:16s} {_fmt(v)}")
    role = res.get("role")
    null = "roles swapped within items" if role else "group labels permuted"
    for k, c in (res.get("chance") or {}).items():
        if c["chance_median"] == c["chance_median"]:  # not NaN
            print(f"  chance level of violation_{k}: median {c['chance_median']:.4f}, 90th pct "
                  f"{c['chance_p90']:.4f} ({null} {c['n_perm']}x; p = {c['p_value']:.3f})")
    if role:
        print(role_lines(role))
    return 0


def run_certify(args: argparse.Namespace) -> int:
    from faro_core.evaluate.certify import certify_run

    run = _run(args)
    kinds = [k for k in args.constraints.split(",") if k.strip()] if args.constraints else None
    res = certify_run(run, delta=args.delta, epsilon=args.epsilon, kinds=kinds, split=args.split,
                      cf_clip=args.cf_clip, bound=args.bound, unit=args.unit)
    if args.json:
        print(to_json(res))
        return 0
    print(f"run {run.run_id}: {'CERTIFIED' if res['certified'] else 'not certified'} at eps={res['epsilon']} "
          f"(delta={res['delta']}, {res['m']} one-sided constraints, delta'={res['delta_per_constraint']:.2e}, "
          f"{res['bound']} bounds)")
    print(f"  covers: {res.get('estimand', 'held-out items drawn like these')}")
    if res.get("why_not"):
        print(f"  no certificate: {res['why_not']}")
    if res.get("above_epsilon"):
        print(f"  certifiably ABOVE eps: a lower confidence bound is {res['max_lower']:.4f} > {res['epsilon']}")
    for r in sorted(res["bounds"], key=lambda r: r["slack"])[:10]:
        need = r.get("n_to_certify")
        print(f"  {r['name']:40s} emp {r['empirical']:+.4f}  bounds [{r['lower']:+.4f}, {r['upper']:+.4f}]  "
              f"slack {r['slack']:+.4f}  n {r['driving_n']:.0f}  "
              + (f"clusters {r['clusters']} n_eff {r['n_eff']:.0f}  " if r.get("unit") == "cluster" else "")
              + f"n to certify {need if need is not None else 'never (observed >= eps)'}")
    if res["uncovered"]:
        print(f"  ({len(res['uncovered'])} cells too small to estimate: not covered)", file=sys.stderr)
    return 0


def run_audit(args: argparse.Namespace) -> int:
    from faro_core.errors import FaroError
    from faro_core.evaluate.audits import audit_run

    run = _run(args)
    if not args.crows and not args.hh and not args.twins:
        raise FaroError("give --crows PATH, --hh PATH and/or --twins PATH")
    res = audit_run(run, crows=args.crows, hh=args.hh, hh_limit=args.hh_limit or None, seed=args.seed,
                    refresh=args.refresh, twins=args.twins)
    if args.json:
        print(to_json(res))
        return 0
    if "crows" in res:
        print(f"CrowS-Pairs stereotype preference (0.5 unbiased): {_fmt(res['crows']['stereotype_rate'])}")
        for t, v in res["crows"]["by_bias_type"].items():
            print(f"  {t:22s} {_fmt(v)} (n={v['n']})")
    if "hh" in res:
        print(f"HH-RLHF pairwise accuracy: {_fmt(res['hh']['accuracy'])}")
    if "twins" in res:
        tw = res["twins"]
        print(f"twins ({tw['n']}): mean |dz| {_fmt(tw['mean_abs_dz'])}")
        if tw.get("stereo_preference"):
            print(f"  prefers the stereotype-consistent text (0.5 unbiased): {_fmt(tw['stereo_preference'])}")
        for s, v in tw["by_subset"].items():
            pref = f", prefers stereotype {_fmt(v['stereo_preference'])}" if v.get("stereo_preference") else ""
            print(f"  {s:12s} mean |dz| {_fmt(v['mean_abs_dz'])}{pref} (n={v['mean_abs_dz']['n']})")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="run id")
    p.add_argument("--runs-dir", default=None, help="run store directory (default ./runs or $FARO_RUNS_DIR)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="held-out metrics with bootstrap intervals (writes eval.json)",
                       description="Accuracy (observed, gold), ECE, Brier (overall and per group) and DP/EO/CF "
                       "violations, with 95%% bootstrap intervals by item.")
    _common(p)
    p.add_argument("--data", default=None, help="evaluate on another source (default: the run's test split)")
    p.add_argument("--format", default=None, help="format of --data (default: detected)")
    p.add_argument("--split", default="test", choices=["test", "val", "train", "all"])
    p.add_argument("--limit", type=int, default=None, help="with --data: score a seeded subset of N pairs")
    p.add_argument("--n-boot", type=int, default=200, help="bootstrap resamples (default 200)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.set_defaults(func=run_eval)

    c = sub.add_parser("certify", help="fairness certificate on held-out data (writes certificate.json)",
                       description="Per one-sided constraint: empirical violation and a union-bounded upper "
                       "confidence bound (DP/EO: --bound, default Clopper-Pearson; CF: empirical Bernstein), "
                       "a lower bound, and the held-out size that would certify eps.")
    _common(c)
    c.add_argument("--delta", type=float, default=0.05, help="failure probability of the whole certificate")
    c.add_argument("--epsilon", type=float, default=None, help="slack to certify (default: the run's)")
    c.add_argument("--constraints", default=None, help="kinds to certify, e.g. dp,eo (default: the run's, "
                   "or dp,eo,cf for an unconstrained run)")
    c.add_argument("--split", default="test", choices=["test", "val"])
    c.add_argument("--bound", default="clopper-pearson", choices=["clopper-pearson", "bernstein", "hoeffding"],
                   help="DP/EO confidence bound (default clopper-pearson: exact binomial, the tightest valid one)")
    c.add_argument("--cf-clip", type=float, default=1.0, help="clip |dz| at B for the CF bound (default 1)")
    c.add_argument("--unit", default="cluster", choices=["cluster", "item"],
                   help="independent draws of the bound: cluster (default: the run's split unit, a template on "
                        "BBQ: covers unseen templates) or item (every held-out item: the item-level bound)")
    c.set_defaults(func=run_certify)

    a = sub.add_parser("audit", help="CrowS-Pairs stereotype rate, HH-RLHF accuracy, twin-text audit "
                       "(cached in audit.json)")
    _common(a)
    a.add_argument("--crows", default=None, metavar="PATH", help="CrowS-Pairs CSV")
    a.add_argument("--hh", default=None, metavar="PATH", help="HH-RLHF folder or file")
    a.add_argument("--twins", default=None, metavar="PATH",
                   help="twin texts: a WinoBias folder or a table (pro/anti or text_a/text_b [+ stereo])")
    a.add_argument("--hh-limit", type=int, default=500, help="HH pairs to score (seeded subset; 0 = all)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--refresh", action="store_true", help="ignore the cached audit")
    a.set_defaults(func=run_audit)
