"""Held-out claims on questions the model never saw: template splits, cluster-robust certificates, cluster
permutations and bootstraps, the paired Delta P, data-seed grids and the selection-only arm."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from faro_core.data import load
from faro_core.data.splits import cluster_ids, split_by, split_by_item
from faro_core.errors import DataError, FaroError
from faro_core.evaluate.certify import MIN_CLUSTERS, certify_role, design_effect
from faro_core.evaluate.paired import cluster_mean_interval, paired_role_difference, seed_level
from faro_core.fairness.chance import role_chance
from faro_core.paths import SHARED_DATA
from faro_core.studies.grid import SweepSpec, grid, run_id_for
from faro_core.train.config import FaroConfig, migrate_config
from faro_core.train.inputs import load_training_data
from faro_core.train.methods import method_of

BBQ = SHARED_DATA / "bbq"


def _leaked(df: pd.DataFrame) -> set[str]:
    train = set(df.loc[df["split"] == "train", "cluster"])
    return train & (set(df.loc[df["split"] == "test", "cluster"]) | set(df.loc[df["split"] == "val", "cluster"]))


@pytest.mark.parametrize("data_seed", range(10))
def test_no_test_template_occurs_in_train_on_the_demo(data_seed):
    """The embedded demo splits by template by default; every seed keeps test and validation templates out
    of train, and every category has test templates."""
    cfg = FaroConfig(data="demo", skew=0.3, data_seed=data_seed).resolved()
    assert cfg.split_by == "template" and (cfg.val_frac, cfg.test_frac) == (0.2, 0.2)
    _, df, _ = load_training_data(cfg)
    assert not _leaked(df)
    expect = (df["category"].astype(str) + "/" + df["question_index"].astype(str)).to_numpy()
    assert (df["cluster"].to_numpy() == expect).all()
    test = df[df["split"] == "test"]
    assert test.groupby("category")["cluster"].nunique().min() >= 5
    assert test["cluster"].nunique() >= 25


def test_no_test_template_occurs_in_train_on_bbq():
    """The study's data: the 5 published BBQ categories, data seeds 0..9 (the study's draws)."""
    if not BBQ.exists():
        pytest.skip(f"{BBQ} is absent (the shared BBQ data)")
    base = FaroConfig(data=str(BBQ), format="bbq", skew=0.3)
    data = load(str(BBQ), format="bbq", skew=0.3)
    for seed in range(10):
        parts = split_by(data, base.resolved().split_by, seed=seed)
        df = pd.concat([p.df.assign(split=n) for n, p in parts.items()], ignore_index=True)
        assert not _leaked(df), seed
        assert df.loc[df["split"] == "test", "cluster"].nunique() == 25, seed


def test_split_units_and_their_errors():
    d = load("demo-mini")
    by_item = split_by(d, "item", 0.15, 0.15, seed=3)
    old = split_by_item(d, 0.15, 0.15, seed=3)
    for k in ("train", "val", "test"):  # split_by("item") is the item split exactly (stored runs keep meaning)
        assert list(by_item[k].df["pair_id"]) == list(old[k].df["pair_id"])
        assert (by_item[k].df["cluster"] == by_item[k].df["item_id"]).all()
    d.df["conv"] = d.df["item_id"].str.slice(0, 6)
    col = split_by(d, "column:conv", seed=0)
    sets = {k: set(v.df["conv"]) for k, v in col.items()}
    assert not (sets["train"] & sets["test"]) and not (sets["train"] & sets["val"])
    with pytest.raises(DataError, match="split column 'nope' is not a column"):
        cluster_ids(d.df, "column:nope")
    with pytest.raises(DataError, match="unknown split unit 'word'"):
        split_by(d, "word")
    with pytest.raises(FaroError, match="split_by must be item, template or column:NAME"):
        FaroConfig(split_by="templates")
    gen = pd.DataFrame({"item_id": ["a"], "category": ["x"]})
    with pytest.raises(DataError, match="split by template needs the column"):
        cluster_ids(gen, "template")


def test_summary_counts_clusters_and_warns_below_20(capsys):
    from faro_core.cli import main as faro_main

    assert faro_main(["data", "summary", "demo-mini", "--split-by", "template", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["splits"]["unit"] == "template" and out["splits"]["shared"] == 0
    assert out["splits"]["clusters"]["test"] < 20
    assert any("fewer than 20" in w for w in out["warnings"])
    assert faro_main(["data", "summary", "demo", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["splits"]["unit"] == "template" and out["splits"]["clusters"]["test"] >= 25


def test_stored_item_split_configs_keep_their_meaning_and_run_ids():
    """A config stored before split units existed reads split_by = item, and its run id is unchanged (the
    field is hashed only off its legacy value); a new BBQ config splits by template under a new id."""
    old = {k: v for k, v in FaroConfig(data="demo", skew=0.3, val_frac=0.15, test_frac=0.15).to_dict().items()
           if k != "split_by"}
    cfg = FaroConfig(**migrate_config(old))
    assert cfg.split_by == "item"
    explicit = FaroConfig(data="demo", skew=0.3, split_by="item")
    assert run_id_for(cfg) == run_id_for(explicit)
    assert explicit.resolved().val_frac == 0.15
    assert run_id_for(FaroConfig(data="demo", skew=0.3)) != run_id_for(cfg)
    assert FaroConfig(data="some.csv").resolved().split_by == "item"


# --- inference ------------------------------------------------------------------------------------------
def _clustered_items(rng, n_clusters: int, per: int, p: float, spread: float) -> pd.DataFrame:
    """Ambiguous role items whose biased-win probability varies by template (cluster effect ``spread``)."""
    rows = []
    for g in range(n_clusters):
        pg = float(np.clip(p + spread * rng.normal(), 0.02, 0.98))
        for i in range(per):
            x = float(rng.random() < pg)
            rows.append({"item_id": f"t{g}-{i}", "cluster": f"t{g}", "x_dp": x, "x_eo": np.nan,
                         "correct_role": "unknown", "category": "c", "question_polarity": "neg",
                         "context_condition": "ambig"})
    return pd.DataFrame(rows)


def test_design_effect_matches_its_definition():
    rng = np.random.default_rng(0)
    it = _clustered_items(rng, 30, 20, 0.6, 0.2)
    x, g = it["x_dp"].to_numpy(), it["cluster"].to_numpy()
    d = design_effect(x, g)
    e = it.assign(r=x - x.mean()).groupby("cluster")["r"].sum().to_numpy()
    v_cr = 30 / 29 * np.sum(e ** 2) / len(x) ** 2
    assert math.isclose(d["design_effect"], v_cr / (np.var(x, ddof=1) / len(x)), rel_tol=1e-9)
    assert d["design_effect"] > 2 and math.isclose(d["n_eff"], len(x) / d["design_effect"])
    iid = design_effect(rng.random(600) < 0.5, np.repeat(np.arange(30), 20))
    assert iid["n_eff"] <= 600 and iid["design_effect"] >= 1.0  # truncated at ICC 0, capped at n


def test_cluster_certificate_is_wider_states_its_estimand_and_needs_20_clusters():
    rng = np.random.default_rng(1)
    it = _clustered_items(rng, 30, 20, 0.52, 0.15)
    cl = certify_role(it, ["dp"], 0.1, unit="cluster", split_by="template")
    item = certify_role(it, ["dp"], 0.1, unit="item", split_by="template")
    rc, ri = cl["bounds"][0], item["bounds"][0]
    assert rc["upper"] > ri["upper"] and rc["n_eff"] < ri["n_eff"] == len(it)
    assert rc["clusters"] == 30 and "unseen templates" in rc["estimand"] and "unseen templates" in cl["estimand"]
    assert "overstates" in ri["estimand"]
    few = certify_role(_clustered_items(rng, MIN_CLUSTERS - 1, 40, 0.5, 0.0), ["dp"], 0.5, unit="cluster",
                       split_by="template")
    assert few["bounds"][0]["upper"] < 0.5 and not few["certified"]
    assert f"fewer than {MIN_CLUSTERS}" in few["why_not"]


def test_dp_permutations_flip_whole_templates():
    """A template-level effect with no overall bias: flipping items one by one calls the (template-driven)
    spread significant far more often than flipping templates."""
    rng = np.random.default_rng(2)
    small_item, small_cluster = 0, 0
    for rep in range(20):
        it = _clustered_items(rng, 25, 30, 0.5, 0.3)
        by_item = role_chance(it.assign(cluster=it["item_id"]), kinds=["dp"], n_perm=400, seed=rep)["dp"]
        by_cluster = role_chance(it, kinds=["dp"], n_perm=400, seed=rep)["dp"]
        assert "per template" in by_cluster["permuted"] and by_cluster["clusters"] == 25
        small_item += by_item["p_value"] < 0.05
        small_cluster += by_cluster["p_value"] < 0.05
    assert small_cluster <= 3 < small_item


def test_paired_difference_and_its_cluster_interval():
    rng = np.random.default_rng(3)
    a = _clustered_items(rng, 25, 16, 0.7, 0.1)
    b = a.assign(x_dp=np.where(rng.random(len(a)) < 0.3, 0.0, a["x_dp"]))
    r = paired_role_difference(a, b)
    d = a["x_dp"].to_numpy() - b["x_dp"].to_numpy()
    assert math.isclose(r["value"], d.mean()) and math.isclose(r["p_a"] - r["p_b"], r["value"])
    assert r["lo"] < r["value"] < r["hi"] and r["clusters"] == 25 and r["unit"] == "template"
    assert r["lo"] > 0  # the planted drop is found
    with pytest.raises(FaroError, match="not scored on the same held-out items"):
        paired_role_difference(a, b.iloc[5:])
    flat = cluster_mean_interval(np.zeros(10), np.arange(10))
    assert flat["value"] == 0 and flat["lo"] == flat["hi"] == 0


def test_seed_level_test_is_one_sided_t():
    from scipy import stats

    x = [0.036, 0.005, 0.131, -0.005, 0.013]
    r = seed_level(x, "greater")
    assert math.isclose(r["p"], stats.ttest_1samp(x, 0).pvalue / 2, rel_tol=1e-9)
    assert r["lo"] < 0 < r["hi"] and r["n"] == 5


# --- grids ------------------------------------------------------------------------------------------------
def test_sweep_spec_crosses_data_seeds_with_training_seeds():
    spec = SweepSpec(base=FaroConfig(data="demo", skew=0.3), kinds=["dp"], epsilons=[0.05], seeds=[0, 1],
                     data_seeds=[3, 4], baselines=["bt", "select_only"])
    cfgs = grid(spec)
    assert len(cfgs) == 2 * 2 * 3
    assert {(c.data_seed, c.seed) for c in cfgs} == {(d, s) for d in (3, 4) for s in (0, 1)}
    assert len({run_id_for(c) for c in cfgs}) == len(cfgs)
    sel = [c for c in cfgs if method_of(c.resolved().to_dict()) == "select_only"]
    assert sel and all(c.fixed_lambda == 0.0 and c.constraint_batch_size == 0 for c in sel)
    with pytest.raises(FaroError, match="either data_seeds or redraw_data"):
        grid(SweepSpec(base=FaroConfig(), data_seeds=[1], redraw_data=True))


def test_selection_only_trains_faros_path_with_its_multipliers_at_zero(tmp_path):
    """The selection-only arm's multipliers stay 0 and it draws Faro's batches (whole items under a role
    constraint), so its training steps are Faro-DP(role)'s, step for step, until Faro's first multiplier rises:
    against it, Faro's gain is the penalty's, not the batches' or the selection's. Only the iterate it returns
    may differ from BT's (Faro's tiers)."""
    from faro_core.store.runs import RunStore
    from faro_core.train.loop import train

    store = RunStore(tmp_path)
    base = {"data": "demo-mini", "attribute": "role", "epochs": 8, "mode": "head", "min_count": 5, "epsilon": 0.0,
            "constraints": ["dp"]}
    faro = train(FaroConfig(**base, name="faro"), store, progress=False)
    sel = train(FaroConfig(**base, method="fixed_lambda", fixed_lambda=0.0, constraint_batch_size=0, name="sel"),
                store, progress=False)
    assert method_of(sel.config) == "select_only"
    hf, hs = faro.history(), sel.history()
    assert [r["step"] for r in hf] == [r["step"] for r in hs]
    first = next((r["step"] for r in hf if r.get("lambda_max", 0.0) > 0), None)
    assert first is not None, "Faro's multiplier never rose: the test shows nothing"
    # a step's loss is logged before the dual step that follows it, so rows up to the first raised one agree
    before = [(a["bt_loss"], b["bt_loss"]) for a, b in zip(hf, hs) if a["step"] <= first]
    assert len(before) >= 2 and np.allclose(*zip(*before), rtol=0, atol=1e-6), before
    after = [(a["bt_loss"], b["bt_loss"]) for a, b in zip(hf, hs) if a["step"] > first]
    assert after and not np.allclose(*zip(*after), rtol=0, atol=1e-6)  # then the penalty moves Faro off it
    assert max(s.get("lambda_max", 0.0) for s in hs) == 0.0
    assert sel.read("metrics.json")["selected_by"] in ("feasible", "chance", "least_violating")


def test_faro_sweep_takes_data_seeds():
    from faro_core.cli import build_parser
    from faro_core.cli.sweep_cmd import spec_from_args

    args = build_parser().parse_args(["sweep", "--data-seeds", "0-2", "--seeds", "0,1", "--baselines", "bt"])
    cfgs = grid(spec_from_args(args))
    assert sorted({(c.data_seed, c.seed) for c in cfgs}) == [(d, s) for d in range(3) for s in range(2)]
