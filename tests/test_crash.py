"""kill -9 during training (issue #8, part 2) and determinism (part 5).

``faro train`` runs as a subprocess on the demo data (head mode, small batches, a few seconds of work) and is
SIGKILLed at a random moment after its status says ``running``, :data:`TRIALS` times. After each kill:

- the run reads ``interrupted`` on the next look (its pid is dead; a stale heartbeat is the other signal);
- no file in the run directory is half-written: every ``.json`` parses, every ``.parquet`` reads, every
  ``.safetensors`` loads, ``history.jsonl`` has at most a torn last line, and anything else is a
  dot-prefixed temporary file (the atomic writer's ``.<name>.*.tmp``), which no reader opens;
- the other runs of the store are byte-identical (SHA-256 of every file, before and after);
- ``faro train --resume`` finishes the run with exactly the metrics and weights of an uninterrupted run.

The feature cache is warmed once, so each trial costs process start-up plus about two seconds of training.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from faro_core.cli import main as faro_main
from faro_core.store.runs import Run, RunStore

ROOT = Path(__file__).resolve().parent.parent
TRIALS = 10
SEED = 1234
# a dual step every 2 steps, so every checkpoint carries moving multipliers (with the default 20 the
# early checkpoints held lambda = 0 and a resume that lost the dual state passed)
TRAIN_ARGS = ["train", "--data", "demo-mini", "--constraint", "dp", "--epsilon", "0.05", "--epochs", "2", "--batch-size", "16",
              "--min-count", "5", "--ckpt-every", "5", "--dual-every", "2", "--strata", "question_polarity",
              "--dp-partner", "pool", "--seed", "0", "--quiet", "--json"]


def checkpoint_step(run: Run) -> int:
    """The step of the run's last complete checkpoint (0: none)."""
    state = run.file("checkpoint") / "state.json"
    return int(json.loads(state.read_text())["step"]) if state.exists() else 0


def kept_history(run: Run) -> list[dict]:
    """The history rows a resume must keep as they are: those up to the checkpoint. Each row carries the time
    its step ended, so a resume that retrained from step 0 instead of the checkpoint would rewrite them."""
    step = checkpoint_step(run)
    return [h for h in run.history() if h["step"] <= step]


# ------------------------------------------------------------------------------------------------ helpers
def warm_feature_cache() -> None:
    """Encode every demo text once (a no-op when the cache already holds them)."""
    from faro_core.train import FaroConfig
    from faro_core.train.backends import HeadBackend
    from faro_core.train.inputs import load_training_data

    cfg = FaroConfig().resolved()
    _, df, _ = load_training_data(cfg)
    HeadBackend(cfg, df, progress=False)


def tree_hashes(root: Path, skip: set[str] = frozenset()) -> dict[str, str]:  # type: ignore[assignment]
    """SHA-256 of every file under ``root`` (relative path -> digest), leaving out top-level dirs in ``skip``."""
    out: dict[str, str] = {}
    if not root.exists():
        return out
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if rel.parts[0] in skip or not p.is_file():
            continue
        out[str(rel)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def assert_run_dir_parses(path: Path) -> None:
    """No half-written file is visible as complete: every file either parses or is a dot-prefixed temp file."""
    for p in sorted(path.rglob("*")):
        if not p.is_file():
            continue
        name = p.name
        if name.startswith("."):  # a temp file: never read by anything
            # ours end in .tmp; safetensors' Rust writer persists through its own '.tmpXXXXXX' in the same folder
            assert name.endswith(".tmp") or name.startswith(".tmp"), f"unexpected hidden file {p}"
            continue
        if name.endswith(".json"):
            json.loads(p.read_text())
        elif name.endswith(".parquet"):
            pd.read_parquet(p)
        elif name.endswith(".safetensors"):
            load_file(str(p))
        elif name == "history.jsonl":
            lines = p.read_text().splitlines()
            for line in lines[:-1]:  # only the last line may be torn by a kill mid-append
                json.loads(line)
        elif name != "launch.log":  # the launcher's plain-text process log
            raise AssertionError(f"unexpected file in a run directory: {p}")


def weights(run: Run) -> dict[str, torch.Tensor]:
    return load_file(str(run.file("model.safetensors")))


def _wait_running(run: Run, proc: subprocess.Popen[bytes], timeout_s: float = 120.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"train exited early with code {proc.returncode}")
        if run.raw_status().get("status") == "running":  # written atomically: never a torn read
            return
        time.sleep(0.02)
    raise AssertionError("train never reached running")


def logged_step(run: Run) -> int:
    """The last step in ``history.jsonl`` (0 before the first rows). Rows reach the file every 10 steps and at
    each checkpoint; ``progress.json`` is refreshed only every 0.5 s, longer than this whole training loop, so
    waiting on it put almost every kill after the last step (measured: 7 of 10 trials at step 88 of 88)."""
    try:
        lines = run.file("history.jsonl").read_bytes().splitlines()
    except FileNotFoundError:
        return 0
    for line in reversed(lines):
        try:  # the last line may be mid-append
            return int(json.loads(line)["step"])
        except (ValueError, KeyError):
            continue
    return 0


def _wait_step(run: Run, proc: subprocess.Popen[bytes], step: int, timeout_s: float = 120.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline and proc.poll() is None:
        if logged_step(run) >= step:
            return
        time.sleep(0.002)


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict[str, torch.Tensor]]:
    """A warm feature cache and one uninterrupted run ``ref`` in a fresh store."""
    warm_feature_cache()
    root = tmp_path_factory.mktemp("crash_runs")
    assert faro_main([*TRAIN_ARGS, "--runs-dir", str(root), "--run-id", "ref"]) == 0
    ref = RunStore(root).get("ref")
    assert ref.status == "done"
    return root, ref.metrics(), weights(ref)


# ------------------------------------------------------------------------------------------------ tests
def test_kill_9_then_resume_matches_uninterrupted(reference: tuple[Path, dict, dict[str, torch.Tensor]],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    root, ref_metrics, ref_weights = reference
    store = RunStore(root)
    total = int(ref_metrics["steps"])
    rng = random.Random(SEED)
    survived, killed_at = 0, []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for trial in range(TRIALS):
        rid = f"crash-{trial}"
        others = tree_hashes(root, skip={rid})
        log = open(root.parent / f"{rid}.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "faro_core", *TRAIN_ARGS, "--runs-dir", str(root),
                                 "--run-id", rid], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        log.close()
        run = Run(rid, store.path(rid))
        try:
            _wait_running(run, proc)
            if trial % 2 == 0:  # a random time after start: data loading, feature reads, steps (never too late)
                _wait_step(run, proc, total - 8, timeout_s=rng.uniform(0.0, 3.0))
            else:  # a random step: checkpoints, history appends, late steps
                _wait_step(run, proc, rng.randint(1, total - 8))
            assert proc.poll() is None, f"trial {trial}: the run finished before it could be killed"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL
        step = logged_step(run)
        killed_at.append(step)

        assert run.status == "interrupted", f"trial {trial}: status {run.status!r} after kill -9 at step {step}"
        assert_run_dir_parses(run.path)
        assert tree_hashes(root, skip={rid}) == others, f"trial {trial}: another run changed"
        assert rid in {r["run_id"] for r in store.index()}

        kept = kept_history(run)
        assert faro_main(["train", "--resume", rid, "--runs-dir", str(root), "--quiet", "--json"]) == 0
        done = store.get(rid)
        assert done.history()[:len(kept)] == kept, f"trial {trial}: resume rewrote steps before its checkpoint"
        assert done.status == "done"
        assert done.metrics() == ref_metrics, f"trial {trial} (killed at step {step}): metrics differ"
        w = weights(done)
        assert w.keys() == ref_weights.keys()
        assert all(torch.equal(w[k], ref_weights[k]) for k in w), f"trial {trial}: weights differ"
        assert [h["step"] for h in done.history()] == list(range(1, total + 1))
        assert_run_dir_parses(done.path)
        assert tree_hashes(root, skip={rid}) == others, f"trial {trial}: resume changed another run"
        survived += 1
    capsys.readouterr()
    with capsys.disabled():
        print(f"\ncrash trials survived: {survived}/{TRIALS}; killed at steps {killed_at} of {total}")
    assert survived == TRIALS
    # the trials must reach the training loop itself, not only start-up and the final writes
    assert sum(0 < s < total for s in killed_at) >= TRIALS // 3, f"too few kills mid-training: {killed_at}"
    index = store.index()
    assert len(index) == TRIALS + 1 and all(r["status"] == "done" for r in index)


def test_kill_between_checkpoint_files_keeps_a_consistent_checkpoint(
        reference: tuple[Path, dict, dict[str, torch.Tensor]], monkeypatch: pytest.MonkeyPatch) -> None:
    """A death after the checkpoint tensors are written but before ``state.json`` (the commit record) is:
    resume must use the previous complete checkpoint, not new tensors with an old step count."""
    import faro_core.train.checkpoint as checkpoint

    root, ref_metrics, ref_weights = reference
    real = checkpoint.write_json

    def dying_write_json(path: Path | str, obj: object) -> None:
        if Path(path).name == "state.json" and isinstance(obj, dict) and obj.get("step") == 10:
            raise KeyboardInterrupt  # the process "dies" between the two checkpoint files
        real(path, obj)

    monkeypatch.setattr(checkpoint, "write_json", dying_write_json)
    assert faro_main([*TRAIN_ARGS, "--runs-dir", str(root), "--run-id", "torn-ckpt"]) == 130  # interrupted
    monkeypatch.setattr(checkpoint, "write_json", real)
    run = RunStore(root).get("torn-ckpt")
    assert run.status == "interrupted"
    assert checkpoint_step(run) == 5
    assert_run_dir_parses(run.path)
    kept = kept_history(run)
    assert [h["step"] for h in kept] == [1, 2, 3, 4, 5]
    assert faro_main(["train", "--resume", "torn-ckpt", "--runs-dir", str(root), "--quiet"]) == 0
    assert run.history()[:5] == kept  # resumed from step 5, not retrained
    assert run.metrics() == ref_metrics
    assert all(torch.equal(v, ref_weights[k]) for k, v in weights(run).items())


def test_same_seed_same_data_identical_metrics_and_weights(
        reference: tuple[Path, dict, dict[str, torch.Tensor]]) -> None:
    """Determinism on CPU: a second run with the same seed and data equals the first, file for file."""
    root, ref_metrics, ref_weights = reference
    assert faro_main([*TRAIN_ARGS, "--runs-dir", str(root), "--run-id", "again"]) == 0
    again = RunStore(root).get("again")
    assert (again.file("metrics.json").read_bytes() == (root / "ref" / "metrics.json").read_bytes())
    assert again.metrics() == ref_metrics
    w = weights(again)
    assert w.keys() == ref_weights.keys() and all(torch.equal(w[k], ref_weights[k]) for k in w)
    a = pd.read_parquet(again.file("scores.parquet"))
    b = pd.read_parquet(root / "ref" / "scores.parquet")
    pd.testing.assert_frame_equal(a, b)


def test_kill_before_first_checkpoint_resumes_with_clean_history(
        reference: tuple[Path, dict, dict[str, torch.Tensor]]) -> None:
    """Killed at step 3 (no checkpoint yet): resume starts over and the history is not doubled."""
    from faro_core.train import FaroConfig, train

    root, ref_metrics, _ = reference
    cfg = FaroConfig(data="demo-mini", constraints=["dp"], epsilon=0.05, epochs=2, batch_size=16, min_count=5, ckpt_every=5,
                     dual_every=2, strata=["question_polarity"], dp_partner=False)  # = TRAIN_ARGS

    def stop_at(row: dict) -> None:
        if row["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, RunStore(root), run_id="early", progress=False, on_step=stop_at)
    assert faro_main(["train", "--resume", "early", "--runs-dir", str(root), "--quiet"]) == 0
    run = RunStore(root).get("early")
    assert [h["step"] for h in run.history()] == list(range(1, int(ref_metrics["steps"]) + 1))
    assert run.metrics() == ref_metrics
