"""Generation speed of the reference LM on this CPU: n samples × P BBQ prompts (default 4 × 20).

    python bench/generation_speed.py [--n 4] [--prompts 20] [--max-new-tokens 48] [--lm ID] [--data bbq]

Prints a table, writes bench/results/generation_speed.md and, as the last line, ``{"seconds": ...}``
(wall time of the generation itself, cache bypassed; the model load is reported separately).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from _common import Benchmark

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--lm", default=None)
    ap.add_argument("--data", default="bbq", help="BBQ source for the prompts ('bbq', 'demo' or a path)")
    ap.add_argument("--out", default=str(RESULTS / "generation_speed.md"))
    args = ap.parse_args()

    import torch

    from faro_core.policy.evaluate import load_items
    from faro_core.policy.generate import GenerationConfig, generate, generation_prompts
    from faro_core.policy.lm import lm_name, load_lm

    load0 = os.getloadavg()[0]
    t0 = time.time()
    load_lm(args.lm)
    t_load = time.time() - t0
    prompts = generation_prompts(load_items(args.data), args.prompts)
    cfg = GenerationConfig(n=args.n, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                           top_p=args.top_p)
    t0 = time.time()
    df = generate(list(prompts["user_text"]), cfg, lm=args.lm, use_cache=False)
    secs = time.time() - t0
    toks = int(df["n_tokens"].sum())
    load1 = os.getloadavg()[0]
    rows = [
        ("LM", lm_name(args.lm)),
        ("prompts × samples", f"{args.prompts} × {args.n} = {len(df)}"),
        ("max new tokens", str(args.max_new_tokens)),
        ("generated tokens (total / mean per sample)", f"{toks} / {toks / max(len(df), 1):.1f}"),
        ("model load (s)", f"{t_load:.1f}"),
        ("generation wall time (s)", f"{secs:.1f}"),
        ("tokens / s", f"{toks / secs:.1f}"),
        ("torch threads", str(torch.get_num_threads())),
        ("CPU cores / load avg before → after", f"{os.cpu_count()} / {load0:.1f} → {load1:.1f}"),
        ("machine", f"{platform.processor() or platform.machine()}, torch {torch.__version__}"),
        ("under 5 minutes", "yes" if secs < 300 else "NO"),
    ]
    w = max(len(k) for k, _ in rows)
    table = "\n".join(f"{k:<{w}}  {v}" for k, v in rows)
    print(table)
    md = ["# Generation speed (reference LM, CPU)", "",
          f"`python bench/generation_speed.py --n {args.n} --prompts {args.prompts} "
          f"--max-new-tokens {args.max_new_tokens}` — {time.strftime('%Y-%m-%d %H:%M')}", "",
          "| quantity | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], "",
          "The load average shows how busy the machine was (other jobs share the 2 cores); the thread count is",
          "chosen from the idle cores (`faro_core.policy.lm.torch_threads`, override with FARO_TORCH_THREADS).",
          "", "Example samples:", ""]
    for _, r in df.head(2 * args.n).iterrows():
        md.append(f"- prompt {r['prompt_idx']}: {r['text'][:160]!r}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(md) + "\n")
    print(json.dumps({"seconds": round(secs, 2), "samples": len(df), "tokens": toks,
                      "threads": torch.get_num_threads(), "load_avg": round(load1, 2)}))


BENCH = Benchmark("generation_speed", "speed", "the reference LM's generation speed on BBQ prompts",
                  run=main, quick=("--prompts", "4"), json="", md="--out")

if __name__ == "__main__":
    raise SystemExit(BENCH.run())
