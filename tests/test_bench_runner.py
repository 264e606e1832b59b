"""``python -m bench``: one runner over the benchmark scripts (list, run NAME..., all --tier)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
