"""``python -m bench``: one runner over the benchmark scripts (list, run NAME..., all --tier), which finds
each benchmark through the ``BENCH`` object its module exports."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runner() -> Iterator[ModuleType]:
    """bench/__main__.py, imported; afterwards sys.path and the modules imported from bench/ and dashboard/
    (the scripts put those folders on the path) are as before, so no later test imports them by accident."""
    path, before = list(sys.path), set(sys.modules)
    yield _load(ROOT / "bench" / "__main__.py", "bench_runner")
    sys.path[:] = path
    for name in set(sys.modules) - before:
        file = getattr(sys.modules[name], "__file__", None) or ""
        if Path(file).parent in (ROOT / "bench", ROOT / "dashboard"):
            del sys.modules[name]


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_list_names_every_benchmark_with_its_tier() -> None:
    res = _bench("list")
    assert res.returncode == 0, res.stderr
    rows = {line.split()[0]: line.split()[1] for line in res.stdout.splitlines()}
    assert rows["sweep_engine"] == "speed" and rows["study_bbq"] == "study" and rows["policy_rloo"] == "gpu"
    assert all((ROOT / "bench" / f"{name}.py").exists() for name in rows)  # each entry is a script


def test_run_writes_name_md_and_json_where_told(tmp_path: Path) -> None:
    tracked = ROOT / "bench" / "results" / "certify_margins.md"
    before = tracked.read_text()
    res = _bench("run", "certify_margins", "--quick", "--results-dir", str(tmp_path), "--json",
                 str(tmp_path / "all.json"))
    assert res.returncode == 0, res.stderr
    md = (tmp_path / "certify_margins.md").read_text()
    assert md.startswith("# Certificate margins") and "| bernstein |" in md
    figures = json.loads((tmp_path / "certify_margins.json").read_text())
    assert figures["exit_code"] == 0 and figures["argv"][-2:] == ["--reps", "20"]  # the script's quick size
    assert json.loads((tmp_path / "all.json").read_text()) == {"certify_margins": figures}
    assert tracked.read_text() == before  # the committed results are left alone


def test_unknown_benchmark_is_a_usage_error() -> None:
    res = _bench("run", "nope")
    assert res.returncode == 2 and "unknown benchmark(s) nope" in res.stderr


def test_every_benchmark_table_is_on_the_results_page(runner) -> None:
    """Each benchmark's tables reach docs/RESULTS.md: included there, or (the speed tier) summarized into
    PERFORMANCE.md by bench/performance.py, which the page includes."""
    known = runner.benchmarks()
    assert len(known) >= 16 and {"sweep_engine", "trainer_bbq", "policy_rloo"} <= set(known)
    page = (ROOT / "docs" / "RESULTS.md").read_text()
    performance = _load(ROOT / "bench" / "performance.py", "bench_performance")
    for b in known.values():
        for table in b.tables:
            on_page = f"<!-- include: bench/results/{table} -->" in page
            summarized = b.tier == "speed" and table.removesuffix(".md") in performance.ORDER
            assert on_page or summarized, f"{b.name}: {table} is not on docs/RESULTS.md"


TOY = """import sys
sys.path.insert(0, {bench!r})
from _common import Benchmark


def main() -> int:
    print("| toy | 1 |")
    return 0


BENCH = Benchmark("toy", "study", "a planted benchmark", run=main, quick=("--fast",), json="")

if __name__ == "__main__":
    raise SystemExit(BENCH.run())
"""


def test_a_module_that_exports_bench_is_a_benchmark(runner, tmp_path: Path) -> None:
    """Adding a benchmark is its module alone: the runner finds its object, runs it and writes its files;
    a module without one is not even imported."""
    folder = tmp_path / "bench"
    folder.mkdir()
    (folder / "toy.py").write_text(TOY.format(bench=str(ROOT / "bench")))
    (folder / "helper.py").write_text("raise RuntimeError('imported')\n")
    known = runner.benchmarks(folder)
    assert list(known) == ["toy"] and known["toy"].tables == ("toy.md",)
    results = tmp_path / "results"
    figures = runner.run(known["toy"], results=results, folder=folder)
    assert (results / "toy.md").read_text() == "| toy | 1 |\n"
    assert figures["exit_code"] == 0 and figures["argv"] == [str(folder / "toy.py")]
    assert json.loads((results / "toy.json").read_text()) == figures
    assert runner.command(known["toy"], True, results, None, folder)[2:] == ["--fast"]  # its quick size
    (folder / "other.py").write_text(TOY.format(bench=str(ROOT / "bench")))  # BENCH named toy, module other
    with pytest.raises(ValueError, match="named 'toy', not 'other'"):
        runner.benchmarks(folder)


def test_a_full_length_run_keeps_the_quick_runs_results_where_told(runner, tmp_path: Path) -> None:
    """sweep_engine states one goal at --quick and another at full length: a full run writes its own files."""
    folder = tmp_path / "bench"
    folder.mkdir()
    (folder / "toy.py").write_text(TOY.format(bench=str(ROOT / "bench")).replace(
        'json="")', 'json="", full_name="toy_full")'))
    toy = runner.benchmarks(folder)["toy"]
    assert toy.tables == ("toy.md", "toy_full.md")
    results = tmp_path / "results"
    runner.run(toy, quick=True, results=results, folder=folder)
    assert sorted(p.name for p in results.iterdir()) == ["toy.json", "toy.md"]
    runner.run(toy, quick=False, results=results, folder=folder)
    assert sorted(p.name for p in results.iterdir()) == ["toy.json", "toy.md", "toy_full.json", "toy_full.md"]
    assert json.loads((results / "toy.json").read_text())["argv"][-1] == "--fast"
    assert runner.benchmarks()["sweep_engine"].results_name(False) == "sweep_engine_full"


def test_a_benchmark_object_rejects_an_unknown_tier_or_json_mode(runner) -> None:
    common = sys.modules["_common"]
    with pytest.raises(ValueError, match="tier 'fast'"):
        common.Benchmark("x", "fast", "x", run=lambda: 0)
    with pytest.raises(ValueError, match="json 'yes'"):
        common.Benchmark("x", "speed", "x", run=lambda: 0, json="yes")
