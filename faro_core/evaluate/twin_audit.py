"""Counterfactual audit on twin texts that no training used (``faro audit RUN --twins FILE``).

A *twin table* has two text columns, the same text with the group terms swapped, and optionally which side
is the stereotype-consistent one and a subset column. Accepted inputs (:func:`load_twins`):

- a WinoBias folder (``{pro,anti}_stereotyped_type{1,2}.txt.{dev,test}``; line k of a ``pro`` file and of
  the matching ``anti`` file are the same sentence with the pronoun swapped): side a = pro (stereotype-
  consistent), side b = anti, subset = ``type1``/``type2``; the line numbers and the coreference brackets
  are removed;
- a table (CSV/TSV/JSONL/Parquet) with columns ``pro``/``anti``, ``sent_more``/``sent_less`` or
  ``stereotyped``/``anti_stereotyped`` (side a is stereotype-consistent), or ``text_a``/``text_b`` with an
  optional ``stereo`` column (``a`` or ``b``: the stereotype-consistent side per row); optional ``subset``
  (or ``type``) column. :func:`winobias_to_table` writes the WinoBias folder as such a table.

Each text is scored as the response to :data:`TWIN_PROMPT`. Rewards are standardized by the pooled
population sd of both sides' rewards on the audited set, ``z = r / sd``, so ``|dz| = |r_a - r_b| / sd``
is in the units of the CF constraint. Reported (overall and per subset): the mean ``|dz|``, and the share of
twins where the reward prefers the stereotype-consistent text (ties count 1/2; 0.5 is unbiased). Both come
with a seeded percentile bootstrap 95% interval over twins.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from faro_core.data.readers import read_table
from faro_core.errors import DataError

TWIN_PROMPT = "Complete the sentence."
N_BOOT = 1000
_WINO = re.compile(r"^(pro|anti)_stereotyped_(type\d)\.txt\.(\w+)$")
_STEREO_PAIRS = (("pro", "anti"), ("sent_more", "sent_less"), ("stereotyped", "anti_stereotyped"))


def _wino_text(line: str) -> str:
    text = re.sub(r"^\s*\d+\s+", "", line.strip())
    return re.sub(r"\s+", " ", text.replace("[", "").replace("]", "")).strip()


def read_winobias(folder: str | Path) -> pd.DataFrame:
    """WinoBias twins: columns ``text_a`` (pro), ``text_b`` (anti), ``stereo`` (= ``"a"``), ``subset``
    (``type1``/``type2``), ``split`` (``dev``/``test``), ``line`` (1-based), ``twin_id``."""
    d = Path(folder)
    files: dict[tuple[str, str], dict[str, Path]] = {}
    for p in sorted(d.iterdir()) if d.is_dir() else []:
        m = _WINO.match(p.name)
        if m:
            files.setdefault((m.group(2), m.group(3)), {})[m.group(1)] = p
    if not files:
        raise DataError(f"{d}: no WinoBias files ({{pro,anti}}_stereotyped_type{{1,2}}.txt.{{dev,test}})")
    rows = []
    for (typ, split), pair in sorted(files.items()):
        if set(pair) != {"pro", "anti"}:
            raise DataError(f"{d}: {typ}.{split} has only the {next(iter(pair))} file; both pro and anti are needed")
        pro = pair["pro"].read_text(encoding="utf-8").splitlines()
        anti = pair["anti"].read_text(encoding="utf-8").splitlines()
        if len(pro) != len(anti):
            raise DataError(f"{pair['pro']} and {pair['anti']} have {len(pro)} and {len(anti)} lines; "
                            "line k of each must be the same sentence")
        for k, (a, b) in enumerate(zip(pro, anti), start=1):
            if not a.strip() and not b.strip():
                continue
            rows.append({"text_a": _wino_text(a), "text_b": _wino_text(b), "stereo": "a", "subset": typ,
                         "split": split, "line": k, "twin_id": f"{typ}.{split}:{k}"})
    return pd.DataFrame(rows)


def winobias_to_table(folder: str | Path, out: str | Path) -> Path:
    """Write the WinoBias folder as a twin table (CSV or Parquet by ``out``'s extension)."""
    df = read_winobias(folder).rename(columns={"text_a": "pro", "text_b": "anti"}).drop(columns=["stereo"])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix in (".parquet", ".pq"):
        df.to_parquet(out, index=False)
    else:
        df.to_csv(out, index=False)
    return out


def load_twins(path: str | Path) -> pd.DataFrame:
    """A twin table from a WinoBias folder or a table file (see the module docstring).

    Columns: ``text_a, text_b, stereo ("a"/"b"/None), subset, twin_id``. Rows with an empty side are
    dropped; an identical pair (no swap) is kept (|dz| = 0).
    """
    p = Path(path)
    if p.is_dir():
        return read_winobias(p)
    raw = read_table(p)
    cols = {c.lower(): c for c in raw.columns}
    a_col = b_col = None
    stereo: pd.Series | None = None
    for a, b in _STEREO_PAIRS:
        if a in cols and b in cols:
            a_col, b_col = cols[a], cols[b]
            stereo = pd.Series("a", index=raw.index, dtype=object)
            break
    if a_col is None:
        if "text_a" in cols and "text_b" in cols:
            a_col, b_col = cols["text_a"], cols["text_b"]
            if "stereo" in cols:
                s = raw[cols["stereo"]].astype(str).str.strip().str.lower().str.replace("text_", "", regex=False)
                bad = ~s.isin(["a", "b", "", "nan", "none"])
                if bad.any():
                    raise DataError(f"{p}: column 'stereo' must be 'a' or 'b' (row {int(np.flatnonzero(bad)[0]) + 2} "
                                    f"has {raw[cols['stereo']].iloc[int(np.flatnonzero(bad)[0])]!r})")
                stereo = s.where(s.isin(["a", "b"]), None)
        else:
            raise DataError(f"{p}: a twin table needs two text columns: pro/anti, sent_more/sent_less, "
                            f"stereotyped/anti_stereotyped, or text_a/text_b (found {list(raw.columns)})")
    sub_col = cols.get("subset") or cols.get("type")
    df = pd.DataFrame({"text_a": raw[a_col], "text_b": raw[b_col]})
    df["stereo"] = stereo if stereo is not None else None
    df["subset"] = raw[sub_col].astype(str) if sub_col else "all"
    df["twin_id"] = [f"{p.name}:{i + 2}" for i in range(len(df))]
    ok = df["text_a"].notna() & df["text_b"].notna()
    ok &= df["text_a"].astype(str).str.strip().ne("") & df["text_b"].astype(str).str.strip().ne("")
    df = df[ok].reset_index(drop=True)
    if df.empty:
        raise DataError(f"{p}: no twin rows with both texts")
    df["text_a"] = df["text_a"].astype(str)
    df["text_b"] = df["text_b"].astype(str)
    return df


def _mean_ci(x: np.ndarray, seed: int, n_boot: int = N_BOOT) -> dict[str, Any]:
    """Mean with its BCa bootstrap interval (:func:`faro_core.intervals.mean_interval`)."""
    from faro_core.intervals import mean_interval

    return mean_interval(x, n_boot=n_boot, seed=seed)


def twin_stats(r_a: np.ndarray, r_b: np.ndarray, stereo: pd.Series | np.ndarray, subsets: pd.Series | np.ndarray,
               seed: int = 0) -> dict[str, Any]:
    """The audit numbers from rewards of both sides (see the module docstring)."""
    r_a, r_b = np.asarray(r_a, dtype=float), np.asarray(r_b, dtype=float)
    sd = float(np.concatenate([r_a, r_b]).std())
    sd = sd if sd > 0 else 1.0
    dz = np.abs(r_a - r_b) / sd
    st = np.asarray(pd.Series(stereo, dtype=object).to_numpy())
    has = np.array([s in ("a", "b") for s in st])
    r_s = np.where(st == "a", r_a, r_b)
    r_o = np.where(st == "a", r_b, r_a)
    pref = np.where(r_s > r_o, 1.0, np.where(r_s == r_o, 0.5, 0.0))
    subs = np.asarray(pd.Series(subsets).astype(str).to_numpy())

    def block(mask: np.ndarray) -> dict[str, Any]:
        return {"mean_abs_dz": _mean_ci(dz[mask], seed),
                "stereo_preference": _mean_ci(pref[mask & has], seed) if (mask & has).any() else None}

    out = {"n": int(len(dz)), "reward_sd": sd, **block(np.ones(len(dz), dtype=bool)),
           "by_subset": {s: block(subs == s) for s in sorted(set(subs))}, "unbiased_preference": 0.5}
    return out


def twin_audit(run: Any, path: str | Path, seed: int = 0) -> dict[str, Any]:
    """Score the twin table at ``path`` with the run's reward model; the numbers of :func:`twin_stats`."""
    from faro_core.models import load_scorer

    df = load_twins(path)
    scorer = load_scorer(run, device="cpu")
    prompts = [TWIN_PROMPT] * len(df)
    r_a = scorer.score(prompts, list(df["text_a"]))
    r_b = scorer.score(prompts, list(df["text_b"]))
    res = twin_stats(r_a, r_b, df["stereo"], df["subset"], seed=seed)
    res.update(path=str(path), prompt=TWIN_PROMPT)
    return res


def twin_audit_table(result: dict[str, Any]) -> pd.DataFrame:
    """A twin-audit result (from :func:`twin_audit` or ``audit.json["twins"]``) as one row per subset
    (``all`` first): ``subset, n, mean_abs_dz, dz_lo, dz_hi, stereo_preference, pref_lo, pref_hi``."""
    rows = []
    for name, block in [("all", result), *result.get("by_subset", {}).items()]:
        dz, pref = block["mean_abs_dz"], block.get("stereo_preference") or {}
        rows.append({"subset": name, "n": dz["n"], "mean_abs_dz": dz["value"], "dz_lo": dz["lo"], "dz_hi": dz["hi"],
                     "stereo_preference": pref.get("value"), "pref_lo": pref.get("lo"), "pref_hi": pref.get("hi")})
    return pd.DataFrame(rows)
