"""One runner for the benchmarks: ``python -m bench list | run NAME... | all [--tier speed|study|gpu]``.

Each benchmark stays a script that runs on its own (``python bench/NAME.py ...``); the runner knows, from the
table :data:`BENCHMARKS`, how to ask each for its quick size, its JSON figures, its markdown and its run store,
and owns the shared flags:

- ``--quick``: the script's own quick size (its ``--quick``, or the arguments its entry names);
- ``--json PATH``: also write every run's figures there, as one object keyed by benchmark;
- ``--runs-dir DIR``: the run store of the benchmarks that train (``DIR/NAME``);
- ``--results-dir DIR``: where ``NAME.md`` and ``NAME.json`` go (default ``bench/results``).

A run always writes ``NAME.md`` (the script's markdown: the file it wrote, else what it printed) and
``NAME.json`` (the script's figures where it has them, else what was run: ``{"benchmark", "argv", "seconds",
"exit_code"}``). ``all`` runs every benchmark of a tier and then refreshes the generated part of
docs/RESULTS.md (``bench/performance.py``, then ``bench/readme.py``) when the results went to bench/results.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
RESULTS_ENV = "FARO_BENCH_RESULTS"  # read by bench/_common.py: where the scripts that write results put them
TIERS = ("speed", "study", "gpu")


@dataclass(frozen=True)
class Benchmark:
    """How the runner drives one script ``bench/<name>.py``.

    ``json``: ``"flag"`` (``--json`` prints the figures as the last stdout line), ``"path"`` (``--json PATH``
    writes them) or ``""`` (none); ``md``: the script's flag that takes the markdown's path (``"--out"``,
    ``"--md"``), or ``""`` (its stdout is the markdown); ``quick``: the arguments of its quick size (empty: it
    has none); ``runs_dir``: it takes ``--runs-dir``; ``args``: arguments it always needs.
    """

    name: str
    tier: str
    what: str
    quick: tuple[str, ...] = ("--quick",)
    json: str = "flag"
    md: str = ""
    runs_dir: bool = False
    args: tuple[str, ...] = ()


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("overhead", "speed", "Faro's constrained step over a plain BT step (goal <= 1.03)"),
    Benchmark("sweep_engine", "speed", "the batched sweep engine: 30 members against one BT run"),
    Benchmark("sweep_prefix", "speed", "the training prefix an epsilon sweep shares with lambda = 0"),
    Benchmark("vs_fairlearn", "speed", "Faro's head-mode sweep against fairlearn's ExponentiatedGradient"),
    Benchmark("vs_trl", "speed", "Faro full mode against TRL's RewardTrainer (throughput)"),
    Benchmark("scaling", "speed", "a head-mode step's time and memory against batch, groups and data size"),
    Benchmark("cache", "speed", "feature cache reuse and encoding throughput"),
    Benchmark("dashboard_latency", "speed", "dashboard start to the first interactive page (Chromium)",
              runs_dir=True),
    Benchmark("generation_speed", "speed", "the reference LM's generation speed on BBQ prompts",
              quick=("--prompts", "4"), json="", md="--out"),
    Benchmark("certify_margins", "study", "margins and coverage of the certificate's bounds",
              quick=("--reps", "20"), json=""),
    Benchmark("trainer_bbq", "study", "BT against Faro-DP/EO/CF on BBQ with skew 0.3", quick=("--epochs", "2"),
              md="--out", runs_dir=True),
    Benchmark("study_bbq", "study", "Faro against BT and every baseline on BBQ (the study)", json="",
              runs_dir=True),
    Benchmark("study_unseen", "study", "the unseen-templates study (train and report)", quick=(), json="",
              runs_dir=True, args=("all",)),
    Benchmark("policy_bbq", "study", "fairness transfer from the reward to the KL-regularized policy",
              quick=("--limit", "40", "--generate", "0"), json="", md="--out", runs_dir=True),
    Benchmark("bbq_build_validate", "study", "faro data bbq-build against the published BBQ files", quick=(),
              json="path", md="--md"),
    Benchmark("policy_rloo", "gpu", "RLOO fine-tuning of SmolLM2 with BT against Faro rewards", quick=(), json="",
              md="--out", runs_dir=True),
)}


def command(b: Benchmark, quick: bool, results: Path, runs_dir: Path | None) -> list[str]:
    """The script's command line for one run."""
    argv = [sys.executable, str(ROOT / "bench" / f"{b.name}.py"), *b.args]
    if quick:
        argv += b.quick
    if b.json == "flag":
        argv.append("--json")
    elif b.json == "path":
        argv += ["--json", str(results / f"{b.name}.json")]
    if b.md:
        argv += [b.md, str(results / f"{b.name}.md")]
    if b.runs_dir and runs_dir is not None:
        argv += ["--runs-dir", str(runs_dir / b.name)]
    return argv


def run(b: Benchmark, quick: bool = False, results: Path = RESULTS, runs_dir: Path | None = None) -> dict[str, Any]:
    """Run one benchmark (its output passes through) and write ``results/NAME.{md,json}``; its figures."""
    results.mkdir(parents=True, exist_ok=True)
    argv = command(b, quick, results, runs_dir)
    print(f"$ {' '.join(argv[1:])}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, RESULTS_ENV: str(results)})
    lines = []
    for line in proc.stdout:  # type: ignore[union-attr]
        sys.stdout.write(line)
        lines.append(line)
    code = proc.wait()
    seconds = time.perf_counter() - t0
    figures: dict[str, Any] | None = None
    if b.json == "flag" and lines:
        try:
            figures = json.loads(lines[-1])
            lines = lines[:-1]
        except json.JSONDecodeError:
            figures = None
    elif b.json == "path" and (results / f"{b.name}.json").exists():
        figures = json.loads((results / f"{b.name}.json").read_text())
    if code != 0:
        raise SystemExit(f"bench: {b.name} failed (exit code {code})")
    if not b.md:
        (results / f"{b.name}.md").write_text("".join(lines).strip() + "\n")
    if figures is None:
        figures = {"benchmark": b.name, "argv": argv[1:], "seconds": round(seconds, 1), "exit_code": code}
    (results / f"{b.name}.json").write_text(json.dumps(figures, sort_keys=True, indent=1, default=str) + "\n")
    return figures


def refresh_results_page() -> None:
    """Regenerate docs/RESULTS.md's generated part: PERFORMANCE.md from the figures, then every include block."""
    for script in ("performance.py", "readme.py"):
        subprocess.run([sys.executable, str(ROOT / "bench" / script)], cwd=ROOT, check=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="every benchmark, its tier and what it measures")
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--quick", action="store_true", help="each script's quick size")
    shared.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="also write every run's figures here, keyed by benchmark")
    shared.add_argument("--runs-dir", type=Path, default=None, help="run store root of the benchmarks that train")
    shared.add_argument("--results-dir", type=Path, default=RESULTS, help="where NAME.md / NAME.json go")
    p_run = sub.add_parser("run", parents=[shared], help="run the named benchmarks")
    p_run.add_argument("names", nargs="+", metavar="NAME")
    p_all = sub.add_parser("all", parents=[shared], help="run every benchmark of a tier, then refresh "
                           "docs/RESULTS.md")
    p_all.add_argument("--tier", choices=TIERS, default="speed")
    args = ap.parse_args(argv)
    if args.cmd == "list":
        for b in BENCHMARKS.values():
            print(f"{b.name:20s} {b.tier:6s} {b.what}")
        return 0
    if args.cmd == "run":
        unknown = [n for n in args.names if n not in BENCHMARKS]
        if unknown:
            ap.error(f"unknown benchmark(s) {', '.join(unknown)}; see python -m bench list")
        chosen = [BENCHMARKS[n] for n in args.names]
    else:
        chosen = [b for b in BENCHMARKS.values() if b.tier == args.tier]
    out = {b.name: run(b, args.quick, args.results_dir, args.runs_dir) for b in chosen}
    if args.json is not None:
        args.json.write_text(json.dumps(out, sort_keys=True, indent=1, default=str) + "\n")
    if args.cmd == "all":
        if args.results_dir.resolve() == RESULTS.resolve():
            refresh_results_page()
        else:
            print("bench: results went elsewhere; docs/RESULTS.md left as it is", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
