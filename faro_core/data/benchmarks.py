"""Public preference benchmarks as preference data: CrowS-Pairs (an audit set) and Anthropic HH-RLHF.

- :func:`load_crows`: one pair per row, prompt = :data:`CROWS_PROMPT`, chosen = ``sent_less`` (the less
  stereotypical sentence, the fair label), rejected = ``sent_more``; group = category = ``bias_type``.
- :func:`load_hh`: the shared dialogue prefix up to the last ``Assistant:`` is the prompt, the rest of each
  dialogue the response; no groups (used to measure quality retention).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from faro_core.data import bbq as bbq_mod
from faro_core.data.readers import check_unique, read_table
from faro_core.data.schema import PreferenceData
from faro_core.errors import DataError

CROWS_PROMPT = "Complete the sentence."
EMPTY_RESPONSE = "[empty response]"


def load_crows(path: str | Path) -> PreferenceData:
    """CrowS-Pairs CSV: chosen = ``sent_less``, rejected = ``sent_more`` (see module docstring)."""
    p = Path(path)
    raw = read_table(p)
    need = ["sent_more", "sent_less", "bias_type"]
    missing = [c for c in need if c not in raw.columns]
    if missing:
        raise DataError(f"{p}: not a CrowS-Pairs file: missing column(s) {missing}")
    ids = raw[raw.columns[0]] if str(raw.columns[0]).startswith("Unnamed") else pd.Series(range(len(raw)))
    ids = ids.astype(str).to_numpy()
    df = pd.DataFrame({
        "item_id": [f"crows-{i}" for i in ids],
        "pair_id": [f"crows-{i}" for i in ids],
        "prompt": CROWS_PROMPT,
        "chosen": raw["sent_less"].to_numpy(),
        "rejected": raw["sent_more"].to_numpy(),
        "group": raw["bias_type"].to_numpy(),
        "category": raw["bias_type"].to_numpy(),
        "gold": np.nan,
        "source": [f"crows:{p.name}:{k + 2}" for k in range(len(raw))],  # CSV line (header = line 1)
    })
    if "stereo_antistereo" in raw.columns:
        df["stereo_antistereo"] = raw["stereo_antistereo"].to_numpy()
    check_unique(df, "pair_id", p, "row id")
    return PreferenceData(df, name="crows", meta={"source": str(p), "format": "crows"})


def split_dialogue(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Shared prefix up to (and including) the last ``Assistant:`` → prompt; the rest → responses."""
    n = 0
    lim = min(len(chosen), len(rejected))
    while n < lim and chosen[n] == rejected[n]:
        n += 1
    k = chosen.rfind("Assistant:", 0, n)
    if k < 0:
        k = chosen.rfind("Assistant:")
    if k < 0:
        return "", chosen.strip(), rejected.strip()
    k += len("Assistant:")
    return chosen[:k].strip(), chosen[k:].strip(), rejected[k:].strip()


def _hh_files(p: Path) -> list[Path]:
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.name.endswith((".jsonl", ".jsonl.gz")))
        if not files:
            raise DataError(f"{p}: no HH-RLHF .jsonl / .jsonl.gz files in this folder")
        return files
    if not p.exists():
        raise DataError(f"{p}: file not found")
    return [p]


def load_hh(path: str | Path) -> PreferenceData:
    """HH-RLHF dialogues: shared prefix = prompt, final assistant turns = chosen / rejected.

    An empty final response (a few upstream rows) is kept as :data:`EMPTY_RESPONSE`.
    """
    p = Path(path)
    rows = []
    n_empty = 0
    for f in _hh_files(p):
        rel = f.relative_to(p) if p.is_dir() else Path(f.name)
        tag = str(rel).replace(os.sep, "/")
        for lineno, rec in bbq_mod.iter_jsonl(f):
            for key in ("chosen", "rejected"):
                if not isinstance(rec.get(key), str) or not rec[key].strip():
                    raise DataError(f"{f}: line {lineno}: field {key!r} is missing or empty")
            prompt, ch, rj = split_dialogue(rec["chosen"], rec["rejected"])
            if not prompt:
                raise DataError(f"{f}: line {lineno}: no 'Assistant:' turn; not an HH-RLHF dialogue")
            if not ch or not rj:
                n_empty += 1
            pid = f"hh:{tag}:{lineno}"
            rows.append({"item_id": pid, "pair_id": pid, "prompt": prompt, "chosen": ch or EMPTY_RESPONSE,
                         "rejected": rj or EMPTY_RESPONSE, "source": f"hh:{tag}", "category": tag.split("/")[0],
                         "gold": np.nan})
    if not rows:
        raise DataError(f"{p}: the dataset is empty (no dialogues)")
    meta = {"source": str(p), "format": "hh", "empty_responses": n_empty}
    return PreferenceData(pd.DataFrame(rows), name="hh", meta=meta)
