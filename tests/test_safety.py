"""Safe loading and safe paths (issue #8, part 4).

- A run directory and the cache hold only safetensors, JSON (and JSON lines), Parquet or Arrow files (plus a
  run's plain-text ``launch.log`` and the tokenizer's text chat template), and no file has a pickle or
  ``torch.save`` (zip) header.
- The source tree never unpickles: every ``torch.load(`` passes ``weights_only=True``; there is no
  ``pickle.load``, ``np.load(..., allow_pickle=True)``, ``pd.read_pickle``, ``joblib.load`` or
  ``trust_remote_code=True``.
- Uploads have a size limit (the same in Faro and in Streamlit's config).
- Run ids (and sweep names) cannot escape the run store: ``../x``, ``/abs``, ``a/../../b``, a symlinked run
  directory: exit code 2 through the CLI, and nothing outside the store is read or written.
- The dashboard binds to localhost by default (``.streamlit/config.toml`` and the dashboard launcher).

Determinism (part 5) is tested in ``test_crash.py`` (same seed and data: metrics, weights and scores equal).
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faro_core.cli import main as faro_main
from faro_core.errors import RunError
from faro_core.store.runs import RunStore, validate_run_id

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
ROOT = Path(__file__).resolve().parent.parent
SAFE_SUFFIXES = (".safetensors", ".json", ".jsonl", ".parquet", ".arrow")
TEXT_OK = {"launch.log", "chat_template.jinja"}  # plain text, never deserialized into objects
SOURCE_DIRS = ("faro_core", "dashboard", "bench", "tools")


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def assert_safe_formats(root: Path) -> int:
    """Every file under ``root`` is a safe format; returns how many files were checked."""
    n = 0
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        n += 1
        head = p.read_bytes()[:4]
        assert not head.startswith(b"\x80"), f"{p}: pickle header"
        assert not head.startswith(b"PK\x03\x04"), f"{p}: zip (torch.save) file"
        if p.name in TEXT_OK or (p.name.startswith(".") and p.name.endswith(".tmp")):
            continue
        assert p.name.endswith(SAFE_SUFFIXES), f"{p}: not safetensors / JSON / Parquet / Arrow"
    return n


# ------------------------------------------------------------------------------------------------ formats
def test_run_dir_and_cache_hold_only_safe_formats(tmp_path: Path) -> None:
    from faro_core.paths import cache_dir

    assert faro_main(["train", "--data", "demo-mini", "--constraint", "cf", "--epochs", "1", "--batch-size", "128", "--ckpt-every", "2",
                      "--runs-dir", str(tmp_path), "--run-id", "scan", "--quiet"]) == 0
    run = RunStore(tmp_path).get("scan")
    assert (run.file("checkpoint") / "state.json").exists()
    assert assert_safe_formats(run.path) >= 10
    assert_safe_formats(cache_dir())


def test_feature_cache_writes_only_safe_formats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the feature cache writes, in a cache of its own (a warm shared cache would only show files
    written by older code): new shards appear, and every file is a safe format."""
    from faro_core.paths import cache_dir

    monkeypatch.setenv("FARO_CACHE_DIR", str(tmp_path / "cache"))
    rows = [{"prompt": f"question {i}", "chosen": f"good answer {i}", "rejected": f"bad answer {i}"}
            for i in range(24)]
    (tmp_path / "small.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert faro_main(["train", "--data", str(tmp_path / "small.jsonl"), "--epochs", "1",
                      "--runs-dir", str(tmp_path / "runs"), "--quiet"]) == 0
    shards = list((cache_dir() / "features").rglob("shard-*"))
    assert cache_dir() == tmp_path / "cache" and shards, "the cache wrote no shard"
    assert assert_safe_formats(cache_dir()) >= len(shards)


PICKLING_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def unpickling_sites(source: str) -> list[str]:
    """Where ``source`` could unpickle, found on its syntax tree (so aliases and ``from`` imports count): an
    import of a pickling module, ``torch.load`` (under any name) without ``weights_only=True``, ``np.load``
    with ``allow_pickle=True``, pandas' ``read_pickle``, and ``trust_remote_code=True`` (also via ``**{...}``)."""
    tree = ast.parse(source)
    found: list[str] = []
    torch_load = {"torch.load"}  # names bound to torch.load in this file
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in PICKLING_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in PICKLING_MODULES:
                found.append(f"from {node.module} import ...")
            if node.module == "torch":
                torch_load |= {a.asname or a.name for a in node.names if a.name == "load"}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        kw = {k.arg: k.value for k in node.keywords if k.arg}
        unpacked = [k.value for k in node.keywords if k.arg is None and isinstance(k.value, ast.Dict)]
        for d in unpacked:
            kw.update({ast.literal_eval(k): v for k, v in zip(d.keys, d.values) if isinstance(k, ast.Constant)})
        is_true = {k: isinstance(v, ast.Constant) and v.value is True for k, v in kw.items()}
        if name in torch_load and not is_true.get("weights_only"):
            found.append(f"{name}(...) without weights_only=True")
        if name.split(".")[-1] == "load" and name.split(".")[0] in ("np", "numpy") and is_true.get("allow_pickle"):
            found.append(f"{name}(..., allow_pickle=True)")
        if name.split(".")[-1] == "read_pickle":
            found.append(name)
        if is_true.get("trust_remote_code"):
            found.append(f"{name}(..., trust_remote_code=True)")
    return found


def test_unpickling_scan_sees_aliases_and_indirect_forms() -> None:
    """The scan below catches the spellings a regex missed (each was checked against the old patterns)."""
    for bad in ("from pickle import load\nload(f)", "import pickle as pk\npk.load(f)",
                "import pickle\npickle.Unpickler(f).load()", "from torch import load\nload(p)",
                "from torch import load as tl\ntl(p, weights_only=False)", "import joblib",
                "m.from_pretrained(x, **{'trust_remote_code': True})", "np.load(p, allow_pickle=True)",
                "pd.read_pickle(p)", "torch.load(p)"):
        assert unpickling_sites(bad), bad
    for ok in ("torch.load(p, weights_only=True)", "np.load(p)", "json.load(f)",
               "m.from_pretrained(x, trust_remote_code=False)"):
        assert not unpickling_sites(ok), ok


def test_source_never_unpickles() -> None:
    files = [p for d in SOURCE_DIRS if (ROOT / d).is_dir() for p in (ROOT / d).rglob("*.py")]
    assert len(files) > 20
    for p in files:
        assert not unpickling_sites(p.read_text()), (p, unpickling_sites(p.read_text()))


# ------------------------------------------------------------------------------------------------ uploads
def test_upload_size_limit_matches_streamlit_config() -> None:
    from faro_core.errors import DataError
    from faro_core.store.uploads import MAX_UPLOAD_MB, save_upload

    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert 0 < MAX_UPLOAD_MB <= 200 and cfg["server"]["maxUploadSize"] == MAX_UPLOAD_MB
    with pytest.raises(DataError, match="upload limit"):
        save_upload("x.csv", b"a" * (int(MAX_UPLOAD_MB * 2**20) + 1), dest="/nonexistent/never-written")
    with pytest.raises(DataError, match="unsupported file type"):
        save_upload("model.pkl", b"\x80\x04K\x01.", dest="/nonexistent/never-written")


def test_upload_name_cannot_escape_its_folder(tmp_path: Path) -> None:
    from faro_core.store.uploads import save_upload

    p = save_upload("../../etc/evil.csv", b"prompt,chosen,rejected\na,b,c\n", dest=tmp_path / "up")
    assert p.parent == tmp_path / "up" and ".." not in p.name


# ------------------------------------------------------------------------------------------------ run ids
BAD_IDS = ["../x", "/abs", "a/../../b", "..", ".", "a/b", "..\\x", "x\x00y", "~root", "-rf", " x", "x" * 200]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_bad_run_ids_exit_2_through_the_cli(bad: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    store.mkdir()
    # a decoy run next to the store: "../x" would reach it if ids were not checked (exit 0 or a report)
    RunStore(tmp_path).create({"constraints": []}, run_id="x")
    outside = _tree(tmp_path)
    runs = ["--runs-dir", str(store)]
    # "=" and "--" so that every id, "-rf" included, reaches Faro's check rather than argparse's
    for argv in (["train", "--data", "demo-mini", f"--run-id={bad}", "--epochs", "1", "--quiet", *runs],
                 ["train", f"--resume={bad}", "--quiet", *runs], ["eval", *runs, "--", bad],
                 ["report", "--out", str(store / "r.html"), *runs, "--", bad]):
        rc = faro_main(argv)
        err = capsys.readouterr().err
        assert rc == 2 and "invalid run id" in err, (argv, err)
        assert "Traceback" not in err
    assert _tree(tmp_path) == outside  # nothing written anywhere (the store included)


def test_symlinked_run_dir_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A link planted in the store (``runs/evil -> /elsewhere``) is neither read nor written through."""
    outside = tmp_path / "elsewhere"
    victim = RunStore(outside).create({"name": "victim"}, run_id="victim")
    victim.set_status("interrupted")
    store = tmp_path / "runs"
    store.mkdir()
    (store / "evil").symlink_to(outside / "victim", target_is_directory=True)
    (store / "evil2").symlink_to(outside / "new", target_is_directory=True)  # dangling
    before = _tree(outside)
    for argv in (["train", "--resume", "evil", "--quiet"], ["train", "--run-id", "evil", "--epochs", "1", "--quiet"],
                 ["train", "--data", "demo-mini", "--run-id", "evil2", "--epochs", "1", "--quiet"], ["eval", "evil"]):
        rc = faro_main([*argv, "--runs-dir", str(store)])
        err = capsys.readouterr().err
        assert rc == 2 and "symbolic link" in err and "Traceback" not in err, (argv, err)
    assert _tree(outside) == before and not (outside / "new").exists()
    assert RunStore(store).list() == [] and not RunStore(store).has("evil")


def test_sweep_name_cannot_escape_the_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "runs"
    rc = faro_main(["sweep", "--name", "../../escape", "--runs-dir", str(store), "--epochs", "1", "--quiet"])
    assert rc == 2 and "invalid sweep name" in capsys.readouterr().err
    assert not any(p.name == "escape" for p in tmp_path.rglob("*"))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(list("ab./\\-_~ \x00") + ["..", "%2e"]), max_size=8).map("".join))
def test_any_valid_run_id_stays_inside_the_store(run_id: str) -> None:
    root = Path("/tmp/faro-store-probe")
    try:
        validate_run_id(run_id)
    except RunError:
        return
    assert (root / run_id).resolve().parent == root.resolve()
    assert not run_id.startswith(".") and "/" not in run_id and "\\" not in run_id


# ------------------------------------------------------------------------------------------------ localhost
def test_dashboard_binds_to_localhost(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["address"] in ("localhost", "127.0.0.1")
    import subprocess
    import sys

    sys.path.insert(0, str(ROOT / "dashboard"))
    try:
        import serve
    finally:
        sys.path.remove(str(ROOT / "dashboard"))
    seen: list[list[str]] = []

    class FakePopen:
        def __init__(self, argv: list[str], **kw: object) -> None:
            seen.append(list(argv))
            self.pid = -1

    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    _, url = serve.start_server(tmp_path, port=8599)
    argv = seen[0]
    assert argv[argv.index("--server.address") + 1] in ("localhost", "127.0.0.1")
    assert url.startswith("http://localhost:")
    mk = (ROOT / "Makefile").read_text() if (ROOT / "Makefile").exists() else ""
    assert "0.0.0.0" not in mk and "0.0.0.0" not in (ROOT / ".streamlit" / "config.toml").read_text()
