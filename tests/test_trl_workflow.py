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
def test_role_attribute_uses_faro_trains_role_constraints(trl_run):
    """``attribute="role"`` builds the same constraint objects as ``faro train --attribute role`` (RoleParity on the
    ambiguous items, one cell per DP stratum), draws whole items for the item terms, its multiplier moves, and the
    saved ``faro_dual.json`` names the role columns (the trainer of the run-store script, :func:`trl_run`)."""
    from faro_core.fairness.constraint_set import ConstraintSet
    from faro_core.fairness.role import RoleParity
    from faro_core.train import FaroConfig
    from faro_core.train.inputs import load_training_data

    root, tr = trl_run
    assert tr.group_index.attribute == "role" and tr.strata_cols == ["context_condition"]
    assert [type(c) for c in tr.constraint_set.constraints] == [RoleParity]
    _, _, index = load_training_data(FaroConfig(groups=["old"], attribute="role"))
    ours = ConstraintSet.parse(["dp"], 0.0, index, 5)
    assert tr.constraint_set.names() == ours.names() == ["dp[role|ambig]+", "dp[role|ambig]-"]
    assert tr.group_index.dp_strata == index.dp_strata == ["ambig"]
    assert len(tr.role_batches) > 0  # training items with both a biased and a counter answer
    lam = [h["faro/lambda_max_dp"] for h in tr.state.log_history if "faro/lambda_max_dp" in h]
    assert max(lam) > 0
    rec = json.loads((root / "out" / "faro_dual.json").read_text())
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


def test_resume_from_a_checkpoint_is_bit_identical(trl_run, backbone, train_ds, tmp_path):
    """Interrupted at checkpoint-8 (of 18 steps) and resumed with ``resume_from_checkpoint``: the same final weights
    and multipliers as the uninterrupted run, bit for bit (CPU, same seed). The uninterrupted run is the run-store
    script's trainer (:func:`trl_run`: the same settings; it differs only in where it saves, which draws no random
    numbers). The checkpoint holds the dual state in safetensors + JSON, and the multipliers are nonzero when it
    is written (else restoring them proves nothing)."""
    from safetensors.torch import load_file
    from test_safety import assert_safe_formats

    kw = dict(save_strategy="steps", save_steps=4)
    _, full = trl_run
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


# ------------------------------------------------------------------------------------------------ the run store
def _eval_file(pairs, split: str, path: Path) -> Path:
    cols = ["prompt", "chosen", "rejected", "pair_id", "item_id", "gold", "chosen_group", "rejected_group", "group",
            "context_condition", "question_polarity", *ROLE_COLS]
    pairs[pairs["split"] == split][cols].assign(split=split).to_parquet(path)
    return path


@pytest.fixture(scope="module")
def trl_run(backbone, pairs, train_ds, tmp_path_factory):
    """A FairRewardTrainer script with the role attribute that writes its model into a run store."""
    root = tmp_path_factory.mktemp("trl_store")
    tok = AutoTokenizer.from_pretrained(backbone)
    eval_ds = preference_dataset(pairs[pairs["split"] == "test"], tok, extra=ROLE_COLS)
    cfg = role_config(root / "out", faro_runs_dir=str(root / "runs"), faro_run_id="trl-role")
    tr = FairRewardTrainer(model=backbone, args=cfg, train_dataset=train_ds, eval_dataset=eval_ds,
                           processing_class=tok)
    tr.train()
    return root, tr


def test_a_trl_script_run_is_an_ordinary_run(trl_run, capsys, monkeypatch):
    """The run appears in ``faro runs list``, certifies with ``faro certify``, and renders on the dashboard's
    Overview (which says what it can show without a BT counterpart) and Groups pages."""
    from streamlit.testing.v1 import AppTest

    from faro_core.cli import main as faro_main
    from faro_core.store.runs import RunStore

    root, tr = trl_run
    runs = root / "runs"
    run = RunStore(runs).get("trl-role")
    assert run.status == "done" and tr.faro_run.run_id == "trl-role"
    imp = run.config["imported"]
    assert imp["columns"]["attribute"] == "role" and imp["columns"]["role_columns"] == list(ROLE_COLS)
    assert imp["columns"]["strata_columns"] == ["context_condition"] and imp["eval"]["cluster_column"] == "item_id"
    assert imp["disjoint"]["checked_on"] == ["item_id", "pair_id"]
    assert run.config["attribute"] == "role" and run.config["constraints"] == ["dp"]
    assert run.metrics()["role"]["n_dp"] > 0 and any("lambda_max" in h for h in run.history())
    assert faro_main(["runs", "list", "--runs-dir", str(runs)]) == 0
    assert "trl-role" in capsys.readouterr().out
    assert faro_main(["certify", "trl-role", "--runs-dir", str(runs), "--json"]) == 0
    cert = json.loads(capsys.readouterr().out)
    assert cert["bounds"] and any("role" in b["name"] for b in cert["bounds"])
    assert faro_main(["eval", "trl-role", "--runs-dir", str(runs), "--json", "--n-boot", "20"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("FARO_RUNS_DIR", str(runs))
    dash = Path(__file__).resolve().parent.parent / "dashboard"
    over = AppTest.from_file(str(dash / "overview.py"), default_timeout=60).run()
    assert not over.exception, [e.value for e in over.exception]
    text = " ".join(m.value for m in over.markdown) + " ".join(i.value for i in over.info)
    assert "imported from TRL" in text and "faro train" in text
    groups = AppTest.from_file(str(dash / "pages" / "4_Groups.py"), default_timeout=60).run()
    assert not groups.exception, [e.value for e in groups.exception]
    assert not groups.error, [e.value for e in groups.error]


def test_faro_import_scores_as_the_trainer_did_and_refuses_overlap(trl_run, pairs, tmp_path, capsys):
    """``faro import DIR --eval-data`` turns the saved model into a run whose held-out rewards equal the trainer's
    own scoring; evaluation data that overlaps the training pairs, a directory that is not a reward model and a
    dataset without the named columns each give one line on stderr, exit 2, and write nothing."""
    import pandas as pd

    from faro_core.cli import main as faro_main
    from faro_core.store.runs import RunStore

    root, _ = trl_run
    runs = tmp_path / "runs"
    model = root / "out"
    test = _eval_file(pairs, "test", tmp_path / "test.parquet")
    base = ["import", str(model), "--runs-dir", str(runs), "--text", "pair", "--max-length", "64"]
    assert faro_main([*base, "--eval-data", str(test), "--run-id", "imp"]) == 0
    capsys.readouterr()
    ours = pd.read_parquet(RunStore(runs).get("imp").file("scores.parquet")).set_index("pair_id")
    theirs = pd.read_parquet(RunStore(root / "runs").get("trl-role").file("scores.parquet")).set_index("pair_id")
    assert (ours["r_chosen"] - theirs.loc[ours.index, "r_chosen"]).abs().max() < 1e-5
    assert RunStore(runs).get("imp").read("certificate.json") is not None

    def refused(argv: list[str], match: str) -> None:
        before = sorted(p.name for p in runs.iterdir())
        assert faro_main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and match in err, err
        assert sorted(p.name for p in runs.iterdir()) == before

    train = _eval_file(pairs, "train", tmp_path / "train.parquet")
    refused([*base, "--eval-data", str(train)], "overlaps the training data")
    mixed = tmp_path / "mixed.parquet"
    pd.concat([pd.read_parquet(test), pd.read_parquet(train).head(3)]).to_parquet(mixed)
    refused([*base, "--eval-data", str(mixed)], "overlaps the training data")
    # the split column selects the held-out rows of a file that holds both
    assert faro_main([*base, "--eval-data", str(mixed), "--split-column", "split", "--split", "test",
                      "--run-id", "imp2"]) == 0
    assert RunStore(runs).get("imp2").config["imported"]["eval"]["split_column"] == "split"
    capsys.readouterr()
    refused([*base, "--eval-data", str(test), "--role-columns", "a_role,b_role"], "no column(s)")
    (tmp_path / "notamodel").mkdir()
    refused(["import", str(tmp_path / "notamodel"), "--eval-data", str(test), "--runs-dir", str(runs)],
            "not a reward model")
    tok_only = tmp_path / "tok"
    AutoTokenizer.from_pretrained(str(model)).save_pretrained(tok_only)
    (tok_only / "config.json").write_text(json.dumps({"architectures": ["DistilBertModel"]}))
    refused(["import", str(tok_only), "--eval-data", str(test), "--runs-dir", str(runs)], "not a reward model")


# ------------------------------------------------------------------------------------------------------ logging
def test_faro_metrics_reach_tensorboard(backbone, train_ds, tmp_path):
    """``report_to="tensorboard"``: TRL's TensorBoard callback writes the faro/* metrics (prefixed ``train/``, as
    transformers prefixes training logs) beside TRL's own."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = tmp_path / "tb"
    cfg = role_config(tmp_path / "out", max_steps=6, **{**COMMON, "report_to": ["tensorboard"]})
    cfg.logging_dir = str(logs)
    tr = make_trainer(backbone, cfg, train_ds)
    tr.train()
    events = [p for p in Path(logs).rglob("events.out.tfevents.*")]
    if not events:  # transformers >= 5 may put the writer under output_dir/runs
        events = list(Path(tmp_path / "out").rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    want = {"train/faro/penalty", "train/faro/lambda_max", "train/faro/lambda_max_dp", "train/faro/violation_dp"}
    assert want <= tags, sorted(tags)
    assert "train/loss" in tags and len(acc.Scalars("train/faro/lambda_max")) == 6
