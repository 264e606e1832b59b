"""Encoding runs on every idle core, head steps keep the caller's one thread (faro_core/models/threads.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch

from faro_core.models.features import FeatureCache
from faro_core.models.threads import encoding_threads, torch_threads


class _Encoder(torch.nn.Module):
    """A stand-in encoder that records the torch thread count of each forward."""

    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(hidden_size=4)
        self.seen: list[int] = []

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any) -> Any:
        self.seen.append(torch.get_num_threads())
        return SimpleNamespace(last_hidden_state=torch.ones(*input_ids.shape, 4))


def _tok(prompts: list[str], responses: list[str], **_: Any) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.ones(len(prompts), 3, dtype=torch.long),
            "attention_mask": torch.ones(len(prompts), 3, dtype=torch.long)}


def test_torch_threads_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FARO_TORCH_THREADS", "3")
    assert torch_threads() == 3
    monkeypatch.delenv("FARO_TORCH_THREADS")
    assert 1 <= torch_threads() <= (__import__("os").cpu_count() or 1)
    from faro_core.policy.lm import torch_threads as lm_threads  # still importable from its old home

    assert lm_threads is torch_threads


def test_encoding_uses_all_cores_and_restores_the_callers_thread(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FARO_NO_SHIPPED_CACHE", "1")
    monkeypatch.setenv("FARO_TORCH_THREADS", "2")
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # what a head-mode trainer sets for its steps, before the backend encodes
    try:
        fc = FeatureCache(root=tmp_path, progress=False)
        enc = _Encoder()
        fc._tok, fc._model = _tok, enc
        out = fc.encode(["p"] * 3, ["a", "b", "c"])
        assert out.shape == (3, 4) and fc.last_encoded == 3
        assert enc.seen and set(enc.seen) == {2}
        assert torch.get_num_threads() == 1
        with encoding_threads(1) as n:  # an explicit count wins over the rule
            assert n == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_training_gives_the_caller_its_thread_count_back(tmp_path) -> None:
    """A head-mode run takes one thread for its steps and gives the caller's count back when ``train`` returns
    (the count is process state: left at 1 it slowed, and changed the float order of, whatever the process ran
    next, e.g. the TRL agreement test after the head-mode tests)."""
    from faro_core.store.runs import RunStore
    from faro_core.train import FaroConfig, train

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen: list[int] = []
        train(FaroConfig(data="demo-mini", epochs=1, batch_size=256), RunStore(tmp_path / "runs"), progress=False,
              on_step=lambda row: seen.append(torch.get_num_threads()))
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
