"""Dashboard start-up latency: server start → first interactive demo page in headless Chromium.

    python bench/dashboard_latency.py [--runs-dir DIR] [--repeats 3] [--quick] [--json]

Builds nothing heavy: point ``--runs-dir`` at a store with the demo sweep (``faro demo``); without one it
builds a tiny demo first (not timed). "Interactive" = the overview's title and its story chart (BT against
Faro, an SVG) are rendered and Streamlit's running indicator is gone. Prints a table, writes
bench/results/dashboard_latency.{md,json}; with --json the last stdout line is ``{"seconds": median, ...}``.
``--quick``: one repeat (~25 s).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "dashboard"))
sys.path.insert(0, str(ROOT))

from _common import Benchmark  # noqa: E402
from serve import launch_browser, start_server, stop_server, wait_health, wait_ready  # noqa: E402

# the Overview's new content: the story's chart (an SVG) drawn, or, without a story, its explanation
READY = 'svg.faro-story, [data-testid="stAlert"]'


def measure(runs_dir: str) -> dict[str, float]:
    """One cold start: seconds to health check, to first page interactive."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = launch_browser(pw)  # browser start is not part of the server's latency
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        t0 = time.perf_counter()
        proc, url = start_server(runs_dir)
        try:
            wait_health(url)
            t_health = time.perf_counter() - t0
            page.goto(url)
            wait_ready(page, settle_s=0.0)
            page.wait_for_selector(READY, timeout=60_000)
            t_ready = time.perf_counter() - t0
            page.reload()  # a second visit: cached readers, warm imports
            t1 = time.perf_counter()
            wait_ready(page, settle_s=0.0)
            page.wait_for_selector(READY, timeout=60_000)
            t_reload = time.perf_counter() - t1
        finally:
            stop_server(proc)
            browser.close()
    return {"health_s": t_health, "first_page_s": t_ready, "reload_s": t_reload}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs-dir", default=None, help="run store with the demo sweep (default: build a tiny one)")
    ap.add_argument("--repeats", type=int, default=None, help="cold starts (default 3; --quick 1)")
    ap.add_argument("--quick", action="store_true", help="under a minute: one repeat")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    args.repeats = args.repeats or (1 if args.quick else 3)
    runs, scratch = args.runs_dir, None
    if runs is None:
        from faro_core.store.runs import RunStore
        from faro_core.studies.demo import build_demo, demo_specs

        runs = scratch = tempfile.mkdtemp(prefix="faro-latency-")
        build_demo(RunStore(runs), demo_specs(epsilons=(0.05,), constraints=("dp",), epochs=2), policy=False)
    n_runs = sum(1 for p in Path(runs).iterdir() if (p / "config.json").exists())
    try:
        rows = [measure(runs) for _ in range(args.repeats)]
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    lines = ["| repeat | server health (s) | first page interactive (s) | reload (s) |", "|---|---|---|---|"]
    lines += [f"| {i + 1} | {r['health_s']:.2f} | {r['first_page_s']:.2f} | {r['reload_s']:.2f} |"
              for i, r in enumerate(rows)]
    lines.append(f"| median | {med['health_s']:.2f} | {med['first_page_s']:.2f} | {med['reload_s']:.2f} |")
    table = "\n".join(lines)
    print(table)
    out = ROOT / "bench" / "results" / "dashboard_latency.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        "# Dashboard start-up latency\n\n"
        f"`python bench/dashboard_latency.py --repeats {args.repeats}" + (" --quick" if args.quick else "") + "` —"
        f" {time.strftime('%Y-%m-%d %H:%M')}, "
        f"run store with {n_runs} runs, headless Debian Chromium, 2 shared CPU cores, load average "
        f"{os.getloadavg()[0]:.1f} at the end (other jobs running).\n"
        "Time from launching `streamlit run dashboard/app.py` to the overview page rendered with its story "
        "chart (target ≤ 3 s).\n\n" + table + "\n")
    figures = {"load_average_1min": round(os.getloadavg()[0], 2), "seconds": round(med["first_page_s"], 3), "health_s": round(med["health_s"], 3),
               "reload_s": round(med["reload_s"], 3), "repeats": args.repeats, "runs": n_runs}
    out.with_suffix(".json").write_text(json.dumps(figures, sort_keys=True, indent=1) + "\n")
    if args.json:
        print(json.dumps(figures, sort_keys=True))
    return 0


BENCH = Benchmark("dashboard_latency", "speed", "dashboard start to the first interactive page (Chromium)",
                  run=main, runs_dir=True)

if __name__ == "__main__":
    raise SystemExit(BENCH.run())
