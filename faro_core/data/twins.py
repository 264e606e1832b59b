"""Counterfactual twins: the same text with the group terms swapped (what CF looks at).

Swaps are whole-word, simultaneous (``a <-> b`` in one pass, never ``a -> b -> a``) and keep the case of
the matched text (``lower``, ``Title``, ``UPPER``). Multi-word terms are allowed; longer terms win over
shorter ones that they contain.

- BBQ: :func:`swap_pair_terms` with the two answers' group words (``answer_info[ans][0]``).
- Free text: :func:`add_text_twins` with a list of term pairs; :data:`DEFAULT_TERM_PAIRS` covers gender,
  religion, age and nationality terms.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import pandas as pd

# (a, b) pairs; the mapping is built in order, the first pair that mentions a term wins (so "her" -> "his").
DEFAULT_TERM_PAIRS: tuple[tuple[str, str], ...] = (
    # gender
    ("he", "she"), ("his", "her"), ("him", "her"), ("himself", "herself"), ("man", "woman"),
    ("men", "women"), ("boy", "girl"), ("boys", "girls"), ("father", "mother"), ("fathers", "mothers"),
    ("dad", "mom"), ("son", "daughter"), ("sons", "daughters"), ("brother", "sister"),
    ("brothers", "sisters"), ("husband", "wife"), ("husbands", "wives"), ("uncle", "aunt"),
    ("nephew", "niece"), ("king", "queen"), ("male", "female"), ("males", "females"),
    ("gentleman", "lady"), ("gentlemen", "ladies"), ("boyfriend", "girlfriend"), ("mr", "mrs"),
    ("grandfather", "grandmother"), ("grandson", "granddaughter"),
    # religion
    ("Christian", "Muslim"), ("Christians", "Muslims"), ("church", "mosque"), ("Bible", "Quran"),
    ("Jewish", "Hindu"), ("Jews", "Hindus"), ("synagogue", "temple"), ("Catholic", "Protestant"),
    ("Buddhist", "Sikh"), ("atheist", "believer"),
    # age
    ("old", "young"), ("older", "younger"), ("oldest", "youngest"), ("elderly", "youthful"),
    ("retiree", "student"), ("retirees", "students"), ("senior", "junior"),
    # nationality
    ("American", "Mexican"), ("Americans", "Mexicans"), ("British", "Nigerian"), ("Chinese", "Indian"),
    ("Japanese", "Kenyan"), ("German", "Pakistani"), ("French", "Iranian"), ("Italian", "Syrian"),
)


def _case_like(template: str, word: str) -> str:
    """Give ``word`` the case pattern of ``template`` (UPPER, Title, lower; else ``word`` as given)."""
    letters = [c for c in template if c.isalpha()]
    if len(letters) > 1 and all(c.isupper() for c in letters):
        return word.upper()
    if letters and letters[0].isupper():
        return word[:1].upper() + word[1:]
    if letters and all(c.islower() for c in letters):
        # a proper noun stays capitalized ("atheist" -> "Muslim" would read wrong as "muslim"? keep given)
        return word if any(c.isupper() for c in word) else word.lower()
    return word


class TermSwapper:
    """Simultaneous whole-word swapper for a fixed mapping (case-insensitive keys)."""

    def __init__(self, pairs: Iterable[Sequence[str]]) -> None:
        mapping: dict[str, str] = {}
        for pair in pairs:
            if len(pair) != 2:
                raise ValueError(f"a term pair must have two terms, got {pair!r}")
            a, b = str(pair[0]).strip(), str(pair[1]).strip()
            if not a or not b or a.lower() == b.lower():
                continue
            mapping.setdefault(a.lower(), b)
            mapping.setdefault(b.lower(), a)
        self.mapping = mapping
        if mapping:
            alts = sorted(mapping, key=len, reverse=True)
            body = "|".join(re.escape(t).replace(r"\ ", r"\s+") for t in alts)
            self.pattern: re.Pattern[str] | None = re.compile(rf"(?<![\w-])(?:{body})(?![\w-])", re.IGNORECASE)
        else:
            self.pattern = None

    def _repl(self, m: re.Match[str]) -> str:
        text = m.group(0)
        key = re.sub(r"\s+", " ", text).lower()
        return _case_like(text, self.mapping[key])

    def __call__(self, text: str) -> str:
        if self.pattern is None or not isinstance(text, str):
            return text
        return self.pattern.sub(self._repl, text)

    def count(self, text: str) -> int:
        return 0 if self.pattern is None or not isinstance(text, str) else len(self.pattern.findall(text))


def swap_pair_terms(text: str, a: str, b: str) -> str:
    """Swap ``a`` and ``b`` (whole words, simultaneous, case kept) in ``text``."""
    return TermSwapper([(a, b)])(text)


def add_text_twins(df: pd.DataFrame, term_pairs: Iterable[Sequence[str]] | None = None) -> pd.DataFrame:
    """Fill ``cf_prompt/cf_chosen/cf_rejected/twin_id`` for rows whose text contains a swappable term.

    Rows where nothing changes get no twin (``None``). ``term_pairs`` defaults to
    :data:`DEFAULT_TERM_PAIRS`.
    """
    swap = TermSwapper(DEFAULT_TERM_PAIRS if term_pairs is None else term_pairs)
    df = df.copy()
    cf = {c: df[c].map(swap) for c in ("prompt", "chosen", "rejected")}
    changed = ((cf["prompt"] != df["prompt"]) | (cf["chosen"] != df["chosen"])
               | (cf["rejected"] != df["rejected"]))
    keep = changed.to_numpy()

    def _obj(values: Iterable[object]) -> pd.Series:  # object dtype, so "no twin" stays None (pandas >= 3)
        return pd.Series([v if k else None for v, k in zip(values, keep)], index=df.index, dtype=object)

    for c in ("prompt", "chosen", "rejected"):
        df[f"cf_{c}"] = _obj(cf[c])
    df["twin_id"] = _obj(f"{p}~cf" for p in df["pair_id"].astype(str))
    return df
