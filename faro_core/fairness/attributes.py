"""DP and EO's sensitive attribute as a strategy: the registry of attributes, by the name ``--attribute`` takes.

An attribute says three things, and callers ask it instead of testing its name:

- **whose columns**: which columns of a pair frame carry it (:meth:`Attribute.frame_columns` per constraint kind,
  in Faro's column names), which dataset columns it reads (:meth:`Attribute.source_columns`), what it adds to a
  frame (:meth:`Attribute.prepare`, :attr:`Attribute.prepared_columns`) and the per-pair codes a
  :class:`~faro_core.fairness.pairs.PairTensors` carries for it (:meth:`Attribute.pair_codes`);
- **the cells**: its constraint class per kind (:attr:`Attribute.constraint_classes`, resolved by
  :func:`faro_core.fairness.constraint_set.constraint_types`), the strata a run conditions on when the config
  names none (:meth:`Attribute.default_strata`), and group DRO's groups (:meth:`Attribute.dro_labels`);
- **the item table**: whether DP and EO are measured per item (:attr:`Attribute.per_item`), the table itself
  (:meth:`Attribute.items`, the columns of :data:`faro_core.fairness.role_stats.ITEM_COLUMNS`) and what
  evaluation stores from it (:meth:`Attribute.report`, under the ``"role"`` key of metrics and ``eval.json``).

:data:`GROUP` (the group a response names; the base class is its behaviour) and :data:`ROLE` (the response's
stereotype role, :mod:`faro_core.fairness.role`) are registered; a user's own attribute subclasses
:class:`Attribute` and calls :func:`register_attribute`. The module imports nothing at load time (the config
lists the names without loading pandas or torch); a strategy loads the leaf modules it reads when called.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from faro_core.errors import FaroError

if TYPE_CHECKING:
    import pandas as pd
    from torch import Tensor

# Constraint classes by kind for attributes of pairs and responses: the names are keys of
# faro_core.fairness.constraint_set.CONSTRAINT_CLASSES (this module sits below the constraints).
GROUP_CONSTRAINTS: Mapping[str, str] = {"dp": "DemographicParity", "eo": "EqualizedOdds",
                                        "cf": "CounterfactualFairness"}


class Attribute:
    """The protocol of a sensitive attribute; its methods' defaults are the named group's behaviour.

    ``name``: the ``--attribute`` value. ``help``: one line for flags and pages. ``per_item``: DP and EO are
    measured per item on :meth:`items` (else per pair, in cells of named groups). ``constraint_classes``: kind ->
    constraint class (a :class:`~faro_core.fairness.constraints.Constraint` subclass, or the name of one in
    ``CONSTRAINT_CLASSES``), in the order :func:`~faro_core.fairness.constraint_set.all_constraints` measures
    them. ``prepared_columns``: the columns :meth:`prepare` adds to a pair frame.
    """

    name: str = "group"
    help: str = "the group a response names"
    per_item: bool = False
    constraint_classes: Mapping[str, Any] = GROUP_CONSTRAINTS
    prepared_columns: tuple[str, ...] = ()

    def frame_columns(self, kind: str) -> tuple[str, ...]:
        """The pair frame's columns (Faro's names) that constraint ``kind`` reads: DP the groups the two
        responses name, EO and CF the pair's group."""
        return ("chosen_group", "rejected_group") if kind == "dp" else ("group",)

    def source_columns(self, columns: Sequence[str] | None = None) -> list[str]:
        """The dataset columns :meth:`prepare` reads (``columns``: the ones a user named for it)."""
        return list(columns or [])

    def prepare(self, df: pd.DataFrame, columns: Sequence[str] | None = None, name: str = "data") -> pd.DataFrame:
        """``df`` with the attribute's columns (:attr:`prepared_columns`); a :class:`DataError` naming what is
        missing. The named group is a column of every loaded frame already: ``df`` itself."""
        return df

    def default_strata(self, columns: Sequence[str]) -> list[str] | None:
        """The strata a run conditions on when the config names none, from the ``columns`` available; None:
        the data's own."""
        return None

    def pair_codes(self, df: pd.DataFrame) -> dict[str, Tensor]:
        """Extra per-pair code tensors of :class:`~faro_core.fairness.pairs.PairTensors` (field -> [N])."""
        return {}

    def dro_labels(self, df: pd.DataFrame) -> pd.Series:
        """The group of each pair for group DRO: the pair's named group, ``(none)`` where it has none."""
        import pandas as pd

        return df["group"].fillna("(none)").astype(str) if "group" in df else pd.Series(["(none)"] * len(df))

    def items(self, scores: pd.DataFrame) -> pd.DataFrame | None:
        """The item table of a scores frame (one row per item; None: the attribute is measured per pair)."""
        return None

    def report_plan(self, frame: pd.DataFrame) -> Any:
        """What :meth:`report` reads of a scores frame besides its rewards, computed once for frames that
        differ only in ``r_chosen`` / ``r_rejected`` (None: nothing to keep)."""
        return None

    def report(self, scores: pd.DataFrame, n_boot: int = 200, seed: int = 0, plan: Any = None
               ) -> dict[str, Any] | None:
        """What evaluation stores from the item table (None: nothing beyond the pair-level violations);
        ``plan``: :meth:`report_plan` of a frame with the same rows and reward-free columns."""
        return None


class RoleAttribute(Attribute):
    """The stereotype role of a response (biased, counter, or neither): DP and EO per item, on BBQ-format data
    or a table naming each response's role (:mod:`faro_core.fairness.role`). CF stays by named group."""

    name = "role"
    help = "its stereotype role: biased, counter, or neither"
    per_item = True
    constraint_classes = {"dp": "RoleParity", "eo": "RoleOdds", "cf": "CounterfactualFairness"}
    prepared_columns = ("chosen_role", "rejected_role")

    def frame_columns(self, kind: str) -> tuple[str, ...]:
        return super().frame_columns(kind) if kind == "cf" else ("item_id",)

    def source_columns(self, columns: Sequence[str] | None = None) -> list[str]:
        from faro_core.fairness.role_columns import BBQ_INDEX_COLUMNS, ROLE_COLUMNS

        return list(columns or [*ROLE_COLUMNS, *BBQ_INDEX_COLUMNS])

    def prepare(self, df: pd.DataFrame, columns: Sequence[str] | None = None, name: str = "data") -> pd.DataFrame:
        from faro_core.fairness.role_columns import add_role_columns

        return add_role_columns(df, columns, name=name)

    def default_strata(self, columns: Sequence[str]) -> list[str] | None:
        from faro_core.fairness.role_columns import role_strata

        return role_strata(columns)

    def pair_codes(self, df: pd.DataFrame) -> dict[str, Tensor]:
        from faro_core.fairness.role_columns import role_codes

        return dict(zip(("role_item", "chosen_role", "rejected_role"), role_codes(df)))

    def dro_labels(self, df: pd.DataFrame) -> pd.Series:
        """The role of the chosen response (``biased``, ``counter``, or ``unknown``: the pair's label says which
        answer is better, so a group is the pairs whose preferred answer plays that role)."""
        if "chosen_role" in df:
            return df["chosen_role"].fillna("unknown").astype(str)
        return super().dro_labels(df)

    def items(self, scores: pd.DataFrame) -> pd.DataFrame | None:
        from faro_core.fairness.role_stats import role_items

        return role_items(scores)

    def report_plan(self, frame: pd.DataFrame) -> Any:
        from faro_core.fairness.role_stats import RoleItemPlan

        return RoleItemPlan(frame) if len(frame) else None

    def report(self, scores: pd.DataFrame, n_boot: int = 200, seed: int = 0, plan: Any = None
               ) -> dict[str, Any] | None:
        from faro_core.fairness.role_stats import role_report

        return role_report(scores, n_boot=n_boot, seed=seed, plan=plan)


GROUP = Attribute()
ROLE = RoleAttribute()
ATTRIBUTES: dict[str, Attribute] = {}
DEFAULT_ATTRIBUTE = GROUP.name  # what a GroupIndex (and a stored config that names none) measures


def register_attribute(strategy: Attribute) -> Attribute:
    """Add ``strategy`` to the registry under its name (a name already taken is a :class:`FaroError`)."""
    if strategy.name in ATTRIBUTES and ATTRIBUTES[strategy.name] is not strategy:
        raise FaroError(f"attribute {strategy.name!r} is registered already")
    ATTRIBUTES[strategy.name] = strategy
    return strategy


def attribute_names() -> tuple[str, ...]:
    """The registered attributes' names, in registration order."""
    return tuple(ATTRIBUTES)


def attribute_strategy(name: str | None) -> Attribute:
    """The strategy of attribute ``name`` (None: :data:`DEFAULT_ATTRIBUTE`); an unknown name is a one-line
    :class:`FaroError` listing the registered ones."""
    key = DEFAULT_ATTRIBUTE if name is None else str(name)
    if key not in ATTRIBUTES:
        raise FaroError(f"unknown attribute {name!r}; choose from {', '.join(ATTRIBUTES)}")
    return ATTRIBUTES[key]


def is_per_item(name: str | None) -> bool:
    """Whether attribute ``name`` is measured per item; False for a name no strategy registered in this
    process (a stored run of a user's own attribute, read elsewhere)."""
    key = DEFAULT_ATTRIBUTE if name is None else str(name)
    return key in ATTRIBUTES and ATTRIBUTES[key].per_item


for _strategy in (GROUP, ROLE):
    register_attribute(_strategy)
