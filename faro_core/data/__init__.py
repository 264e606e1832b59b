"""Preference data: the :class:`PreferenceData` type, loaders, BBQ, skew, twins and splits.

``load(source=None, format=None, group=None, strata=None, skew=0.0, seed=0, columns=None, groups=None)``
is the one entry point; ``source`` None or ``"demo"`` gives the embedded demo data. See ``docs/DATA.md``.
"""

from __future__ import annotations

from faro_core.data.loaders import FORMATS, detect_format, load
from faro_core.data.schema import PreferenceData
from faro_core.data.splits import split_by_item

__all__ = ["FORMATS", "PreferenceData", "detect_format", "load", "split_by_item"]
