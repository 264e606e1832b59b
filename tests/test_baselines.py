"""Baselines train through the same run store and evaluate with the same code; each does what it claims."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from faro_core.errors import FaroError
from faro_core.evaluate.metrics import evaluate_run
from faro_core.paths import DEMO_MINI_DIR
from faro_core.store.runs import RunStore
from faro_core.studies.grid import baseline_configs, parse_baselines
from faro_core.train import FaroConfig, train
from faro_core.train.methods import BASELINES

DATA = "demo-mini"  # 512 shipped items: trainer mechanics, not the demo's findings
# tracked data: its absence is a broken checkout, a failure (tests/test_data.py), never a skip
assert DEMO_MINI_DIR.is_dir(), f"the tracked mini demo {DEMO_MINI_DIR} is missing"
BASE = FaroConfig(data=DATA, epochs=2, head_hidden=16, min_count=5)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> RunStore:
    return RunStore(tmp_path_factory.mktemp("runs"))


def test_registry_and_parse() -> None:
    assert set(BASELINES) == {"bt", "reweight", "posthoc", "fixed_lambda", "select_only", "expgrad", "expgrad_head",
                              "group_dro", "fair_reg"}
    assert parse_baselines("all") == list(BASELINES) and parse_baselines("none") == []
    with pytest.raises(FaroError):
        parse_baselines("bt,magic")
    cfgs = baseline_configs(BASE, ["bt", "expgrad"], ["dp", "cf"], [0.1, 0.05], [0])
    assert [c.method for c in cfgs] == ["bt", "expgrad", "expgrad"]
    assert math.isinf(cfgs[0].epsilon) and cfgs[1].constraints == ["dp"]
    head = baseline_configs(BASE, ["expgrad_head"], ["eo"], [0.05], [0])
    assert [(c.method, c.expgrad_base, c.name) for c in head] == [("expgrad", "head", "expgrad_head-eo-eps0.05")]
    assert cfgs[1].expgrad_base == "linear"


def baseline_run(store: RunStore, method: str, kinds: list[str]) -> Any:
    """The module's run of ``method`` (trained on first use, so tests do not depend on their order)."""
    run_id = f"b-{method}-{'-'.join(kinds) or 'none'}"
    if store.has(run_id) and store.get(run_id).status == "done":
        return store.get(run_id)
    cfg = FaroConfig(**{**BASE.to_dict(), "method": method, "constraints": kinds, "epsilon": 0.1})
    return train(cfg, store, run_id=run_id, progress=False)


@pytest.mark.parametrize("method,kinds", [("bt", []), ("reweight", []), ("posthoc", []), ("fixed_lambda", ["dp"]),
                                          ("expgrad", ["dp"]), ("expgrad", ["eo"])])
def test_every_baseline_trains_and_evaluates(store: RunStore, method: str, kinds: list[str]) -> None:
    run = baseline_run(store, method, kinds)
    assert run.status == "done" and run.metrics()["method"] == method
    scores = pd.read_parquet(run.file("scores.parquet"))
    assert set(scores["split"]) == {"train", "val", "test"} and scores["r_chosen"].notna().all()
    res = evaluate_run(run, n_boot=5)
    assert 0 <= res["metrics"]["gold_accuracy"]["value"] <= 1


def test_reweighing_weights_by_hand_from_the_training_split() -> None:
    """w(a, c) = P(a) P(c) / P(a, c) on the training split, worked out by hand: a = [x, x, y, y], chosen group
    c = [x, y, y, y] give P(c=x) = 1/4, so w(x, x) = .5 * .25 / .25, w(x, y) = .5 * .75 / .25, w(y, y) =
    .5 * .75 / .5. A held-out pair takes its combination's training weight and changes none of them."""
    from faro_core.train.methods import METHODS, reweighing_weights

    df = pd.DataFrame({"group": ["x", "x", "y", "y", "x"], "chosen_group": ["x", "y", "y", "y", "x"],
                       "split": ["train"] * 4 + ["test"]})
    w = reweighing_weights(df)
    assert torch.allclose(w, torch.tensor([0.5, 1.5, 0.75, 0.75, 0.5]))
    flipped = df.assign(chosen_group=["x", "y", "y", "y", "y"])  # another held-out label: same weights
    assert torch.allclose(reweighing_weights(flipped)[:4], w[:4])
    assert METHODS["reweight"].example_weights is reweighing_weights and METHODS["bt"].example_weights is None


@pytest.mark.parametrize("method", ["reweight", "fixed_lambda"])
def test_reweight_and_fixed_lambda_are_not_plain_bt(store: RunStore, method: str) -> None:
    """Same seed and data as BT: reweighing (example weights) and the fixed multiplier (a penalty) must each
    change the trained rewards; a baseline that silently fell back to BT would not."""
    bt = pd.read_parquet(baseline_run(store, "bt", []).file("scores.parquet"))
    run = baseline_run(store, method, ["dp"] if method == "fixed_lambda" else [])
    other = pd.read_parquet(run.file("scores.parquet"))
    assert not np.allclose(other["r_chosen"], bt["r_chosen"], atol=1e-4)
    if method == "fixed_lambda":  # the penalty is in the loss (its larger batch alone would also move rewards)
        hist = run.history()
        assert all(h["lambda_max"] == BASE.fixed_lambda > 0 for h in hist)
        assert any(h["loss"] > h["bt_loss"] + 1e-3 for h in hist)  # a hinge: positive while violated


def test_posthoc_equalizes_group_means_on_train(store: RunStore) -> None:
    """The stored shifts are (stratum mean - group mean) of pair-centered rewards before shifting, and the
    shifted rewards have smaller group gaps of that mean."""
    run = baseline_run(store, "posthoc", [])
    shifts = run.read("model.json")["shifts"]
    s = pd.read_parquet(run.file("scores.parquet"))
    s = s[s["split"] == "train"]

    def add(col: str) -> np.ndarray:
        return np.array([shifts.get(f"{g}|{st}", 0.0) if g is not None else 0.0
                         for g, st in zip(s[col], s["stratum"])])

    def gaps(r_c: np.ndarray, r_r: np.ndarray) -> pd.Series:
        half = (r_c - r_r) / 2
        resp = pd.DataFrame({"g": list(s["chosen_group"]) + list(s["rejected_group"]), "s": list(s["stratum"]) * 2,
                             "r": np.r_[half, -half]}).dropna(subset=["g"])
        return resp.groupby("s")["r"].mean().reindex(resp.groupby(["g", "s"])["r"].mean().index,
                                                     level="s") - resp.groupby(["g", "s"])["r"].mean()

    scope = {k.split("|", 1)[1] for k in shifts}  # the strata DP applies to (BBQ: the ambiguous ones)
    before = gaps(s["r_chosen"].to_numpy() - add("chosen_group"), s["r_rejected"].to_numpy() - add("rejected_group"))
    before = before[before.index.get_level_values("s").isin(scope)]
    assert shifts and all(abs(shifts[f"{g}|{st}"] - v) < 1e-4 for (g, st), v in before.items())
    after = gaps(s["r_chosen"].to_numpy(), s["r_rejected"].to_numpy())
    after = after[after.index.get_level_values("s").isin(scope)]
    assert after.abs().mean() < before.abs().mean()


def test_expgrad_is_one_linear_head_that_load_scorer_reproduces(store: RunStore) -> None:
    from safetensors.torch import load_file

    from faro_core.evaluate.metrics import scores_for_data

    run = baseline_run(store, "expgrad", ["dp"])
    sd = load_file(str(run.file("model.safetensors")))
    assert set(sd) == {"net.0.weight", "net.0.bias"} and float(sd["net.0.bias"].abs().sum()) == 0.0
    assert run.read("model.json")["hidden"] == 0 and run.read("model.json")["expgrad"]["support"] >= 1
    ext = scores_for_data(run, DATA or "demo", limit=30)
    saved = pd.read_parquet(run.file("scores.parquet")).set_index("pair_id").loc[ext["pair_id"]]
    assert np.allclose(ext["r_chosen"], saved["r_chosen"], atol=1e-4)
    assert torch.isfinite(sd["net.0.weight"]).all()


def test_expgrad_rejects_cf(store: RunStore) -> None:
    with pytest.raises(FaroError):
        train(FaroConfig(**{**BASE.to_dict(), "method": "expgrad", "constraints": ["cf"]}), store, progress=False)


def test_mixture_head_is_the_weighted_sum_of_its_heads() -> None:
    """fairlearn's mixture of MLP heads collapses into one wider head with exactly the mixture's rewards."""
    from faro_core.models.reward import HeadRewardModel
    from faro_core.train.expgrad import mixture_head

    torch.manual_seed(0)
    heads = [HeadRewardModel(12, 8) for _ in range(3)]
    q = [0.5, 0.3, 0.2]
    mix = mixture_head(heads, q)
    x = torch.randn(40, 12)
    with torch.no_grad():
        want = sum(w * h(x) for h, w in zip(heads, q))
        assert mix.hidden == 24 and torch.allclose(mix(x), want, atol=1e-6)
    with pytest.raises(FaroError):
        mixture_head(heads, q[:2])


def test_pair_head_classifier_fits_weighted_pairs_and_clones() -> None:
    """The estimator fairlearn fits each round: learns r(phi1) > r(phi2) from labelled pairs, honours sample
    weights (the reduction's reweighting is all it has to act through) and survives sklearn's clone."""
    from sklearn.base import clone

    from faro_core.train.expgrad import PairHeadClassifier

    gen = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(400, 6, generator=gen), torch.randn(400, 6, generator=gen)
    truth = (x1[:, 0] > x2[:, 0]).int().numpy()  # the better response has the larger first feature
    X = torch.cat([x1, x2], 1).numpy()
    noisy = truth.copy()
    noisy[:200] = 1 - noisy[:200]  # half the labels flipped ...
    w = np.r_[np.zeros(200), np.ones(200)]  # ... and weighted out
    est = clone(PairHeadClassifier(hidden=8, epochs=30, batch_size=64, lr=1e-2))
    assert est.get_params()["hidden"] == 8
    acc = (est.fit(X, noisy, sample_weight=w).predict(X) == truth).mean()
    assert acc > 0.9, acc
    flipped = (clone(est).fit(X, noisy, sample_weight=1 - w).predict(X) == truth).mean()
    assert flipped < 0.1, flipped
    with pytest.raises(FaroError, match="side by side"):
        est.predict(X[:, :5])


def test_expgrad_with_the_faro_head_writes_a_loadable_mlp_run(store: RunStore) -> None:
    """expgrad_base='head': the reduction fits Faro's MLP head each round; the run is one MLP head (rounds side
    by side) that the scorer reproduces, under a run id of its own."""
    from faro_core.evaluate.metrics import scores_for_data
    from faro_core.studies.grid import run_id_for

    cfg = FaroConfig(**{**BASE.to_dict(), "method": "expgrad", "constraints": ["eo"], "expgrad_base": "head"})
    run = train(cfg, store, progress=False)
    meta = run.read("model.json")
    assert meta["expgrad"]["base"] == "head" and meta["hidden"] == BASE.head_hidden * meta["expgrad"]["support"]
    ext = scores_for_data(run, DATA or "demo", limit=30)
    saved = pd.read_parquet(run.file("scores.parquet")).set_index("pair_id").loc[ext["pair_id"]]
    assert np.allclose(ext["r_chosen"], saved["r_chosen"], atol=1e-4)
    linear = FaroConfig(**{**cfg.to_dict(), "expgrad_base": "linear"})
    assert run_id_for(cfg) != run_id_for(linear)
    from faro_core.results.table import config_columns, family_label

    assert config_columns(run)["method"] == "expgrad_head" and family_label(run.config) == "ExpGrad (MLP head)"
    with pytest.raises(FaroError, match="expgrad_base"):
        FaroConfig(method="expgrad", expgrad_base="forest")


def test_cli_expgrad_base_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`faro train --method expgrad --expgrad-base head` fits the MLP head; a bad value is a usage error."""
    import json

    from faro_core.cli import main as faro_main

    argv = ["train", "--data", "demo-mini", "--method", "expgrad", "--constraint", "eo", "--epochs", "1", "--min-count", "5",
            "--runs-dir", str(tmp_path), "--quiet", "--json"] + (["--data", DATA] if DATA else [])
    assert faro_main(argv + ["--expgrad-base", "head"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert RunStore(tmp_path).get(out["run_id"]).read("model.json")["expgrad"]["base"] == "head"
    with pytest.raises(SystemExit):
        faro_main(argv + ["--expgrad-base", "forest"])


# ---------------------------------------------------------------------------------------------------
# group DRO and the alpha-fair regulariser (#15 item 3): trained long enough for margins to spread
# ---------------------------------------------------------------------------------------------------
TRAINED = FaroConfig(data=DATA, epochs=30, lr=1e-2, head_hidden=16, min_count=5)


def trained_run(store: RunStore, method: str, **options: Any) -> Any:
    run_id = f"t-{method}-" + "-".join(f"{k}{v}" for k, v in options.items())
    if store.has(run_id) and store.get(run_id).status == "done":
        return store.get(run_id)
    return train(FaroConfig(**{**TRAINED.to_dict(), "method": method, **options}), store, run_id=run_id,
                 progress=False)


def _train_frame(run: Any) -> tuple[np.ndarray, pd.Series]:
    """(margins r(chosen) - r(rejected) of the training pairs, BT loss per named group of those pairs)."""
    s = pd.read_parquet(run.file("scores.parquet"))
    s = s[s["split"] == "train"]
    m = (s["r_chosen"] - s["r_rejected"]).to_numpy()
    per_group = pd.Series(np.logaddexp(0.0, -m)).groupby(s["group"].fillna("(none)").to_numpy()).mean()
    return m, per_group


def test_group_dro_weights_the_worst_groups_and_lowers_the_worst_training_loss(store: RunStore) -> None:
    """Same data and seed as BT: group DRO's exponentiated-gradient weights end far from uniform, ranked like
    the groups' training losses (Spearman > 0.5; measured 0.72), and the worst group's training loss is lower
    than BT's (measured 0.252 vs 0.266 on the demo). The weights are stored in model.json."""
    bt, dro = trained_run(store, "bt"), trained_run(store, "group_dro")
    _, loss_bt = _train_frame(bt)
    _, loss_dro = _train_frame(dro)
    w = pd.Series(dro.read("model.json")["dro_weights"])
    assert w.sum() == pytest.approx(1.0) and set(w.index) == set(loss_dro.index)
    assert w.max() > 1.2 / len(w) and w.min() < 0.9 / len(w)
    assert w.rank().corr(loss_dro.reindex(w.index).rank()) > 0.5
    assert loss_dro.max() < loss_bt.max()
    other = pd.read_parquet(dro.file("scores.parquet"))["r_chosen"]
    assert not np.allclose(other, pd.read_parquet(bt.file("scores.parquet"))["r_chosen"], atol=1e-4)


def test_alpha_fair_regulariser_narrows_the_spread_of_margins(store: RunStore) -> None:
    """The alpha-fair utility (alpha 2) pushes the worst-ranked pairs hardest: the training margins' standard
    deviation is smaller than BT's (measured 1.82 vs 2.25), with no group label used; the logged loss is BT's
    minus the utility, which is <= 0 at alpha = 2, so loss >= bt_loss at every step."""
    bt, reg = trained_run(store, "bt"), trained_run(store, "fair_reg")
    m_bt, _ = _train_frame(bt)
    m_reg, _ = _train_frame(reg)
    assert m_reg.std() < 0.9 * m_bt.std()
    hist = reg.history()
    assert all(h["loss"] >= h["bt_loss"] - 1e-6 for h in hist) and any(h["loss"] > h["bt_loss"] + 1e-3 for h in hist)
    assert reg.metrics()["test"]["gold_accuracy"] >= bt.metrics()["test"]["gold_accuracy"] - 0.05


def test_group_dro_resumes_from_its_checkpointed_weights(store: RunStore) -> None:
    """Interrupted at step 13 and resumed from the step-10 checkpoint, which holds the group weights: the run
    ends exactly where an uninterrupted one does (weights restarted at uniform would not)."""
    cfg = FaroConfig(**{**BASE.to_dict(), "method": "group_dro", "dro_eta": 1.0, "epochs": 4, "batch_size": 64,
                        "ckpt_every": 5})
    ref = train(cfg, store, run_id="dro-ref", progress=False)

    def stop_at(row: dict[str, Any]) -> None:
        if row["step"] == 13:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, store, run_id="dro-cut", progress=False, on_step=stop_at)
    done = train(None, store, run_id="dro-cut", resume=True, progress=False)
    assert done.read("model.json")["dro_weights"] == pytest.approx(ref.read("model.json")["dro_weights"])
    a = pd.read_parquet(ref.file("scores.parquet"))["r_chosen"].to_numpy()
    b = pd.read_parquet(done.file("scores.parquet"))["r_chosen"].to_numpy()
    assert np.array_equal(a, b)


def test_new_baselines_from_the_cli_and_the_sweep_grid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--method group_dro --dro-eta / --method fair_reg --fair-alpha reach the config; a sweep's --baselines
    expands each into one run per seed; the post-hoc shift is labelled an oracle."""
    import json

    from faro_core.cli import main as faro_main
    from faro_core.train.methods import METHODS

    argv = ["train", "--epochs", "1", "--min-count", "5", "--runs-dir", str(tmp_path), "--quiet", "--json"] + (
        ["--data", DATA] if DATA else [])
    assert faro_main(argv + ["--method", "group_dro", "--dro-eta", "0.2"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert RunStore(tmp_path).get(out["run_id"]).config["dro_eta"] == 0.2
    assert faro_main(argv + ["--method", "fair_reg", "--fair-alpha", "3"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert RunStore(tmp_path).get(out["run_id"]).config["fair_alpha"] == 3.0
    assert faro_main(argv + ["--method", "group_dro", "--dro-eta", "0"]) == 2  # a clear error, exit 2
    assert "dro-eta" in capsys.readouterr().err
    cfgs = baseline_configs(BASE, parse_baselines("group_dro,fair_reg"), ["dp"], [0.05], [0, 1])
    assert [c.method for c in cfgs] == ["group_dro", "group_dro", "fair_reg", "fair_reg"]
    assert METHODS["posthoc"].oracle and "oracle" in METHODS["posthoc"].label
    assert not any(METHODS[m].oracle for m in ("group_dro", "fair_reg", "reweight"))


def test_new_options_leave_old_run_ids_alone() -> None:
    """dro_eta / fair_alpha / fair_weight are left out of the run-id hash at their defaults, so finished sweeps
    keep their ids; a stored config without them loads with the defaults."""
    from faro_core.studies.grid import run_id_for

    cfg = FaroConfig(constraints=["dp"], epsilon=0.05)
    old = {k: v for k, v in cfg.resolved().to_dict().items() if k not in ("dro_eta", "fair_alpha", "fair_weight")}
    assert run_id_for(FaroConfig.from_dict(old)) == run_id_for(cfg)
    assert run_id_for(FaroConfig(**{**cfg.to_dict(), "method": "group_dro", "dro_eta": 0.5})) != run_id_for(
        FaroConfig(**{**cfg.to_dict(), "method": "group_dro"}))
