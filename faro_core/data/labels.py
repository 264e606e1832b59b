"""Group names in words: the shipped label map for BBQ's group tags, and a user's own map.

BBQ tags each answer with a short code (``"F"``, ``"old"``, ``"nonOld"``, ``"MiddleEast"``); people read
"women", "older adults", "people from the Middle East". :data:`BBQ_GROUP_LABELS` maps every tag of the BBQ
release (and of the demo subset) to words. A user's table can bring its own map: a JSON object
``{"tag": "label"}`` or a CSV with columns ``tag,label``, parsed by :func:`parse_label_map` and stored beside
the runs as ``<runs_dir>/group_labels.json`` (:func:`save_label_map`), where the dashboard, the report and
``faro report`` all read it (:func:`label_map`). A tag no map knows is shown split into words
(``"LatinSouthAmerica"`` -> ``"Latin South America"``), never dropped.

Groups smaller than :data:`SMALL_GROUP_N` responses are flagged wherever a per-group number is shown
(:func:`group_caption`): their rates are noisy, and they are kept, not silently left out.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from faro_core.errors import DataError

LABELS_FILE = "group_labels.json"
# below this many members a per-group rate has a standard error above ~0.09: flag it (the trainer's
# default min_count, under which a constraint cell is not estimated)
SMALL_GROUP_N = 30

BBQ_GROUP_LABELS: dict[str, str] = {
    # Age
    "old": "older adults", "nonOld": "younger adults",
    # Gender identity
    "F": "women", "M": "men", "woman": "women", "man": "men", "girl": "girls", "boy": "boys",
    "trans": "transgender people", "trans_F": "transgender women", "trans_M": "transgender men",
    "nonTrans": "cisgender people", "nonTrans_F": "cisgender women", "nonTrans_M": "cisgender men",
    # Disability status
    "disabled": "disabled people", "nonDisabled": "non-disabled people",
    # Nationality (BBQ tags answers by region)
    "Africa": "people from Africa", "ArabStates": "people from Arab states", "AsiaPacific": "people from Asia-Pacific",
    "Europe": "people from Europe", "LatinSouthAmerica": "people from Latin / South America",
    "MiddleEast": "people from the Middle East", "NorthAmerica": "people from North America",
    # Physical appearance
    "obese": "people with obesity", "nonObese": "people without obesity", "short": "short people",
    "tall": "tall people", "posDress": "well-dressed people", "negDress": "poorly dressed people",
    "pregnant": "pregnant people", "notPregnant": "people not pregnant", "visibleDifference": "people with a "
    "visible difference", "noVisibleDifference": "people without a visible difference",
    # Race / ethnicity
    "Black": "Black people", "White": "White people", "Asian": "Asian people", "Hispanic": "Hispanic people",
    "Latino": "Latino people", "Arab": "Arab people", "African American": "African American people",
    "Native American": "Native American people", "Jewish": "Jewish people", "Roma": "Roma people",
    "African": "African people", "South American": "South American people", "European": "European people",
    "Middle Eastern": "Middle Eastern people", "Caucasian": "Caucasian people",
    # Religion
    "Atheist": "atheists", "Buddhist": "Buddhists", "Catholic": "Catholics", "Christian": "Christians",
    "Hindu": "Hindus", "Mormon": "Mormons", "Muslim": "Muslims", "Orthodox": "Orthodox Christians",
    "Protestant": "Protestants", "Sikh": "Sikhs",
    # Socio-economic status
    "lowSES": "people of low income", "highSES": "people of high income",
    # Sexual orientation
    "gay": "gay people", "lesbian": "lesbians", "bisexual": "bisexual people", "pansexual": "pansexual people",
    "straight": "straight people", "asexual": "asexual people",
    # not a group
    "unknown": "“unknown” answer",
}
# the response-level stereotype role (--attribute role)
ROLE_LABELS: dict[str, str] = {"biased": "the stereotyped answer", "counter": "the other person's answer",
                               "none": "“unknown” answer"}


def humanize(tag: str) -> str:
    """A tag no map knows, split into words: ``"LatinSouthAmerica"`` -> ``"Latin South America"``."""
    s = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", str(tag)).replace("_", " ").strip()
    return s or str(tag)


def label_map(runs_dir: str | Path | None = None) -> dict[str, str]:
    """The shipped BBQ map and role names, overridden by ``<runs_dir>/group_labels.json`` when it exists."""
    out = {**BBQ_GROUP_LABELS, **ROLE_LABELS}
    if runs_dir is not None:
        p = Path(runs_dir) / LABELS_FILE
        if p.exists():
            try:
                user = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise DataError(f"{p}: not a readable label map ({exc}); fix or delete it") from None
            out.update({str(k): str(v) for k, v in (user or {}).items()})
    return out


def group_label(tag: object, labels: dict[str, str] | None = None) -> str:
    """The words for one group tag (``labels``: a :func:`label_map`; default the shipped one)."""
    if tag is None or (isinstance(tag, float) and tag != tag):
        return "(no group)"
    labels = labels if labels is not None else {**BBQ_GROUP_LABELS, **ROLE_LABELS}
    t = str(tag)
    return labels.get(t) or humanize(t)


def group_caption(tag: object, n: int, labels: dict[str, str] | None = None, small: int = SMALL_GROUP_N) -> str:
    """``"women (n=64)"``, or ``"Sikhs (n=4, small)"`` under ``small`` members: the label beside its size."""
    flag = ", small" if int(n) < small else ""
    return f"{group_label(tag, labels)} (n={int(n)}{flag})"


def parse_label_map(name: str, data: bytes) -> dict[str, str]:
    """A user's label map from an uploaded file: JSON ``{"tag": "label"}`` or CSV with ``tag,label`` columns.

    Raises :class:`DataError` naming the problem (wrong type, empty, missing columns, non-text labels).
    """
    suffix = Path(name).suffix.lower()
    text = data.decode("utf-8-sig", errors="strict") if data else ""
    if not text.strip():
        raise DataError(f"{name}: the label map is empty")
    if suffix == ".json":
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise DataError(f"{name}: not valid JSON ({exc})") from None
        if not isinstance(obj, dict) or not all(isinstance(v, str) for v in obj.values()):
            raise DataError(f"{name}: expected a JSON object of tag -> label text, e.g. {{\"F\": \"women\"}}")
        out = {str(k): v.strip() for k, v in obj.items()}
    elif suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        cols = {c.strip().lower() for c in (rows[0].keys() if rows else [])}
        if not {"tag", "label"} <= cols:
            raise DataError(f"{name}: a CSV label map needs the columns tag,label (found {sorted(cols) or 'none'})")
        out = {}
        for r in rows:
            r = {k.strip().lower(): (v or "").strip() for k, v in r.items() if k}
            if r["tag"]:
                out[r["tag"]] = r["label"]
    else:
        raise DataError(f"{name}: a label map is a .json or .csv file, not {suffix or '(no suffix)'}")
    out = {k: v for k, v in out.items() if k}
    if not out or not all(out.values()):
        raise DataError(f"{name}: every tag needs a non-empty label")
    return out


def save_label_map(runs_dir: str | Path, mapping: dict[str, str]) -> Path:
    """Store a user's map as ``<runs_dir>/group_labels.json`` (merged over an existing one); return its path."""
    from faro_core.io import write_json

    root = Path(runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    p = root / LABELS_FILE
    old = {}
    if p.exists():
        try:
            old = json.loads(p.read_text(encoding="utf-8")) or {}
        except ValueError:
            old = {}
    write_json(p, {**old, **mapping})
    return p
