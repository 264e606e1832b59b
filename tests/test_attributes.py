"""The attribute strategies (faro_core.fairness.attributes): the registry, what each built-in one answers, and a
user's own attribute driving data preparation, pair codes and constraint classes without any caller naming it."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from faro_core.errors import DataError, FaroError
from faro_core.fairness.attributes import (
    ATTRIBUTES,
    GROUP,
    ROLE,
    Attribute,
    attribute_names,
    attribute_strategy,
    is_per_item,
    register_attribute,
)
from faro_core.fairness.constraint_set import ConstraintSet, all_constraints, constraint_types
from faro_core.fairness.constraints import CounterfactualFairness, DemographicParity, EqualizedOdds
from faro_core.fairness.pairs import GroupIndex, PairTensors
from faro_core.fairness.role_constraint import RoleOdds, RoleParity


def _frame() -> pd.DataFrame:
    """Two ambiguous BBQ-style items: "unknown" (correct) over each person's answer, and biased against counter
    (no gold); the answers name groups."""
    rows = []
    for item in ("i1", "i2"):
        for a, b, gold in ((None, "biased", 1.0), (None, "counter", 1.0), ("biased", "counter", math.nan)):
            rows.append({"item_id": item, "pair_id": f"{item}/{a}-{b}", "chosen_role": a, "rejected_role": b,
                         "chosen_group": {"biased": "old", "counter": "young"}.get(a), "rejected_group": "old",
                         "group": "age", "gold": gold, "stratum": "all", "cf_chosen": None, "cf_rejected": None})
    return pd.DataFrame(rows)


def test_the_registry_names_group_and_role_and_refuses_others() -> None:
    assert attribute_names()[:2] == ("group", "role")
    assert attribute_strategy(None) is GROUP and attribute_strategy("role") is ROLE
    with pytest.raises(FaroError, match=r"unknown attribute 'gender'; choose from group, role"):
        attribute_strategy("gender")
    assert is_per_item("role") and not is_per_item("group") and not is_per_item(None)
    assert not is_per_item("a name no strategy registered")
    with pytest.raises(FaroError, match="registered already"):
        register_attribute(type("Other", (Attribute,), {"name": "role"})())


def test_group_and_role_answer_for_their_columns_cells_and_items() -> None:
    df = _frame()
    # whose columns
    assert GROUP.frame_columns("dp") == ("chosen_group", "rejected_group") and GROUP.frame_columns("eo") == ("group",)
    assert ROLE.frame_columns("dp") == ROLE.frame_columns("eo") == ("item_id",) and ROLE.frame_columns("cf") == ("group",)
    assert GROUP.prepare(df) is df and GROUP.pair_codes(df) == {}
    codes = ROLE.pair_codes(ROLE.prepare(df))
    assert sorted(codes) == ["chosen_role", "rejected_role", "role_item"]
    assert codes["role_item"].tolist() == [0, 0, 0, 1, 1, 1] and codes["chosen_role"].tolist() == [2, 2, 0] * 2
    with pytest.raises(DataError, match="--attribute role needs"):
        ROLE.prepare(pd.DataFrame({"item_id": ["a"], "group": ["x"]}))
    # the cells: constraint classes in the order all_constraints measures them, and the default strata
    assert constraint_types(GroupIndex(["old"], ["age"])) == {"dp": DemographicParity, "eo": EqualizedOdds,
                                                               "cf": CounterfactualFairness}
    role_index = GroupIndex(["old"], ["age"], attribute="role")
    assert list(constraint_types(role_index).items()) == [("dp", RoleParity), ("eo", RoleOdds),
                                                          ("cf", CounterfactualFairness)]
    assert [type(c) for c in all_constraints(role_index).constraints] == [RoleParity, RoleOdds, CounterfactualFairness]
    assert GROUP.default_strata(["context_condition"]) is None
    assert ROLE.default_strata(["category", "context_condition"]) == ["context_condition"]
    assert ROLE.default_strata(["category"]) == []
    assert GROUP.dro_labels(df).tolist() == ["age"] * 6
    assert ROLE.dro_labels(df).tolist()[:3] == ["unknown", "unknown", "biased"]
    # the item table
    assert GROUP.items(df) is None and GROUP.report(df) is None
    scores = ROLE.prepare(df).assign(r_chosen=[2.0, 2.0, 1.0] * 2, r_rejected=[1.0, 0.5, 0.5] * 2,
                                     context_condition="ambig")
    items = ROLE.items(scores)
    assert items["item_id"].tolist() == ["i1", "i2"] and items["x_dp"].tolist() == [1.0, 1.0]
    assert ROLE.report(scores, n_boot=0)["p_biased_over_counter"] == 1.0


class _ToyParity(DemographicParity):
    """The named-group DP under another class: what the toy attribute's cells are built from."""


class _Toy(Attribute):
    """A user's own attribute: the group a response names, read from columns of its own."""

    name = "toy"
    help = "the group a response names, from chosen_toy / rejected_toy"
    constraint_classes = {"dp": _ToyParity, "eo": EqualizedOdds, "cf": CounterfactualFairness}
    prepared_columns = ("chosen_group", "rejected_group")

    def prepare(self, df: pd.DataFrame, columns=None, name: str = "data") -> pd.DataFrame:
        if "chosen_toy" not in df:
            raise DataError(f"{name}: the toy attribute needs chosen_toy / rejected_toy")
        return df.assign(chosen_group=df["chosen_toy"], rejected_group=df["rejected_toy"])

    def pair_codes(self, df: pd.DataFrame) -> dict[str, torch.Tensor]:
        none = torch.full((len(df),), -1, dtype=torch.long)  # codes of a per-item attribute: no item here
        return {"role_item": none, "chosen_role": none, "rejected_role": none}


def test_a_users_own_attribute_drives_preparation_codes_and_constraints(monkeypatch) -> None:
    toy = _Toy()
    monkeypatch.setitem(ATTRIBUTES, "toy", toy)
    assert "toy" in attribute_names() and attribute_strategy("toy") is toy
    df = toy.prepare(_frame().assign(chosen_toy=["a", "b", "a"] * 2, rejected_toy=["b", None, None] * 2))
    index = GroupIndex(response_groups=["a", "b"], pair_groups=["age"], attribute="toy")
    assert index.to_dict()["attribute"] == "toy"
    tens = PairTensors.from_frame(df, index)
    assert tens.role_item.tolist() == [-1] * 6 and tens.chosen_group.tolist() == [0, 1, 0] * 2
    cons = ConstraintSet.parse("dp,cf", 0.05, index, min_count=1)
    assert [type(c) for c in cons.constraints] == [_ToyParity, CounterfactualFairness]
    zero = torch.zeros(6)
    batch = tens.batch(torch.arange(6), (torch.tensor([1.0, 0, 1, 1, 0, 1]), zero, zero, zero))
    assert cons.strict(batch).shape == (len(cons),)
