"""The dashboard's forms, described from the settings' field metadata (no streamlit here).

:func:`widgets` turns the fields of a settings dataclass (:class:`~faro_core.train.config.FaroConfig`, or
:class:`~faro_core.studies.grid.SweepSpec`) whose ``show`` names a page into :class:`Widget` descriptions:
kind, label, help, initial value, options and bounds. The page renders each with streamlit and hands the
widget's raw value back to :func:`value_of`, which returns the field's value (parsed and range-checked as the
CLI would). Kinds: ``text``, ``number``, ``slider``, ``select``, ``radio``, ``multiselect``, ``checkbox``,
``count`` (a number n standing for the list 0..n-1), and ``source`` / ``groups``, which the Data page builds
from its own state (an upload, the loaded data's groups).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, fields
from typing import Any

from faro_core.train.config import FaroConfig, default_of, parse_text, setting_of


@dataclass(frozen=True)
class Widget:
    """One form widget: ``name`` is the field it sets; ``initial`` the widget's own starting value (text for
    ``text``, an option for ``select``/``radio``, a list for ``multiselect``)."""

    name: str
    kind: str
    label: str
    help: str
    initial: Any
    options: tuple[Any, ...] = ()
    option_labels: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    step: float | None = None
    placeholder: str = ""
    parse: Callable[[str], Any] | None = None

    def label_of(self, option: Any) -> str:
        """The words shown for ``option``."""
        return self.option_labels[self.options.index(option)] if self.option_labels else str(option)


def _default(f: Field) -> Any:
    return f.default_factory() if f.default is MISSING else f.default


def _config_widget(f: Field) -> Widget:
    md = f.metadata
    base = str(f.type).replace(" | None", "").strip()
    optional = "None" in str(f.type)
    kind = md.get("widget")
    value = default_of(f.name, mode=default_of("mode"))
    common = {"name": f.name, "label": md["label"], "help": md["help"]}
    if kind in ("source", "groups"):
        return Widget(kind=kind, initial=value, **common)
    if md.get("words"):
        words = md["words"]
        labels = md.get("labels") or {}
        return Widget(kind=kind or "radio", initial=value, options=tuple(words.values()),
                      option_labels=tuple(labels.get(w, w) for w in words), **common)
    if md.get("choices") and base != "list[str]":
        opts = ((None,) if optional else ()) + tuple(md["choices"])
        labels = tuple("data default" if o is None else str(o) for o in opts)
        return Widget(kind=kind or "select", initial=value, options=opts, option_labels=labels, **common)
    rng = md.get("range")
    if base in ("int", "float") and rng is not None:
        lo = rng.lo if rng.lo is not None and not rng.lo_open else None
        if base == "int" and rng.lo is not None:
            lo = int(rng.lo) + (1 if rng.lo_open else 0)
        if base == "float" and rng.lo is not None and rng.hi is not None and not rng.hi_open:
            return Widget(kind="slider", initial=float(value), min=float(rng.lo), max=float(rng.hi),
                          step=(rng.hi - rng.lo) / 20, **common)
        return Widget(kind="number", initial=value, min=lo, max=rng.hi if not rng.hi_open else None,
                      step=1 if base == "int" else None, **common)
    if base == "bool":
        return Widget(kind="checkbox", initial=bool(value), **common)
    text = ",".join(value) if isinstance(value, list) else ("" if value is None else str(value))
    hint = md["help"].split("(default: ", 1)
    return Widget(kind="text", initial=text, placeholder=hint[1].rstrip(")") if len(hint) == 2 else "", **common)


def _spec_widget(f: Field) -> Widget:
    md = f.metadata
    value = _default(f)
    common = {"name": f.name, "label": md["label"], "help": md["help"]}
    if md["widget"] == "multiselect":
        opts = tuple(md["options"]())
        return Widget(kind="multiselect", initial=list(value), options=opts,
                      option_labels=tuple(md["labels"](o) for o in opts), **common)
    if md["widget"] == "count":
        return Widget(kind="count", initial=len(value), min=1, step=1, **common)
    if md["widget"] == "checkbox":
        return Widget(kind="checkbox", initial=bool(value), **common)
    return Widget(kind="text", initial=", ".join(md["fmt"]([v]) for v in value), parse=md["parse"], **common)


def widgets(show: str, cls: type = FaroConfig) -> list[Widget]:
    """The widgets of the fields of ``cls`` that page ``show`` (``"train"``, ``"data"``) shows, in
    declaration order."""
    make = _config_widget if cls is FaroConfig else _spec_widget
    return [make(f) for f in fields(cls) if f.metadata.get("show") == show]


def value_of(w: Widget, raw: Any) -> Any:
    """The field value of widget ``w`` showing ``raw``: text parsed as the CLI parses it (empty: unset), a
    count as the list 0..n-1, anything else as it is (a :class:`~faro_core.errors.FaroError` if out of
    range)."""
    if w.kind == "count":
        return list(range(int(raw)))
    if w.kind == "text":
        text = str(raw or "").strip()
        if w.parse is not None:
            return w.parse(text)
        return parse_text(w.name, text) if text else None
    if w.kind in ("number", "slider") and raw is not None:
        base = str(setting_of(w.name).type).replace(" | None", "").strip()
        return parse_text(w.name, str(int(raw) if base == "int" else raw))
    return list(raw) if w.kind == "multiselect" else raw


def values_of(ws: list[Widget], raw: dict[str, Any]) -> dict[str, Any]:
    """:func:`value_of` of every widget in ``ws`` whose name ``raw`` holds."""
    return {w.name: value_of(w, raw[w.name]) for w in ws if w.name in raw}
