"""The stereotype-role attribute (issue #15): roles of BBQ answers, the per-item table and its violations worked
out by hand, the trainer constraints against the table, the linearized penalty's reduction to item terms, and a
trained run where Faro-DP(role) lowers the role violation."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from faro_core.data.bbq import items_to_pairs, response_role
from faro_core.errors import DataError
from faro_core.evaluate.metrics import frame_to_batch
from faro_core.fairness.constraint_set import ConstraintSet
from faro_core.fairness.pairs import GroupIndex
from faro_core.fairness.role import (
    RoleOdds,
    RoleParity,
    add_role_columns,
    role_items,
    role_report,
    role_violations,
)
from faro_core.fairness.role_stats import RoleItemPlan, _item_arrays, _violations
from faro_core.train.proxy_gda import ProxyGDA

U, B, C = None, "biased", "counter"


def _pairs(item: str, cond: str, rewards: dict, correct: str | None, skewed: bool = False,
           category: str = "Age") -> list[dict]:
    """The two pairs of one BBQ-style item: correct answer against each wrong one (skewed: the biased answer is
    the observed chosen one, against "unknown" (gold 0) and against the counter answer (gold NaN))."""
    role = {"biased": B, "counter": C, "unknown": U}
    if skewed:
        sides = [("biased", "unknown", 0.0), ("biased", "counter", math.nan)]
    else:
        sides = [(correct, w, 1.0) for w in ("biased", "counter", "unknown") if w != correct]
    return [{"item_id": item, "pair_id": f"{item}/{a}-{b}", "context_condition": cond, "category": category,
             "question_polarity": "neg", "split": "test", "chosen_role": role[a], "rejected_role": role[b],
             "r_chosen": rewards[a], "r_rejected": rewards[b], "gold": g, "group": "x", "chosen_group": None,
             "rejected_group": None, "stratum": cond, "cf_r_chosen": math.nan, "cf_r_rejected": math.nan}
            for a, b, g in sides]


def hand_table() -> pd.DataFrame:
    """Four ambiguous and four disambiguated items whose numbers are worked out in the tests."""
    rows = []
    # ambiguous (correct: unknown). x_dp: 1, 0, 1/2 (tie), 1 (a skewed item)
    rows += _pairs("a1", "ambig", {"unknown": 2.0, "biased": 1.0, "counter": 0.5}, "unknown")
    rows += _pairs("a2", "ambig", {"unknown": 0.5, "biased": 0.0, "counter": 0.8}, "unknown")
    rows += _pairs("a3", "ambig", {"unknown": 1.0, "biased": 1.0, "counter": 1.0}, "unknown")
    rows += _pairs("a4", "ambig", {"unknown": 1.0, "biased": 3.0, "counter": 2.0}, None, skewed=True)
    # disambiguated. x_eo: 1, 0 (correct biased), 1/2 (two-way tie at the top), 0 (correct counter)
    rows += _pairs("d1", "disambig", {"biased": 2.0, "counter": 1.0, "unknown": 0.0}, "biased")
    rows += _pairs("d2", "disambig", {"biased": 1.0, "counter": 2.0, "unknown": 0.0}, "biased")
    rows += _pairs("d3", "disambig", {"counter": 1.0, "biased": 1.0, "unknown": 0.0}, "counter")
    rows += _pairs("d4", "disambig", {"counter": 0.0, "biased": -1.0, "unknown": 0.5}, "counter")
    return pd.DataFrame(rows)


def test_roles_of_bbq_answers_follow_polarity_and_skew():
    """biased = the target in a negative question, the other group in a non-negative one; "unknown" has none;
    skew relabelling moves the roles with the answers."""
    assert response_role(0, 0, 2) == "biased" and response_role(1, 0, 2) == "counter"
    assert response_role(2, 0, 2) is None and response_role(1, pd.NA, 2) is None
    items = pd.DataFrame([{
        "item_id": f"Age-{k}", "category": "Age", "example_id": k, "question_index": "1", "context": "c",
        "question": "q", "answers": ["the old man", "the boy", "unknown"], "answer_tags": ["old", "nonOld", None],
        "answer_terms": ["old", "boy", "unknown"], "label": 2, "unknown_idx": 2, "target_idx": 0,
        "biased_idx": 0 if pol == "neg" else 1, "question_polarity": pol, "context_condition": "ambig",
        "stereotyped_groups": ["old"], "subcategory": "None", "source_file": f"f:{k}"}
        for k, pol in enumerate(["neg", "nonneg"])])
    items["biased_idx"] = items["biased_idx"].astype("Int64")
    items["target_idx"] = items["target_idx"].astype("Int64")
    pairs = items_to_pairs(items, twins=False)
    neg, non = pairs[pairs["question_polarity"] == "neg"], pairs[pairs["question_polarity"] == "nonneg"]
    assert list(neg["rejected_role"]) == ["biased", "counter"] and list(non["rejected_role"]) == ["counter", "biased"]
    assert pairs["chosen_role"].isna().all()  # correct = unknown
    derived = add_role_columns(pairs.drop(columns=["chosen_role", "rejected_role"]))
    assert derived["rejected_role"].tolist() == pairs["rejected_role"].tolist()
    from faro_core.data.schema import PreferenceData
    from faro_core.data.skew import apply_skew

    sk = apply_skew(PreferenceData(pairs, name="t", strata=["context_condition"]), 1.0, seed=0).df
    assert (sk["chosen_role"] == "biased").all()
    assert sorted(sk["rejected_role"].fillna("unknown")) == ["counter", "counter", "unknown", "unknown"]


def test_role_columns_of_a_users_table_and_errors():
    df = pd.DataFrame({"item_id": ["i", "i"], "mine_c": ["Biased", ""], "mine_r": ["counter", "counter"]})
    out = add_role_columns(df, ["mine_c", "mine_r"])
    assert out["chosen_role"].tolist() == ["biased", None] and out["rejected_role"].tolist() == ["counter"] * 2
    with pytest.raises(DataError, match="absent"):
        add_role_columns(df, ["nope", "mine_r"])
    with pytest.raises(DataError, match="--attribute role needs"):
        add_role_columns(df[["item_id"]])


def test_role_items_and_violations_by_hand():
    items = role_items(hand_table()).set_index("item_id")
    assert items.loc["a4", "correct_role"] == "unknown" and items.loc["d3", "correct_role"] == "counter"
    assert items.loc[["a1", "a2", "a3", "a4"], "x_dp"].tolist() == [1.0, 0.0, 0.5, 1.0]
    assert items.loc[["d1", "d2", "d3", "d4"], "x_eo"].tolist() == [1.0, 0.0, 0.5, 0.0]
    assert items.loc["a1", "x_eo"] != items.loc["a1", "x_eo"] and items.loc["d1", "x_dp"] != items.loc["d1", "x_dp"]
    assert (items.loc["a4", "r_biased"], items.loc["a4", "r_counter"], items.loc["a4", "r_unknown"]) == (3, 2, 1)
    v = role_violations(items.reset_index())
    assert v["p_biased_over_counter"] == pytest.approx(2.5 / 4) and v["dp"] == pytest.approx(0.125)
    # against "unknown": biased 0, 0, 1/2 (tie), 1; counter 0, 1, 1/2, 1
    assert v["rate_biased_vs_unknown"] == pytest.approx(1.5 / 4)
    assert v["rate_counter_vs_unknown"] == pytest.approx(2.5 / 4)
    assert (v["acc_biased"], v["acc_counter"]) == (0.5, 0.25)
    assert v["eo_gap"] == pytest.approx(0.25) and v["eo"] == pytest.approx(0.125)
    assert (v["n_dp"], v["n_biased"], v["n_counter"]) == (4, 2, 2)
    small = role_violations(items.reset_index(), min_count=3)
    assert small["eo"] is None and small["dp"] == pytest.approx(0.125)  # 2 items per role < 3
    rep = role_report(hand_table(), n_boot=50, min_count=1)
    lo, hi = rep["interval"]["dp"]
    assert lo <= rep["dp"] <= hi and rep["cells"]["Age"]["dp"] == pytest.approx(0.125)


def test_the_item_table_ignores_row_order_and_the_bootstrap_reads_what_the_frame_path_gives():
    frame = hand_table()
    frame.loc[0, "r_chosen"] = math.nan  # a missing reward: the answer's mean is over the rewards present
    items = role_items(frame)
    assert items["item_id"].tolist() == sorted(items["item_id"])
    shuffled = role_items(frame.sample(frac=1.0, random_state=3))
    pd.testing.assert_frame_equal(items, shuffled)
    assert items.set_index("item_id").loc["a1", "r_unknown"] == 2.0  # its other pair's reward
    # a resample's numbers (the bootstrap's numpy path) equal role_violations of the resampled frame
    rng = np.random.default_rng(0)
    cols = _item_arrays(items)
    for _ in range(5):
        rows = rng.integers(0, len(items), len(items))
        fast = _violations({k: a[rows] for k, a in cols.items()}, np.ones(len(rows), dtype=bool), 1)
        assert fast == role_violations(items.iloc[rows].reset_index(drop=True))
    by_cell = role_violations(items.assign(category=["Age", "Race"] * 4), by=["category"])
    assert list(by_cell["cells"]) == ["Age", "Race"]
    assert by_cell["cells"]["Race"] == role_violations(items.iloc[1::2].reset_index(drop=True))


def test_an_item_plan_reads_other_rewards_as_the_frame_path_does():
    """The batched engine builds a RoleItemPlan once per split and reads each member's rewards through it: the
    item table and the report equal the frame path's for any rewards, ties and missing ones included (the
    plan rebuilds its reward-free columns when another set of items keeps both answers)."""
    frame = hand_table()
    plan = RoleItemPlan(frame.drop(columns=["r_chosen", "r_rejected"]))
    rng = np.random.default_rng(1)
    for trial in range(6):
        rewards = rng.normal(size=(2, len(frame))).round(trial % 3)  # rounding to 0 decimals makes ties
        if trial >= 3:
            rewards[0, rng.integers(0, len(frame), 3)] = math.nan  # answers without a reward: fewer items
        rows = frame.assign(r_chosen=rewards[0], r_rejected=rewards[1])
        pd.testing.assert_frame_equal(role_items(rows, plan), role_items(rows))
        assert role_report(rows, n_boot=20, plan=plan) == role_report(rows, n_boot=20)


def test_the_plan_report_equals_the_frame_report_in_value_and_order():
    """Without intervals, a plan's report is computed from the item table's columns without building the frame
    (the batched engine's final pass measures every distinct iterate with it): the same dict as the frame
    path, keys in the same order (metrics.json's bytes), with cells by one column or two, at any minimum."""
    frame = hand_table()
    codes = pd.factorize(frame["item_id"].astype(str), sort=True)[0]
    frame["category"] = np.array(["Race", "Age", "Religion"])[codes % 3]  # one category per item
    plan = RoleItemPlan(frame.drop(columns=["r_chosen", "r_rejected"]))
    rng = np.random.default_rng(2)
    for trial in range(6):
        rewards = rng.normal(size=(2, len(frame))).round(trial % 3)
        if trial >= 3:
            rewards[1, rng.integers(0, len(frame), 3)] = math.nan
        rows = frame.assign(r_chosen=rewards[0], r_rejected=rewards[1])
        for by, min_count in ((("category",), 30), (("category",), 1), (("category", "context_condition"), 1),
                              ((), 1), (("no_such_column",), 1)):
            fast = role_report(rows, n_boot=0, plan=plan, by=by, min_count=min_count)
            slow = role_report(rows, n_boot=0, by=by, min_count=min_count)
            assert fast == slow and list(fast) == list(slow), (by, min_count)
            if by and by[0] == "category":
                assert list(fast["cells"]) == list(slow["cells"]) and len(fast["cells"]) > 1


def _role_index(df: pd.DataFrame) -> GroupIndex:
    return GroupIndex(response_groups=[], pair_groups=["x"], strata=sorted(df["stratum"].unique()),
                      dp_strata=["ambig"], attribute="role")


def test_trainer_constraints_measure_what_the_table_says():
    df = hand_table()
    index = _role_index(df)
    batch, _ = frame_to_batch(df, index)
    dp = RoleParity(epsilon=0.05, min_count=1).bind(index)
    eo = RoleOdds(epsilon=0.05, min_count=1).bind(index)
    assert dp.names() == ["dp[role|ambig]+", "dp[role|ambig]-"]
    assert dp.strict(batch).tolist() == pytest.approx([0.125, -0.125])
    # EO's cells: ambig (no biased / counter correct answer: not estimable, 0) and disambig
    assert eo.strict(batch).tolist() == pytest.approx([0.0, 0.125, 0.0, -0.125])
    # the measuring set of a role run holds these two (and CF)
    from faro_core.fairness.constraint_set import all_constraints

    kinds = {type(c).__name__ for c in all_constraints(index, 1).constraints}
    assert {"RoleParity", "RoleOdds", "CounterfactualFairness"} == kinds
    # the trainer's chance tier reads the same items off a batch
    from faro_core.fairness.chance import role_chance
    from faro_core.fairness.role import batch_role_items

    ch = role_chance(batch_role_items(batch, index), n_perm=200, strata=("stratum",))
    assert ch["dp"]["observed"] == pytest.approx(0.125) and ch["eo"]["observed"] == pytest.approx(0.125)


def random_items(n_items: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n_items):
        r = {"biased": rng.normal(0.3), "counter": rng.normal(), "unknown": rng.normal(1.0)}
        if k % 2:
            rows += _pairs(f"a{k}", "ambig", r, "unknown")
        else:
            rows += _pairs(f"d{k}", "disambig", r, "biased" if k % 4 else "counter")
    return pd.DataFrame(rows)


@pytest.mark.parametrize("cls", [RoleParity, RoleOdds])
def test_linearized_item_penalty_equals_the_lagrangian_up_to_a_constant(cls):
    """With the training split's cell counts fixed, sum_j lambda_j g~_j is linear in one smooth term per item:
    the item penalty on a batch holding every item (factor 1) has the Lagrangian's value up to a constant and
    exactly its gradient in every reward."""
    df = random_items(40, seed=1)
    index = _role_index(df)
    batch, _ = frame_to_batch(df, index)
    con = cls(epsilon=0.05, min_count=1).bind(index)
    cs = ConstraintSet([con])
    cs.fix_cells(batch)
    gda = ProxyGDA(cs)
    gda.lam = torch.rand(len(cs)) * 0.5
    gda.set_pairs(batch, n_train=len(df))
    grads = []
    for which in ("lagrangian", "items"):
        r_c = batch.r_chosen.clone().requires_grad_(True)
        r_r = batch.r_rejected.clone().requires_grad_(True)
        b = type(batch)(**{**batch.__dict__, "r_chosen": r_c, "r_rejected": r_r})
        if which == "lagrangian":
            value = (gda.lam * cs.proxy(b, min_count=1)).sum()
        else:
            value = gda.item_penalty(b, torch.arange(len(df)), factor=1.0)
        value.backward()
        grads.append((float(value.detach()), torch.cat([r_c.grad, r_r.grad])))
    (v_l, g_l), (v_i, g_i) = grads
    assert g_l.abs().sum() > 0
    assert torch.allclose(g_l, g_i, atol=1e-6)
    # the constant: DP's anchor 1/2 (-lambda_c / 2); EO has none
    lam_c = gda.lam[:con.n_cells] - gda.lam[con.n_cells:]
    const = float(-0.5 * lam_c.sum()) if cls is RoleParity else 0.0
    assert v_l == pytest.approx(v_i + const, abs=1e-5)


def _item_penalty_grad(df: pd.DataFrame, index: Any, tens: Any) -> tuple[Callable[[torch.Tensor, float], torch.Tensor],
                                                                          list[Any]]:
    """(grad, constraints): grad(idx, factor) is the gradient of DP(role)'s item penalty (lambda 0.3, epsilon 0) on the pairs ``idx``
    scaled by ``factor``, with respect to every pair's stored rewards [2N]."""
    batch, _ = frame_to_batch(df, index)
    cs = ConstraintSet([RoleParity(epsilon=0.0, min_count=1).bind(index)])
    cs.fix_cells(batch)
    gda = ProxyGDA(cs)
    gda.lam = torch.tensor([0.3, 0.0])
    gda.set_pairs(batch, n_train=len(df))

    def grad(idx: torch.Tensor, factor: float) -> torch.Tensor:
        r = torch.from_numpy(np.concatenate([df["r_chosen"].to_numpy(), df["r_rejected"].to_numpy()])).float()
        r.requires_grad_(True)
        n = len(df)
        b = tens.batch(idx, (r[:n][idx], r[n:][idx], torch.full((len(idx),), math.nan),
                             torch.full((len(idx),), math.nan)))
        gda.item_penalty(b, idx, factor).backward()
        return r.grad

    return grad, cs.constraints


def test_item_batches_are_an_unbiased_estimate_of_the_item_penalty():
    """Random batches of whole items, scaled by (pool / batch), average to the full-split penalty gradient
    (the in-gradient scale is the batch's, so close rather than equal)."""
    from faro_core.fairness.pairs import PairTensors
    from faro_core.train.role_batches import RoleItemBatches

    df = random_items(200, seed=2).assign(split="train")
    index = _role_index(df)
    tens = PairTensors.from_frame(df.assign(cf_chosen=None, cf_rejected=None, cf_prompt=None, pair_id=df["pair_id"]),
                                  index)
    grad, constraints = _item_penalty_grad(df, index, tens)
    rb = RoleItemBatches(tens, torch.arange(len(df)), constraints, n_items=20, seed=0)
    assert len(rb) == 100 and rb.factor == 5.0

    full = grad(torch.arange(len(df)), 1.0)
    mean = torch.stack([grad(rb.draw(s), rb.factor) for s in range(300)]).mean(0)
    cos = float(torch.nn.functional.cosine_similarity(full, mean, dim=0))
    assert cos > 0.95


def test_bt_batches_by_whole_items_cover_the_epoch_and_estimate_the_item_penalty():
    """With a role constraint the Bradley-Terry batches are drawn by whole items: an epoch's ``steps_per_epoch``
    batches hold every training pair once, no item is split between batches, a batch holds ``batch_size`` pairs
    give or take one item, a resumed run replays the epoch; and the item penalty on them, scaled by the batches
    per epoch, averages over an epoch to the full-split gradient (the in-gradient scale is the batch's, so close
    rather than equal)."""
    from faro_core.fairness.pairs import PairTensors
    from faro_core.train.role_batches import ItemBatches

    df = random_items(200, seed=2).assign(split="train")
    index = _role_index(df)
    tens = PairTensors.from_frame(df.assign(cf_chosen=None, cf_rejected=None, cf_prompt=None, pair_id=df["pair_id"]),
                                  index)
    shard = torch.arange(len(df))
    item = tens.role_item.clone()
    item[::7] = -1  # pairs of no role item: drawn on their own
    bs, steps = 32, math.ceil(len(df) / 32)
    ib = ItemBatches(shard, item, bs, steps, seed=3)
    assert ib.factor == steps
    for epoch in (0, 1):
        batches = [ib.draw(epoch * steps + k) for k in range(steps)]
        assert sorted(torch.cat(batches).tolist()) == list(range(len(df)))
        where = {int(i): k for k, b in enumerate(batches) for i in b}
        for code in set(item[item >= 0].tolist()):
            assert len({where[int(i)] for i in torch.nonzero(item == code).flatten()}) == 1
        assert all(bs - 1 <= len(b) <= bs + 1 for b in batches[:-1]) and 0 < len(batches[-1]) <= bs + 1
    assert not torch.equal(ib.draw(0), ib.draw(steps))  # a new order each epoch
    assert torch.equal(ItemBatches(shard, item, bs, steps, seed=3).draw(steps + 2), ib.draw(steps + 2))

    grad, _ = _item_penalty_grad(df, index, tens)

    whole = ItemBatches(shard, tens.role_item, bs, steps, seed=3)  # every pair in its item (the trainer's case)
    full = grad(shard, 1.0)
    mean = torch.stack([grad(whole.draw(s), whole.factor) for s in range(4 * steps)]).mean(0)
    cos = float(torch.nn.functional.cosine_similarity(full, mean, dim=0))
    assert cos > 0.95


def test_a_role_step_scores_its_item_terms_on_its_bt_batch():
    """A DP(role) step draws no pairs besides its Bradley-Terry batch: the batch holds its role items whole and
    the penalty's gradient reaches exactly the pairs of its ambiguous items, from the same rewards; a step with no
    constraint still draws the epoch permutation's slice (plain Bradley-Terry is unchanged)."""
    from faro_core.fairness.pairs import PairTensors
    from faro_core.train import FaroConfig
    from faro_core.train.inputs import load_training_data
    from faro_core.train.stepper import TrainStepper

    cfg = FaroConfig(data="demo-mini", constraints=["dp"], epsilon=0.0, attribute="role", min_count=10,
                     batch_size=64).resolved()
    _, df, index = load_training_data(cfg)
    tens = PairTensors.from_frame(df, index)
    st = TrainStepper(cfg, df, index, tens, backend=None, model=torch.nn.Linear(1, 1))
    local, n_bt, n_pair = st.draw(3)
    assert n_bt == n_pair == len(local) and abs(len(local) - 64) <= 2
    codes = tens.role_item[local]
    assert bool((codes >= 0).any())
    for code in set(codes[codes >= 0].tolist()):  # every training pair of the batch's role items
        assert set(st.shard[tens.role_item[st.shard] == code].tolist()) <= set(local.tolist())
    st.gda.lam = torch.tensor([0.3, 0.0])
    st.gda.refresh()
    r = [torch.randn(len(local), generator=torch.Generator().manual_seed(k)).requires_grad_(True) for k in (0, 1)]
    nan = torch.full((len(local),), math.nan)
    loss, loss_bt = st.batch_loss(local, n_bt, n_pair, (r[0], r[1], nan, nan))
    (loss - loss_bt).backward()
    touched = (r[0].grad != 0) | (r[1].grad != 0)
    ambig = torch.from_numpy(df["context_condition"].to_numpy() == "ambig")[local] & (codes >= 0)
    assert bool(touched.any()) and torch.equal(touched, ambig)
    bt_cfg = FaroConfig(data="demo-mini", constraints=[], attribute="role", batch_size=64).resolved()
    bt = TrainStepper(bt_cfg, df, index, tens, backend=None, model=torch.nn.Linear(1, 1))
    perm = bt.shard[torch.randperm(len(bt.shard), generator=torch.Generator().manual_seed(0 * 100_003 + 0))]
    assert torch.equal(bt.draw(3)[0], perm[3 * 64:4 * 64])


@pytest.mark.parametrize("kinds", [["dp"], ["eo"], ["cf"], ["dp", "cf"]])
def test_with_zero_multipliers_a_step_skips_the_penalty_bit_for_bit(kinds):
    """While every multiplier is 0 the step leaves the linearized penalty out: its loss and its gradient are bit
    for bit what the step with the penalty terms (zero coefficients, zero constant) computes; once a multiplier
    is above 0 the penalty is in the loss again."""
    from faro_core.fairness.pairs import PairBatch, PairTensors
    from faro_core.train import FaroConfig
    from faro_core.train.inputs import load_training_data
    from faro_core.train.stepper import TrainStepper

    cfg = FaroConfig(data="demo-mini", constraints=kinds, epsilon=0.05, attribute="role", min_count=10,
                     batch_size=64).resolved()
    _, df, index = load_training_data(cfg)
    tens = PairTensors.from_frame(df, index)
    st = TrainStepper(cfg, df, index, tens, backend=None, model=torch.nn.Linear(1, 1))
    local, n_bt, n_pair = st.draw(3)
    gen = torch.Generator().manual_seed(7)
    base = [torch.randn(len(local), generator=gen) for _ in range(4)]
    base[2][::3] = math.nan  # pairs without a twin
    base[3][::3] = math.nan

    def run(with_terms: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        r = [b.clone().requires_grad_(True) for b in base]
        loss, _ = st.batch_loss(local, n_bt, n_pair, tuple(r))
        if with_terms:  # what the step computed before it left the zero penalty out
            gda = st.gda
            loss = loss + gda.penalty(PairBatch(*r[:2], *([None] * 6), *r[2:]), local)
            if st.item_batches is not None:
                loss = loss + gda.item_penalty(tens.batch(local, tuple(r)), local, st.item_batches.factor)
        loss.backward()
        return loss.detach(), [x.grad if x.grad is not None else torch.zeros_like(x) for x in r]

    assert not bool(st.gda.lam.any())
    (skipped, g_skip), (full, g_full) = run(False), run(True)
    assert torch.equal(skipped, full)
    assert all(torch.equal(a, b) for a, b in zip(g_skip, g_full))
    st.gda.lam = torch.full_like(st.gda.lam, 0.3)
    st.gda.refresh()
    assert not torch.equal(run(False)[0], skipped)  # a multiplier above 0: the penalty is back in


def test_faro_dp_role_lowers_the_role_violation_on_a_trained_run(tmp_path):
    """The mini demo with every eligible ambiguous item relabelled to its biased answer: BT (last iterate of 30
    epochs) ranks the biased answer above the counter one in 66% of the 180 ambiguous training items (v_DP
    0.161); Faro-DP(role) at eps 0.05 brings it to 0.039 (measured), at BT's gold accuracy (0.513 vs 0.506),
    and both runs report the role numbers."""
    from faro_core.store.runs import RunStore
    from faro_core.train import FaroConfig, train

    store = RunStore(tmp_path / "runs")
    cfg = dict(data="demo-mini", skew=1.0, epochs=30, dual_every=2, min_count=10, attribute="role", select="last")
    bt = train(FaroConfig(constraints=[], **cfg), store, progress=False).metrics()
    faro = train(FaroConfig(constraints=["dp"], epsilon=0.05, **cfg), store, progress=False).metrics()
    assert bt["train"]["role"]["dp"] >= 0.12
    assert faro["train"]["role"]["dp"] <= bt["train"]["role"]["dp"] - 0.08
    assert faro["train"]["violation"]["dp"] == pytest.approx(faro["train"]["role"]["dp"], abs=1e-6)
    assert faro["train"]["gold_accuracy"] >= bt["train"]["gold_accuracy"] - 0.03
    assert {"p_biased_over_counter", "acc_biased", "acc_counter", "eo_gap", "n_dp"} <= set(faro["test"]["role"])


def test_attribute_defaults_legacy_configs_and_run_ids():
    """Stored configs without the field ran with the named group; at "group" the field leaves the run id
    unchanged; BBQ-format data defaults to role, the embedded demo (a BBQ subset) included; the 512-item mini
    demo keeps the named group (too few ambiguous held-out items for role rates)."""
    from faro_core.paths import SHARED_DATA
    from faro_core.studies.grid import run_id_for
    from faro_core.train import FaroConfig

    assert FaroConfig.from_dict({"constraints": ["dp"]}).attribute == "group"
    assert FaroConfig().resolved().attribute == "role"
    assert FaroConfig(data="demo-mini").resolved().attribute == "group"
    base = FaroConfig(constraints=["dp"], epsilon=0.05, attribute="group")
    legacy = {k: v for k, v in base.resolved().to_dict().items() if k not in ("attribute", "role_columns")}
    assert run_id_for(base) == run_id_for(FaroConfig.from_dict(legacy))
    assert run_id_for(base) != run_id_for(FaroConfig(constraints=["dp"], epsilon=0.05))  # the role default
    if (SHARED_DATA / "bbq").exists():
        assert FaroConfig(data=str(SHARED_DATA / "bbq")).resolved().attribute == "role"
    with pytest.raises(Exception, match="unknown attribute"):
        FaroConfig(attribute="gender")


def test_cli_and_launcher_take_the_attribute(tmp_path, capsys):
    import json

    from faro_core.cli import main as faro_main
    from faro_core.store.runs import RunStore
    from faro_core.train.launch import launch_config

    assert launch_config(constraint="dp", attribute="role").attribute == "role"
    assert launch_config(constraint="dp").attribute is None  # the data's default, resolved at train time
    code = faro_main(["train", "--data", "demo-mini", "--constraint", "dp", "--attribute", "role", "--epochs", "1",
                      "--min-count", "10",
                      "--runs-dir", str(tmp_path), "--quiet", "--json"])
    assert code == 0
    run = RunStore(tmp_path).get(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_id"])
    assert run.config["attribute"] == "role"
    assert run.read("constraints.json")["names"] == ["dp[role|ambig]+", "dp[role|ambig]-"]
    scores = pd.read_parquet(run.file("scores.parquet"))
    assert {"chosen_role", "rejected_role", "chosen_idx", "rejected_idx"} <= set(scores.columns)
    assert faro_main(["eval", run.run_id, "--runs-dir", str(tmp_path), "--n-boot", "20"]) == 0
    out = capsys.readouterr().out
    assert "P(r_biased > r_counter)" in out and "roles swapped within items" in out
    ev = run.read("eval.json")
    assert ev["role"]["dp"] == pytest.approx(ev["metrics"]["violation_dp"]["value"], abs=1e-6)
    assert ev["chance"]["dp"]["n_perm"] >= 1000
    assert faro_main(["train", "--data", "demo-mini", "--constraint", "dp", "--attribute", "role", "--epochs", "1",
                      "--min-count", "10",
                      "--runs-dir", str(tmp_path), "--quiet"]) == 0
    assert "P(r_biased > r_counter)" in capsys.readouterr().out  # faro train prints the raw rates too
    with pytest.raises(SystemExit) as bad:  # argparse: one line naming the choices, exit 2
        faro_main(["train", "--attribute", "gender", "--runs-dir", str(tmp_path), "--quiet"])
    assert bad.value.code == 2 and "choose from 'group', 'role'" in capsys.readouterr().err


def test_data_page_offers_the_attribute_and_the_train_page_passes_it(tmp_path, monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("FARO_RUNS_DIR", str(tmp_path))
    page = Path(__file__).resolve().parent.parent / "dashboard" / "pages" / "1_Data.py"
    at = AppTest.from_file(str(page), default_timeout=60).run()
    radio = next(r for r in at.radio if r.label.startswith("Sensitive attribute"))
    assert radio.options == ["data default", "group", "role"]
    radio.set_value("role").run()
    assert not at.exception and at.session_state["data_choice"]["attribute"] == "role"
    # the Train page launches with the chosen attribute
    from faro_core.train import launch

    seen: list[dict] = []
    monkeypatch.setattr(launch, "launch_train", lambda store, **kw: seen.append(kw) or "r-1")
    tp = AppTest.from_file(str(page.parent / "2_Train.py"), default_timeout=60)
    tp.session_state["data_choice"] = {"data": "demo", "attribute": "role"}
    tp.run()
    tp.multiselect(key="w-kinds").set_value(["dp"])  # one run: launch_train (a grid goes to one batched sweep)
    tp.text_input(key="w-epsilons").set_value("0.05")
    tp.button[0].click().run()
    assert not tp.exception and seen and all(kw["config"].attribute == "role" for kw in seen)
