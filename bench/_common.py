"""Shared helpers of the benchmarks: :class:`Benchmark`, the object each benchmark module exports as ``BENCH``
(what ``python -m bench`` reads), and the timing and table helpers of the speed benchmarks (bench/overhead.py,
vs_trl.py, vs_fairlearn.py, cache.py, scaling.py).

Timing discipline: the sides of a comparison are run interleaved (A B, then B A, ...: rotating the order
cancels position effects), so load from other jobs on the shared cores hits both alike,
and every figure is a median with its spread (interquartile range).
Ratios are the median of the per-round ratios A_i / B_i of one run.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(os.environ.get("FARO_BENCH_RESULTS") or ROOT / "bench" / "results")  # python -m bench sets it
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


TIERS = ("speed", "study", "gpu")


@dataclass(frozen=True)
class Benchmark:
    """What a benchmark module ``bench/<name>.py`` exports as ``BENCH``: its flags, its run and its tables.
    ``python -m bench`` finds every benchmark through this object (there is no other list).

    - ``name`` (the module's), ``tier`` (one of :data:`TIERS`), ``what`` (one line for ``python -m bench list``).
    - Flags, how the runner's shared flags reach the script: ``quick``, the arguments of its quick size (empty:
      it has none); ``json``, ``"flag"`` (``--json`` prints the figures as the last stdout line), ``"path"``
      (``--json PATH`` writes them) or ``""`` (it has no figures); ``md``, the flag that takes its markdown's
      path (``"--out"``, ``"--md"``) or ``""`` (its stdout is the markdown); ``runs_dir``, whether it takes
      ``--runs-dir``; ``args``, arguments it always needs.
    - ``run``: the entry point, reading its arguments from ``sys.argv[1:]`` and returning an exit status (None
      is 0); ``python bench/<name>.py`` and the runner (in a fresh process per benchmark) both call it.
    - ``tables``: the markdown files under ``bench/results/`` that hold its tables on docs/RESULTS.md (the
      runner's ``<name>.md`` and those of the variants named in the docs; the speed tier's reach the page
      through bench/performance.py's PERFORMANCE.md).
    - ``full_name``: where a full-length run's results go when they must not replace the quick run's (both
      carry goals: ``sweep_engine``'s ratio is stated at ``--quick``, its efficiency at full length); the
      script writes under the same name.
    """

    name: str
    tier: str
    what: str
    run: Callable[[], int | None]
    quick: tuple[str, ...] = ("--quick",)
    json: str = "flag"
    md: str = ""
    runs_dir: bool = False
    args: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    full_name: str = ""

    def results_name(self, quick: bool) -> str:
        """The stem of this run's ``bench/results`` files: ``full_name`` for a full-length run, where set."""
        return self.full_name if self.full_name and not quick else self.name

    def __post_init__(self) -> None:
        if self.tier not in TIERS:
            raise ValueError(f"benchmark {self.name}: tier {self.tier!r} is not one of {TIERS}")
        if self.json not in ("flag", "path", ""):
            raise ValueError(f"benchmark {self.name}: json {self.json!r} is not 'flag', 'path' or ''")
        if not self.tables:
            full = (f"{self.full_name}.md",) if self.full_name else ()
            object.__setattr__(self, "tables", (f"{self.name}.md", *full))


def bbq_source(category: str = "Religion") -> tuple[str | None, str | None, str]:
    """(data, format, label) of the benchmark data: one BBQ category from ../shared/data/bbq, else the demo.

    One category (Religion: 1,200 items, 2,400 pairs, 9,600 texts with twins) keeps head-mode features in the
    on-disk cache affordable on a 2-core machine; the full BBQ set (83,040 texts) takes hours to encode here.
    """
    from faro_core.paths import SHARED_DATA

    path = SHARED_DATA / "bbq" / f"{category}.jsonl"
    if path.exists():
        return str(path), "bbq", f"BBQ {category} ({path.name})"
    return None, None, "embedded demo data (BBQ-style)"


def quartiles(xs: Sequence[float]) -> tuple[float, float, float]:
    """(q1, median, q3) of a sample (the median itself for fewer than two values)."""
    xs = sorted(float(x) for x in xs)
    if len(xs) < 2:
        m = xs[0] if xs else float("nan")
        return m, m, m
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], statistics.median(xs), q[2]


def fmt_spread(xs: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    """``median [q1–q3]`` of ``xs * scale``."""
    q1, m, q3 = quartiles([x * scale for x in xs])
    return f"{m:.{digits}f} [{q1:.{digits}f}–{q3:.{digits}f}]"


def paired_ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """Per-round ratios a_i / b_i of two interleaved samples."""
    return [x / y for x, y in zip(a, b) if y > 0]


def interleave(sides: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1,
               timer: Callable[[Callable[[], Any]], float] | None = None) -> dict[str, list[float]]:
    """Run each side once per round, the order rotated every round (two sides: A B, B A, A B, ...; three: A B C,
    B C A, C A B, ..., so no side always runs in the same place) and return the seconds of each call per side.

    ``timer(fn)`` may return its own measurement (e.g. a throughput window inside the call); by default the
    wall time of the call. ``warmup`` rounds are run first and not recorded.
    """
    def wall(fn: Callable[[], Any]) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    timer = timer or wall
    for _ in range(warmup):
        for fn in sides.values():
            fn()
    out: dict[str, list[float]] = {k: [] for k in sides}
    items = list(sides.items())
    for r in range(rounds):
        shift = r % len(items)
        for k, fn in items[shift:] + items[:shift]:
            out[k].append(timer(fn))
    return out


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def machine_line(threads: int | None = None) -> str:
    """One line describing where the numbers come from (cores, load, torch threads: ``threads`` when the
    measuring happened in other processes, else this process's)."""
    import os

    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    gpu = f"{torch.cuda.get_device_name(0)}, " if torch.cuda.is_available() else ""
    n = torch.get_num_threads() if threads is None else threads
    return (f"{gpu}{os.cpu_count()} CPU cores (shared; 1-min load average {load:.1f} at the end), torch "
            f"{torch.__version__}, {n} torch thread{'s' if n != 1 else ''}")


def finish(name: str, title: str, body: str, figures: dict[str, Any], as_json: bool) -> None:
    """Print the report, write bench/results/<name>.md (and the figures to <name>.json, which
    bench/performance.py summarizes) and, with ``as_json``, print the figures as the last stdout line."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = f"## {title}\n\n{body.strip()}\n"
    (RESULTS / f"{name}.md").write_text(text)
    (RESULTS / f"{name}.json").write_text(json.dumps(figures, sort_keys=True, indent=1) + "\n")
    print(text)
    if as_json:
        print(json.dumps(figures, sort_keys=True))
