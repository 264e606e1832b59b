"""CLI flags generated from :class:`~faro_core.train.config.FaroConfig`'s field metadata (not a command).

Every field becomes a flag (its ``flag`` metadata or ``--name-with-dashes``, plus ``aliases``) with its help
text, valid values and default shown in ``--help``. A flag left out does not appear in the parsed namespace,
so the config's own default applies: defaults live only in ``FaroConfig``. ``--config FILE`` reads a JSON
config first (any stored ``config.json`` works); flags given on the command line override its values.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Any

from faro_core.errors import FaroError
from faro_core.train.config import FaroConfig, describe, flag_of, migrate_config, parse_text


def config_fields(for_sweep: bool = False) -> list[Field]:
    """The fields that are flags of ``faro train`` (all) or ``faro sweep`` (those not set by its grid)."""
    return [f for f in fields(FaroConfig) if not for_sweep or f.metadata.get("sweep", True)]


def _default_text(f: Field) -> str:
    md = f.metadata
    if md.get("by_mode") or md.get("by_split"):
        return ""  # describe() says what unset resolves to
    value = f.default_factory() if f.default is MISSING else f.default
    if md.get("words"):
        value = next((w for w, v in md["words"].items() if v == value), value)
    elif value is None or value == []:
        return ""
    return f"; default {value:g}" if isinstance(value, float) else f"; default {value}"


def _help(f: Field) -> str:
    """The help line, with the valid values and the default where they say more than "text"."""
    md, default = f.metadata, _default_text(f)
    if not (md.get("range") or md.get("choices") or md.get("words") or md.get("by_mode") or md.get("by_split")
            or default):
        return md.get("help", "")
    return f"{md.get('help', '')} [{describe(f)}{default}]"


def add_config_flags(p: argparse.ArgumentParser, for_sweep: bool = False) -> None:
    """Add one flag per config field (and ``--config FILE``) to ``p``."""
    g = p.add_argument_group("settings (FaroConfig; faro_core/train/config.py)")
    g.add_argument("--config", default=None, metavar="FILE",
                   help="JSON config (e.g. a run's config.json); flags given here override its values")
    p.set_defaults(config_flags=tuple(f.name for f in config_fields(for_sweep)))
    for f in config_fields(for_sweep):
        md = f.metadata
        # one word from a fixed set: argparse checks it (as these flags always did: usage and the choices, exit 2)
        choices = list(md["words"]) if md.get("words") else (list(md["choices"]) if md.get("choices")
                                                              and f.name != "constraints" else None)
        g.add_argument(flag_of(f.name), *md.get("aliases", ()), dest=f.name, default=argparse.SUPPRESS,
                       choices=choices, metavar=None if choices else f.name.upper(),
                       help=_help(f).replace("%", "%%"))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The fields of a JSON config file, migrated to this version (:func:`migrate_config`)."""
    p = Path(path)
    if not p.is_file():
        raise FaroError(f"config file {str(p)!r} not found")
    try:
        d = json.loads(p.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FaroError(f"config file {str(p)!r} is not valid JSON: {exc}") from None
    return migrate_config(d)


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields given as flags (of those :func:`add_config_flags` added), parsed and range-checked."""
    names = getattr(args, "config_flags", ())
    return {name: parse_text(name, getattr(args, name)) for name in names if hasattr(args, name)}


def config_from_args(args: argparse.Namespace, **over: Any) -> FaroConfig:
    """``--config FILE`` (if any), then the flags given, then ``over``: one validated :class:`FaroConfig`."""
    base = read_config_file(args.config) if getattr(args, "config", None) else {}
    return FaroConfig(**{**base, **given_settings(args), **over})
