"""Which iterate a run returns: validation passes ranked in tiers (feasible, within chance, least violating),
and the exponential moving average of the weights as one more candidate."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from typing import Any

import torch

from faro_core.fairness.attributes import attribute_strategy
from faro_core.fairness.chance import PERMUTED_KINDS, chance_violation, role_chance
from faro_core.fairness.constraint_set import ConstraintSet
from faro_core.fairness.pairs import GroupIndex, PairBatch
from faro_core.fairness.role_constraint import batch_role_items
from faro_core.train.config import FaroConfig


def selected_by(best: dict[str, Any] | None, config: FaroConfig, constrained: bool) -> str:
    """How the returned iterate was chosen: last | unconstrained | feasible | chance | least_violating."""
    if config.select == "last" or best is None:
        return "last"
    if not constrained:
        return "unconstrained"
    return "feasible" if best.get("feasible") else "chance" if best.get("within_chance") else "least_violating"


# Type of the chance tier's test: (validation batch, trained constraints, index, config) -> within chance?
ChanceTest = Callable[[PairBatch, ConstraintSet, GroupIndex, FaroConfig], bool]
VAL_LOG_KEYS = ("accuracy", "loss", "gold_accuracy", "violation", "feasible", "within_chance")
CHANCE_PERMUTATIONS = 50  # per validation pass of a run that is not feasible: ~0.04 s on BBQ's 3,116 pairs


def chance_p_values(batch: PairBatch, kinds: tuple[str, ...], index: GroupIndex, config: FaroConfig
                    ) -> dict[str, float]:
    """Group-permutation p-values of the ``kinds`` violations on ``batch`` (:data:`CHANCE_PERMUTATIONS`
    permutations, seeded by ``config.seed``): the item-level role test for a per-item attribute
    (``--attribute role``), else
    :func:`~faro_core.fairness.chance.chance_violation`. Depends on the batch's rewards, the kinds, the seed
    and ``min_count`` only (so members of a batch that share their weights share it)."""
    if attribute_strategy(index.attribute).per_item:
        res = role_chance(batch_role_items(batch, index), kinds=sorted(kinds), n_perm=CHANCE_PERMUTATIONS,
                          seed=config.seed, strata=("stratum",))
    else:
        res = chance_violation(batch, index, kinds=sorted(kinds), min_count=config.min_count,
                               n_perm=CHANCE_PERMUTATIONS, seed=config.seed)
    return {k: r["p_value"] for k, r in res.items()}


def within_chance(batch: PairBatch, constraints: ConstraintSet, index: GroupIndex, config: FaroConfig,
                  p_values: Callable[..., dict[str, float]] = chance_p_values) -> bool:
    """True when every trained constraint that misses its epsilon on ``batch`` is DP or EO and its violation is
    indistinguishable from chance: group-permutation p-value (:func:`chance_p_values`) >= ``config.select_chance``.
    ``p_values``: the p-value function (the batched engine passes a memoized one)."""
    g, eps = constraints.strict(batch), constraints.epsilons()
    missed = {k for k, gi, e in zip(constraints.kinds(), g.tolist(), eps.tolist()) if gi > e + 1e-9}
    if not missed or not missed <= set(PERMUTED_KINDS):
        return False
    res = p_values(batch, tuple(sorted(missed)), index, config)
    return all(p >= config.select_chance for p in res.values())


class IterateSelector:
    """Which validation-evaluated iterate a run returns (``config.select == "best"``).

    Tiers: feasible on validation (2), else DP/EO violations indistinguishable from chance (1, computed only
    when it can change the choice), else none (0). A higher tier wins; within tiers 1 and 2 the better fit on
    validation wins (:meth:`fits_better`; a tie keeps the earlier), within tier 0 the smaller largest excess
    over epsilon.

    ``chance_test(batch, constraints, index, config) -> bool`` decides tier 1 (default :func:`within_chance`);
    it is injected so a caller can replace the permutation test. ``select_metric="loss"`` ranks within a tier
    by validation Bradley-Terry loss instead of accuracy. Measurements behind the defaults: docs/TRAINING.md.
    """

    def __init__(self, config: FaroConfig, constraints: ConstraintSet, index: GroupIndex,
                 chance_test: ChanceTest | None = None) -> None:
        self.config, self.constraints, self.index = config, constraints, index
        self.chance_test = within_chance if chance_test is None else chance_test

    def fits_better(self, m: dict[str, Any], ref: dict[str, Any]) -> bool:
        """Within a tier: higher validation accuracy, or lower validation BT loss (``select_metric="loss"``);
        a tie keeps the earlier iterate."""
        if self.config.select_metric == "loss":
            return m["loss"] < ref["loss"]
        return m["accuracy"] > ref["accuracy"]

    @staticmethod
    def tier(m: dict[str, Any]) -> int:
        return 2 if m["feasible"] else 1 if m.get("within_chance") else 0

    def better(self, m: dict[str, Any], ref: dict[str, Any] | None) -> bool:
        """Should iterate ``m`` (validation metrics; ``m["_batch"]``, popped here, lets the chance tier be
        computed) replace ``ref``, the choice so far?"""
        batch = m.pop("_batch", None)
        tier = self.tier
        if (batch is not None and self.constraints and self.config.select_chance > 0 and not m["feasible"]
                and (ref is None or tier(ref) == 0 or (tier(ref) == 1 and self.fits_better(m, ref)))):
            m["within_chance"] = self.chance_test(batch, self.constraints, self.index, self.config)
        if ref is None:
            return True
        if tier(m) != tier(ref):
            return tier(m) > tier(ref)
        if tier(m):
            return self.fits_better(m, ref)
        return m["max_excess"] < ref["max_excess"]


class IterateAverage:
    """Exponential moving average of the model's weights (decay per step), swappable into the model."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.state = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for k, v in model.state_dict().items():
            self.state[k].mul_(self.decay).add_(v.detach().float(), alpha=1 - self.decay)

    @contextlib.contextmanager
    def swapped(self, model: torch.nn.Module) -> Iterator[None]:
        live = copy.deepcopy(model.state_dict())
        model.load_state_dict(self.state)
        try:
            yield
        finally:
            model.load_state_dict(live)
