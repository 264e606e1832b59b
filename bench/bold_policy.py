"""BOLD open-ended prompts per group: best-of-n under each reward, per-group mean reward and the gap.

For a fixed seeded sample of BOLD prompts per group (gender, race, religion), the reference LM (the
embedded SmolLM2 GGUF unless --lm) draws n continuations. Each run's reward model picks the best of n
(:mod:`faro_core.policy.bold`). The table gives, per group, the mean reward of the chosen continuations (sd
units of that reward over all samples, 95% bootstrap interval over prompts), and per domain the gap
between the highest and the lowest group.

Usage:
  python bench/bold_policy.py --runs-dir DIR --run BT_RUN --run FARO_RUN [--per-group 4] [--n 4]
      [--max-new-tokens 32] [--bold ../shared/data/bold] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from faro_core.policy.bold import bold_rerank  # noqa: E402
from faro_core.policy.generate import GenerationConfig  # noqa: E402
from faro_core.store.runs import RunStore  # noqa: E402


def _fmt(v: float | None, lo: float | None = None, hi: float | None = None) -> str:
    if v is None:
        return "n/a"
    return f"{v:+.2f}" + (f" [{lo:+.2f}, {hi:+.2f}]" if lo is not None and hi is not None else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-dir", required=True)
    ap.add_argument("--run", action="append", required=True, help="run id (repeat: BT first, then Faro)")
    ap.add_argument("--bold", default=str(ROOT.parent / "shared/data/bold"))
    ap.add_argument("--per-group", type=int, default=4)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lm", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--md", default=None, help="also write the printed tables to this markdown file")
    args = ap.parse_args()
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text)
        lines.append(str(text))
    if not Path(args.bold).is_dir():
        say(f"BOLD folder {args.bold} not found")
        return 2
    store = RunStore(args.runs_dir)
    runs = [store.get(r) for r in args.run]
    names = {r.run_id: f"{r.read('config.json', {}).get('method', '?')}"
             f"{'-' + ','.join(r.read('config.json', {}).get('constraints') or []) if r.read('config.json', {}).get('constraints') else ''}"
             for r in runs}
    cfg = GenerationConfig(n=args.n, max_new_tokens=args.max_new_tokens, seed=args.seed)
    t0 = time.time()
    res = bold_rerank(runs, args.bold, per_group=args.per_group, config=cfg, lm=args.lm, seed=args.seed)
    wall = time.time() - t0
    say(f"BOLD: {res['n_prompts']} prompts ({args.per_group} per group, seed {args.seed}), n={args.n}, "
          f"{args.max_new_tokens} new tokens, T={cfg.temperature}, top_p={cfg.top_p}; generation "
          f"{res['generation_seconds']:.0f} s, total {wall:.0f} s\n")
    ids = list(res["models"])
    say("| domain | group | prompts | " + " | ".join(f"best-of-{args.n} mean z, {names[i]} ({i})" for i in ids)
          + " |")
    say("|---|---|---|" + "---|" * len(ids))
    first = res["models"][ids[0]]["domains"]
    for dom, d in first.items():
        for g, v in d["groups"].items():
            cells = [_fmt(res["models"][i]["domains"][dom]["groups"][g]["chosen_mean"],
                          res["models"][i]["domains"][dom]["groups"][g]["chosen_lo"],
                          res["models"][i]["domains"][dom]["groups"][g]["chosen_hi"]) for i in ids]
            say(f"| {dom} | {g} | {v['n_prompts']} | " + " | ".join(cells) + " |")
        gaps = [res["models"][i]["domains"][dom] for i in ids]
        say(f"| {dom} | **gap (max - min)** | | " + " | ".join(
            f"**{_fmt(x['gap'], x['gap_lo'], x['gap_hi'])}** ({x['highest']} > {x['lowest']})" for x in gaps) + " |")
        say(f"| {dom} | gap with groups shuffled: median, 95th pct (p) | | " + " | ".join(
            f"{x['gap_null_median']:.2f}, {x['gap_null_95']:.2f} (p = {x['gap_p_value']:.2f})" for x in gaps) + " |")
    res["names"] = names
    res["wall_seconds"] = round(wall, 1)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    if args.md:
        Path(args.md).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
