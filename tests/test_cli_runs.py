"""``faro runs list|show|rm`` on a real run store: one trained run, one certified run, one live 'running' run."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from faro_core.cli import main as faro_main
from faro_core.store.runs import RunStore


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> RunStore:
    store = RunStore(tmp_path_factory.mktemp("runs"))
    for argv in (["--run-id", "bt-run", "--method", "bt"],
                 ["--run-id", "cf-run", "--constraint", "cf", "--epsilon", "0.1", "--seed", "2"]):
        assert faro_main(["train", *argv, "--epochs", "1", "--runs-dir", str(store.root), "--quiet"]) == 0
    assert faro_main(["certify", "cf-run", "--runs-dir", str(store.root), "--json"]) == 0
    return store


def _out(capsys) -> str:
    return capsys.readouterr().out


def test_list_shows_status_method_kind_eps_seed_and_metrics(store, capsys):
    assert faro_main(["runs", "list", "--runs-dir", str(store.root)]) == 0
    lines = _out(capsys).splitlines()
    header = lines[0].split()
    assert header[:6] == ["run", "status", "method", "kind", "eps", "seed"] and "certified" in header
    rows = {line.split()[0]: line.split() for line in lines[1:3]}
    assert rows["bt-run"][1:6] == ["done", "BT", "-", "-", "0"]
    assert rows["cf-run"][1:6] == ["done", "Faro-CF", "cf", "0.1", "2"] and rows["cf-run"][-1] in ("yes", "no")
    assert faro_main(["runs", "list", "--runs-dir", str(store.root), "--json"]) == 0
    table = {r["run_id"]: r for r in json.loads(_out(capsys))}
    metrics = store.get("cf-run").metrics()["test"]
    assert table["cf-run"]["gold_accuracy"] == pytest.approx(metrics["gold_accuracy"])
    assert table["cf-run"]["violation_cf"] == pytest.approx(metrics["violation"]["cf"])
    assert table["cf-run"]["certified"] is not None and table["bt-run"]["certified"] is None
    assert faro_main(["runs", "list", "--runs-dir", str(store.root), "--status", "failed"]) == 0
    assert "no runs" in _out(capsys)


def test_show_prints_config_metrics_and_certificate(store, capsys):
    assert faro_main(["runs", "show", "cf-run", "--runs-dir", str(store.root)]) == 0
    text = _out(capsys)
    assert text.startswith("run cf-run: done")
    assert "config:" in text and "  epsilon: 0.1" in text and "  constraints: ['cf']" in text
    assert "metrics:" in text and "  test: accuracy" in text
    cert = store.get("cf-run").read("certificate.json")
    verdict = "certified" if cert["certified"] else "not certified"
    assert f"certificate: {verdict} at eps 0.1" in text
    assert faro_main(["runs", "show", "bt-run", "--runs-dir", str(store.root), "--json"]) == 0
    out = json.loads(_out(capsys))
    assert out["config"]["method"] == "bt" and out["certificate"] is None and "metrics.json" in out["files"]


@pytest.mark.parametrize("bad, message", [("../x", "invalid run id"), ("a/../../b", "invalid run id"),
                                          ("nope", "unknown run")])
def test_bad_run_ids_exit_2(store, bad, message, capsys):
    for action in ("show", "rm"):
        assert faro_main(["runs", action, bad, "--runs-dir", str(store.root)]) == 2
        assert message in capsys.readouterr().err


def test_rm_refuses_a_running_run_unless_forced(store, capsys):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        run = store.create({"name": "live"}, run_id="live-run")
        run.write("status.json", {"status": "running", "pid": sleeper.pid, "host": socket.gethostname(),
                                  "heartbeat": time.time(), "created": time.time()})
        assert faro_main(["runs", "rm", "live-run", "bt-run", "--runs-dir", str(store.root)]) == 2
        assert "is running" in capsys.readouterr().err
        assert run.path.exists() and store.has("bt-run")  # refused as a whole: nothing removed
        assert faro_main(["runs", "rm", "live-run", "--force", "--runs-dir", str(store.root)]) == 0
        assert sleeper.wait(timeout=10) is not None  # stopped (SIGTERM) before its directory went
        assert not run.path.exists() and store.has("bt-run") and store.has("cf-run")
    finally:
        sleeper.kill()
        sleeper.wait()


def test_rm_removes_a_finished_run_only(store, tmp_path, capsys):
    store2 = RunStore(tmp_path / "other")
    (store2.root / "keep").mkdir(parents=True)
    assert faro_main(["train", "--run-id", "gone", "--method", "bt", "--epochs", "1", "--runs-dir",
                      str(store.root), "--quiet"]) == 0
    capsys.readouterr()
    assert faro_main(["runs", "rm", "gone", "--runs-dir", str(store.root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"removed": ["gone"]}
    assert not store.has("gone") and store.has("bt-run") and (store2.root / "keep").exists()
