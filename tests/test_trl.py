"""faro_core.integrations.trl (issue #19): FairRewardTrainer is TRL's RewardTrainer plus Faro's constraints, and
Faro rewards plug into TRL's online trainers.

CPU, tiny: a 2-layer DistilBERT built locally (tests/trl_fixture.py), BBQ's "old" pairs of the demo (about 90
training pairs), a few steps.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("trl")

from datasets import Dataset  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402
from trl import RewardConfig, RewardTrainer  # noqa: E402

from faro_core.integrations.trl import FairRewardConfig, FairRewardTrainer, reward_function  # noqa: E402
from faro_core.store.runs import RunStore  # noqa: E402
from faro_core.train import FaroConfig, train  # noqa: E402
from faro_core.train.inputs import load_training_data  # noqa: E402

MAX_LEN = 64
# what both trainers share: Faro's full-mode optimiser (Adam = AdamW without weight decay, constant lr, no
# clipping) and dropout on (Faro trains in train mode)
COMMON = dict(learning_rate=3e-5, lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0,
              disable_dropout=False, bf16=False, activation_checkpointing=False, use_cpu=True, report_to=[],
              save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0, data_seed=0, max_length=None,
              dataloader_num_workers=0)


def preference_dataset(df: pd.DataFrame, tok) -> Dataset:
    """A TRL preference dataset of Faro's pairs, pre-tokenized the way Faro encodes them (the sentence pair),
    with the group columns a user would pass."""
    def ids(prompts, responses):
        return [tok(p, r, truncation="longest_first", max_length=MAX_LEN)["input_ids"]
                for p, r in zip(prompts, responses)]

    return Dataset.from_dict({
        "chosen_ids": ids(df["prompt"], df["chosen"]), "rejected_ids": ids(df["prompt"], df["rejected"]),
        "chosen_group": list(df["chosen_group"]), "rejected_group": list(df["rejected_group"]),
        "group": list(df["group"]), "gold": list(df["gold"]), "pair_id": list(df["pair_id"]),
        "question_polarity": list(df["question_polarity"]), "context_condition": list(df["context_condition"]),
    })


@pytest.fixture(scope="module")
def bbq_old():
    _, df, _ = load_training_data(FaroConfig(groups=["old"]))
    return df


def test_without_constraints_it_is_trls_reward_trainer(bbq_old, tmp_path):
    """Same loss, batches, dropout draws and weights as TRL's own trainer (the tiny backbone with dropout on:
    the two must consume the random stream identically)."""
    from trl_fixture import tiny_backbone

    backbone = tiny_backbone(tmp_path / "tiny", dropout=0.1)
    tok = AutoTokenizer.from_pretrained(backbone)
    ds = preference_dataset(bbq_old[bbq_old["split"] == "train"], tok)
    kw = dict(COMMON, max_steps=3, per_device_train_batch_size=16)
    plain = RewardTrainer(model=backbone, args=RewardConfig(output_dir=str(tmp_path / "a"), **kw),
                          train_dataset=ds, processing_class=tok)
    plain.train()
    fair = FairRewardTrainer(model=backbone, args=FairRewardConfig(output_dir=str(tmp_path / "b"), **kw),
                             train_dataset=ds, processing_class=tok)
    fair.train()
    a, b = plain.model.state_dict(), fair.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    loss = [h["loss"] for h in plain.state.log_history if "loss" in h]
    assert loss and loss == [h["loss"] for h in fair.state.log_history if "loss" in h]
    assert not any(k.startswith("faro/") for h in fair.state.log_history for k in h)


def test_reward_function_is_a_trl_online_reward(tmp_path, monkeypatch):
    """GRPO / RLOO call ``reward_func(prompts=, completions=, completion_ids=, **columns, trainer_state=,
    log_extra=, log_metric=)`` and name it by ``__name__`` (trl/trainer/grpo_trainer.py _calculate_rewards)."""
    from faro_core.cli import main as faro_main
    from faro_core.integrations.export import ExportScorer

    monkeypatch.setenv("FARO_NO_SHIPPED_CACHE", "1")  # float32 features: the export then matches the run exactly
    monkeypatch.setenv("FARO_CACHE_DIR", str(tmp_path / "cache"))
    store = RunStore(tmp_path / "runs")
    train(FaroConfig(data="demo-mini", groups=["old"], epochs=2), store, run_id="h", progress=False)
    out = tmp_path / "export"
    assert faro_main(["export", "h", "--out", str(out), "--runs-dir", str(store.root)]) == 0
    prompts = ["A grandfather and a grandson were at the bank.\nWho struggled with the app?"] * 3
    completions = ["The grandfather", "Cannot be answered", "The grandson"]
    from_run = reward_function("h", runs_dir=store.root)
    from_dir = reward_function(out)
    kwargs = dict(completion_ids=[[1, 2]] * 3, trainer_state=None, log_extra=lambda **k: None,
                  log_metric=lambda *a, **k: None, answer=["x"] * 3)
    a = from_run(prompts=prompts, completions=completions, **kwargs)
    b = from_dir(prompts=prompts, completions=completions, **kwargs)
    assert isinstance(a, list) and len(a) == 3 and all(isinstance(v, float) for v in a)
    assert np.allclose(a, b, atol=1e-4) and np.allclose(b, ExportScorer(out).score(prompts, completions), atol=1e-6)
    assert from_run.__name__ and from_dir.__name__
    # conversational prompts and completions (lists of messages) score as their text
    conv = from_dir(prompts=[[{"role": "user", "content": p}] for p in prompts],
                    completions=[[{"role": "assistant", "content": c}] for c in completions], **kwargs)
    assert np.allclose(conv, b, atol=1e-6)
