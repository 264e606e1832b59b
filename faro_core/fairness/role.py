"""The stereotype role of a response: the response-level sensitive attribute ``--attribute role``, by its names.

On BBQ-format data every item has three answers: the *biased* one (it agrees with the stereotype for this
question: the stereotyped target in a negative question, the other group in a non-negative one, as
``biased_idx`` has it in :mod:`faro_core.data.bbq`), the *counter* one (the other group answer) and the
"unknown" one (role ``None``). A pair frame carries the role of each response in ``chosen_role`` /
``rejected_role`` (``"biased"``, ``"counter"`` or None).

The attribute lives in three modules, split where their dependencies differ, and this one gathers their
names in one place for readers of the attribute as a whole (the package's own modules import from the three):

- :mod:`faro_core.fairness.role_columns`: the roles on a pair frame and their codes (leaf);
- :mod:`faro_core.fairness.role_stats`: the per-item table and the violations on it (numpy / pandas);
- :mod:`faro_core.fairness.role_constraint`: the same quantities as trainer constraints (torch).

The strategy that binds them to ``--attribute role`` is :data:`faro_core.fairness.attributes.ROLE`.
"""

from __future__ import annotations

from faro_core.fairness.role_columns import (  # noqa: F401 (re-exported: the attribute's names in one place)
    BBQ_INDEX_COLUMNS,
    NONE_CODE,
    ROLE_CODES,
    ROLE_COLUMNS,
    ROLES,
    add_role_columns,
    has_roles,
    role_codes,
    role_strata,
)
from faro_core.fairness.role_constraint import (  # noqa: F401
    ITEM_TERMS,
    ROLE_CONSTRAINT_TYPES,
    ItemTable,
    RoleOdds,
    RoleParity,
    batch_role_items,
    item_term,
)
from faro_core.fairness.role_stats import (  # noqa: F401
    ITEM_COLUMNS,
    ITEM_INPUTS,
    role_bootstrap,
    role_items,
    role_report,
    role_violations,
)
