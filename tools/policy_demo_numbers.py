"""The Policy page's numbers on a demo store, as docs/DASHBOARD.md states them.

    python tools/policy_demo_numbers.py RUNS_DIR [--json]

RUNS_DIR: a store built by ``faro demo`` (e.g. ``faro demo --runs-dir /tmp/policy_demo``). Reads only what
the store holds (``story.json``: the Overview's BT and Faro runs; each run's ``policy.json`` and
``policy_generations.parquet``); computes nothing the Policy page does not. Prints:

- the prompts × replies scored, whether they are the shipped replies, how many replies the filter hides;
- for every run against BT, the prompts where their best-of-n choices differ (the Overview's Faro run marked);
- for BT and the Overview's Faro run, the choices counted by role with cluster-robust 95 % intervals over the
  prompts' templates, and the paired difference Faro − BT;
- the reward-induced bias s_AMB(π_β) − s_AMB(π_ref) of every run at the chosen β and at matched KL, with the
  share of BT's that each removes, and the Policy page's sentence for the Overview's Faro run.

Exit 1 with a one-line message when the store lacks the Overview's runs or their policy results.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faro_core.errors import FaroError  # noqa: E402


def _iv(d: dict[str, float], pct: bool = False, sign: bool = False) -> str:
    if not d or not math.isfinite(d.get("value", float("nan"))):
        return "n/a"
    k, f = (100.0, ".0f") if pct else (1.0, ".3f")
    s = "+" if sign else ""
    return (f"{k * d['value']:{s}{f}}{' %' if pct else ''} [{k * d['lo']:{s}{f}}, {k * d['hi']:{s}{f}}]")


def label(run: Any) -> str:
    """``BT`` or ``Faro-DP ε = 0.05`` (the family and ε of the run's config)."""
    from faro_core.results.table import family_label

    cfg = run.read("config.json", {}) or {}
    fam = family_label(cfg)
    eps = cfg.get("epsilon")
    return fam if fam == "BT" or not isinstance(eps, int | float) else f"{fam} ε = {eps:g}"


def numbers(runs_dir: str) -> dict[str, Any]:
    """Everything the script prints, as JSON."""
    import pandas as pd

    from faro_core.policy.choices import differing_prompts, role_counts
    from faro_core.policy.compare import hidden_count, prompt_clusters, stored_choices
    from faro_core.store.runs import RunStore

    store = RunStore(runs_dir)
    story_path = Path(store.root) / "story.json"
    if not story_path.exists():
        raise FaroError(f"{story_path} is missing: build the store with `faro demo --runs-dir {runs_dir}`")
    story = json.loads(story_path.read_text())
    bt, faro = story["bt_run"], story["faro_run"]
    runs = [r for r in store.list() if r.file("policy_generations.parquet").exists()]
    ids = [r.run_id for r in runs]
    if bt not in ids or faro not in ids:
        raise FaroError(f"{bt} or {faro} has no policy generations in {runs_dir} (run `faro demo` with the policy stage)")
    runs = [store.get(bt)] + [r for r in runs if r.run_id != bt]
    labels = {r.run_id: label(r) for r in runs}
    choices = stored_choices(runs)
    gen0 = pd.read_parquet(store.get(bt).file("policy_generations.parquet"))
    pol = store.get(faro).read("policy.json") or {}
    gen = pol.get("generation") or {}
    n_prompts = int(choices["prompt_idx"].nunique())
    pair = choices[choices["model"].isin([bt, faro])].copy()
    rc = role_counts(pair, prompt_clusters(choices), baseline=bt)
    ri = pol.get("reward_induced") or {}
    out: dict[str, Any] = {
        "runs_dir": str(store.root), "bt_run": bt, "faro_run": faro, "labels": labels,
        "prompts": n_prompts, "replies_per_prompt": int(gen0.groupby("prompt_idx").size().max()),
        "replies": int(len(gen0)), "shipped": bool(gen.get("shipped")), "hidden_by_filter": hidden_count(gen0),
        "differing_vs_bt": {r: differing_prompts(choices, bt, r) for r in ids if r != bt},
        "role_counts": rc, "reward_induced": ri,
    }
    if ri.get("models") and faro in ri["models"]:
        from faro_core.policy.evaluate import reward_induced_sentence

        out["sentence"] = reward_induced_sentence(ri, faro, labels)
    return out


def print_numbers(res: dict[str, Any]) -> None:
    from faro_core.policy.mentions import CLASSES

    bt, faro, lab = res["bt_run"], res["faro_run"], res["labels"]
    print(f"store {res['runs_dir']}: {res['prompts']} prompts × {res['replies_per_prompt']} replies "
          f"({res['replies']} replies{', shipped' if res['shipped'] else ', NOT the shipped replies'}); "
          f"the filter hides {res['hidden_by_filter']} of {res['replies']}")
    print(f"Overview's runs: BT {bt}, Faro {faro} ({lab[faro]})")
    print("\nprompts whose best-of-n choice differs from BT's:")
    for r, k in res["differing_vs_bt"].items():
        print(f"  {lab.get(r, r):<20} {r:<32} {k:>3} of {res['prompts']}{'   <- Overview' if r == faro else ''}")
    rc = res["role_counts"]
    print(f"\nchoices by role (share of {rc['n_prompts']} prompts, cluster-robust 95 % over {rc['clusters']} templates):")
    print("| reward | " + " | ".join(CLASSES) + " |")
    print("| --- | " + " | ".join("---" for _ in CLASSES) + " |")
    for m in (bt, faro):
        e = rc["models"][m]
        cells = [f"{e['counts'][c]} = {s['value']:.2f} [{s['lo']:.2f}, {s['hi']:.2f}]"
                 for c in CLASSES for s in [e["shares"][c]]]
        print(f"| {lab[m]} | " + " | ".join(cells) + " |")
    d = rc["models"][faro].get("vs_baseline", {})
    print(f"| {lab[faro]} − BT (paired) | " + " | ".join(_iv(d.get(c, {}), sign=True) for c in CLASSES) + " |")
    for m in (bt, faro):
        f = rc["models"][m]["filtered"]
        print(f"  {lab[m]}: best-of-n choice is a filtered reply in {f['value'] * rc['models'][m]['n_prompts']:.0f} "
              f"of {rc['models'][m]['n_prompts']} prompts")
    ri = res["reward_induced"]
    if ri.get("models"):
        print(f"\nreward-induced bias s_AMB(π_β) − s_AMB(π_ref) ({ri['n_items']} ambiguous test items, "
              f"{ri.get('clusters', '?')} templates; π_ref's s_AMB {ri['s_amb_ref']:.3f}; β = {ri['beta']:g}; "
              f"matched KL {ri.get('kl_target', float('nan')):.4f} nats):")
        print(f"  {'reward':<20} {'run':<32} {'at β':<26} {'at matched KL (β)':<34} {'removes (β)':<20} removes (KL)")
        from faro_core.policy.evaluate import share_is_stated

        base = ri["models"].get(ri.get("baseline"), {})

        def removed(r: str, m: dict[str, Any], point: str) -> str:
            if r == ri.get("baseline"):
                return "—"
            if not share_is_stated(base.get(point)):
                return "— (BT adds ≈ 0)"
            return _iv(m.get(f"removed_{point}", {}), pct=True)

        for r, m in ri["models"].items():
            kl = f"{_iv(m['at_kl'], sign=True)} ({m['at_kl'].get('beta', float('nan')):.2f})"
            rb, rk = removed(r, m, "at_beta"), removed(r, m, "at_kl")
            print(f"  {lab.get(r, r):<20} {r:<32} {_iv(m['at_beta'], sign=True):<26} {kl:<34} {rb:<20} {rk}")
    if res.get("sentence"):
        print(f"\nPolicy page: {res['sentence']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs_dir")
    ap.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = ap.parse_args(argv)
    try:
        res = numbers(args.runs_dir)
    except FaroError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        from faro_core.io import to_json

        print(to_json(res))
    else:
        print_numbers(res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
