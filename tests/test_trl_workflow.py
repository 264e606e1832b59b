"""A TRL user's workflow through faro_core.integrations.trl (issue #27): the role attribute, resume from a TRL
checkpoint, TRL runs in the run store (``FairRewardConfig(faro_runs_dir=...)``, ``faro import``), and the
``faro/*`` metrics in TensorBoard.

CPU, tiny: a 2-layer DistilBERT of hidden size 32 built locally (tests/trl_fixture.py), 48 items per split of the
embedded demo's BBQ pairs, a few dozen steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl")

from transformers import AutoTokenizer, TrainerCallback  # noqa: E402
from trl_fixture import COMMON, preference_dataset, role_pairs, tiny_backbone  # noqa: E402

from faro_core.errors import FaroError  # noqa: E402
from faro_core.integrations.trl import STATE_FILE, FairRewardConfig, FairRewardTrainer  # noqa: E402

ROLE_COLS = ("chosen_role", "rejected_role")


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> str:
    return tiny_backbone(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def pairs():
    return role_pairs(48)


@pytest.fixture(scope="module")
def train_ds(backbone, pairs):
    tok = AutoTokenizer.from_pretrained(backbone)
    return preference_dataset(pairs[pairs["split"] == "train"], tok, extra=ROLE_COLS)


def role_config(out: Path, **kw) -> FairRewardConfig:
    base = dict(constraints=["dp"], attribute="role", role_columns=list(ROLE_COLS), epsilon=0.0, min_count=5,
                dual_every=2, dual_lr=0.5, learning_rate=1e-3, per_device_train_batch_size=16, num_train_epochs=3,
                save_strategy="no", **COMMON)
    return FairRewardConfig(output_dir=str(out), **{**base, **kw})


def make_trainer(backbone: str, cfg: FairRewardConfig, ds) -> FairRewardTrainer:
    return FairRewardTrainer(model=backbone, args=cfg, train_dataset=ds,
                             processing_class=AutoTokenizer.from_pretrained(backbone))


# ---------------------------------------------------------------------------------------------------------- role
def test_role_attribute_uses_faro_trains_role_constraints(backbone, train_ds, tmp_path):
    """``attribute="role"`` builds the same constraint objects as ``faro train --attribute role`` (RoleParity on the
    ambiguous items, one cell per DP stratum), draws whole items for the item terms, and its multiplier moves."""
    from faro_core.fairness.constraint_set import ConstraintSet
    from faro_core.fairness.role import RoleParity
    from faro_core.train import FaroConfig
    from faro_core.train.inputs import load_training_data

    tr = make_trainer(backbone, role_config(tmp_path), train_ds)
    assert tr.group_index.attribute == "role" and tr.strata_cols == ["context_condition"]
    assert [type(c) for c in tr.constraint_set.constraints] == [RoleParity]
    _, _, index = load_training_data(FaroConfig(groups=["old"], attribute="role"))
    ours = ConstraintSet.parse(["dp"], 0.0, index, 5)
    assert tr.constraint_set.names() == ours.names() == ["dp[role|ambig]+", "dp[role|ambig]-"]
    assert tr.group_index.dp_strata == index.dp_strata == ["ambig"]
    assert len(tr.role_batches) > 0  # training items with both a biased and a counter answer
    tr.train()
    lam = [h["faro/lambda_max_dp"] for h in tr.state.log_history if "faro/lambda_max_dp" in h]
    assert max(lam) > 0
    tr.save_model()
    rec = json.loads((tmp_path / "faro_dual.json").read_text())
    assert rec["columns"]["attribute"] == "role" and rec["columns"]["role_columns"] == list(ROLE_COLS)
    assert rec["index"]["attribute"] == "role" and rec["columns"]["strata_columns"] == ["context_condition"]


def test_role_attribute_errors_are_one_line(backbone, train_ds, tmp_path):
    with pytest.raises(FaroError, match="role column"):
        make_trainer(backbone, role_config(tmp_path, role_columns=["a_role", "b_role"]), train_ds)
    with pytest.raises(FaroError, match=r"no column\(s\) \['qid'\]"):
        make_trainer(backbone, role_config(tmp_path, item_column="qid"), train_ds)
    with pytest.raises(FaroError, match="attribute must be"):
        role_config(tmp_path, attribute="race")
    with pytest.raises(FaroError, match="two columns"):
        role_config(tmp_path, role_columns=["chosen_role"])


# -------------------------------------------------------------------------------------------------------- resume
class _StopAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_resume_from_a_checkpoint_is_bit_identical(backbone, train_ds, tmp_path):
    """Interrupted at checkpoint-8 (of 18 steps) and resumed with ``resume_from_checkpoint``: the same final weights
    and multipliers as the uninterrupted run, bit for bit (CPU, same seed). The checkpoint holds the dual state
    in safetensors + JSON, and the multipliers are nonzero when it is written (else restoring them proves
    nothing)."""
    from safetensors.torch import load_file
    from test_safety import assert_safe_formats

    kw = dict(save_strategy="steps", save_steps=4)
    full = make_trainer(backbone, role_config(tmp_path / "full", **kw), train_ds)
    full.train()
    cut = make_trainer(backbone, role_config(tmp_path / "cut", **kw), train_ds)
    cut.add_callback(_StopAt(8))
    cut.train()
    ckpt = tmp_path / "cut" / "checkpoint-8"
    state = load_file(str(ckpt / STATE_FILE))
    assert float(state["gda.lam"].max()) > 0 and bool(state["seen"].any())
    assert_safe_formats_of = [ckpt / STATE_FILE, ckpt / "faro_dual.json"]
    for p in assert_safe_formats_of:
        assert p.read_bytes()[:4] not in (b"PK\x03\x04",) and not p.read_bytes().startswith(b"\x80")
    faro_only = tmp_path / "faro_only"
    faro_only.mkdir()
    for p in assert_safe_formats_of:
        (faro_only / p.name).write_bytes(p.read_bytes())
    assert assert_safe_formats(faro_only) == 2

    resumed = make_trainer(backbone, role_config(tmp_path / "cut", **kw), train_ds)
    resumed.train(resume_from_checkpoint=str(ckpt))
    assert resumed.state.global_step == full.state.global_step == 18
    assert torch.equal(resumed.gda.lam, full.gda.lam) and float(full.gda.lam.max()) > 0
    for k in ("strict", "proxy"):
        assert all(torch.equal(a.stacked(), b.stacked()) for a, b in zip(resumed.gda.running[k], full.gda.running[k]))
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_checkpoint_without_dual_state(backbone, train_ds, tmp_path):
    plain = make_trainer(backbone, role_config(tmp_path, constraints=[], save_strategy="steps", save_steps=2,
                                               max_steps=2), train_ds)
    plain.train()
    again = make_trainer(backbone, role_config(tmp_path, max_steps=4), train_ds)
    with pytest.raises(FaroError, match="no faro_state.safetensors"):
        again.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
