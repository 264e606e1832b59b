"""One runner for the benchmarks: ``python -m bench list | run NAME... | all [--tier speed|study|gpu]``.

A benchmark is a module ``bench/NAME.py`` that exports one object, ``BENCH`` (a
:class:`_common.Benchmark`: its flags, its run and its tables); the runner finds them there, so adding a
benchmark touches its own module only, and each stays a script that runs on its own (``python bench/NAME.py
...``). The runner owns the shared flags:

- ``--quick``: the script's own quick size (its ``--quick``, or the arguments its object names);
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
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
RESULTS = BENCH_DIR / "results"
RESULTS_ENV = "FARO_BENCH_RESULTS"  # read by bench/_common.py: where the scripts that write results put them
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))  # the scripts import their helpers as ``_common``

from _common import TIERS, Benchmark  # noqa: E402


def benchmarks(folder: Path = BENCH_DIR) -> dict[str, Benchmark]:
    """Every benchmark: the ``BENCH`` of each module of ``folder`` that defines one, by tier then name.

    A module whose text has no ``BENCH = `` line (a helper, bench/performance.py, bench/readme.py, the
    scripts that analyse a given store) is not imported. Raises ``ValueError`` when a module's object names
    another module."""
    found = []
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_") or "\nBENCH = " not in path.read_text(encoding="utf-8"):
            continue
        spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        b = module.BENCH
        if b.name != path.stem:
            raise ValueError(f"{path}: its BENCH is named {b.name!r}, not {path.stem!r}")
        found.append(b)
    return {b.name: b for b in sorted(found, key=lambda b: (TIERS.index(b.tier), b.name))}


def command(b: Benchmark, quick: bool, results: Path, runs_dir: Path | None, folder: Path = BENCH_DIR) -> list[str]:
    """The script's command line for one run (``folder/NAME.py``, whose ``__main__`` calls ``BENCH.run``)."""
    argv = [sys.executable, str(folder / f"{b.name}.py"), *b.args]
    stem = b.results_name(quick)
    if quick:
        argv += b.quick
    if b.json == "flag":
        argv.append("--json")
    elif b.json == "path":
        argv += ["--json", str(results / f"{stem}.json")]
    if b.md:
        argv += [b.md, str(results / f"{stem}.md")]
    if b.runs_dir and runs_dir is not None:
        argv += ["--runs-dir", str(runs_dir / b.name)]
    return argv


def run(b: Benchmark, quick: bool = False, results: Path = RESULTS, runs_dir: Path | None = None,
        folder: Path = BENCH_DIR) -> dict[str, Any]:
    """Run one benchmark in a fresh process (its output passes through) and write ``results/NAME.{md,json}``
    (:meth:`Benchmark.results_name`); its figures."""
    results.mkdir(parents=True, exist_ok=True)
    stem = b.results_name(quick)
    argv = command(b, quick, results, runs_dir, folder)
    print(f"$ {' '.join(argv[1:])}", file=sys.stderr, flush=True)
    started = time.time()
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
    elif b.json == "path" and (results / f"{stem}.json").exists():
        figures = json.loads((results / f"{stem}.json").read_text())
    if code != 0:
        raise SystemExit(f"bench: {b.name} failed (exit code {code})")
    md = results / f"{stem}.md"
    if not b.md and not (md.exists() and md.stat().st_mtime >= started):  # the script did not write its own
        md.write_text("".join(lines).strip() + "\n")
    if figures is None:
        figures = {"benchmark": b.name, "argv": argv[1:], "seconds": round(seconds, 1), "exit_code": code}
    (results / f"{stem}.json").write_text(json.dumps(figures, sort_keys=True, indent=1, default=str) + "\n")
    return figures


def refresh_results_page() -> None:
    """Regenerate docs/RESULTS.md's generated part: PERFORMANCE.md from the figures, then every include block."""
    for script in ("performance.py", "readme.py"):
        subprocess.run([sys.executable, str(BENCH_DIR / script)], cwd=ROOT, check=True)


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
    known = benchmarks()
    if args.cmd == "list":
        for b in known.values():
            print(f"{b.name:20s} {b.tier:6s} {b.what}")
        return 0
    if args.cmd == "run":
        unknown = [n for n in args.names if n not in known]
        if unknown:
            ap.error(f"unknown benchmark(s) {', '.join(unknown)}; see python -m bench list")
        chosen = [known[n] for n in args.names]
    else:
        chosen = [b for b in known.values() if b.tier == args.tier]
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
