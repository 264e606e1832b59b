"""Build BBQ-format items from BBQ's hand-written templates (Parrish et al. 2022, CC BY 4.0).

A template folder holds one ``CATEGORY.csv`` per category (the BBQ template format) and the two
vocabularies ``vocabulary.csv`` (``Category, Pilot_include, SubCat, Name, Info``) and
``vocabulary_proper_names.csv`` (``Name, First_last, gender, ethnicity``). :func:`build_bbq` writes one
``CATEGORY.jsonl`` per template file in the published BBQ fields (``example_id, question_index,
question_polarity, context_condition, category, answer_info, additional_metadata{subcategory,
stereotyped_groups, version, source}, context, question, ans0..ans2, label``), readable by
:func:`faro_core.data.bbq.load_bbq_items`.

Expansion of one template row (a "pair" is the two people filled into the ``{{NAME1}}``/``{{NAME2}}``
slots, plus their ``{{GEN*}}``/``{{OCC*}}`` slots in the intersectional categories):

- **Names column** (``NAME1: [a, b]; NAME2: [c, d]``; ``{{NAME1}}`` keys and ``;``-separated items also
  read): every ``(NAME1, NAME2)`` combination, in that order (the template's other *version* row carries
  the swapped order). Tags from ``NAME1_info``/``NAME2_info``.
- **Vocabulary rows** (no Names): the category's vocabulary words (``Pilot_include != No``; only the
  row's ``Subcategory`` when it has one). *Targets* are the words naming a ``Known_stereotyped_groups``
  entry (by word or ``Info`` tag; ``F``/``M`` also match gender words); when none does, every word is a
  target. At most :data:`MAX_TARGETS` targets and, per target, :data:`MAX_PARTNERS` non-target
  partners are drawn at random; each (target, partner) pair is used in both orders. Targets named only by
  their ``Info`` tag (SES occupations of level ``lowSES``) are all used, like a Names list.
- **Proper-name rows** (``Proper_nouns_only`` TRUE): first names (Gender_identity, SES: the
  ``first_only`` names; tag = gender, or ``NAMEx_info``) or full names (first + last name of one
  ethnicity; tag ``GENDER-ETHNICITY``). :data:`MAX_TARGETS` target names x :data:`MAX_PARTNERS` partner
  names, both orders. Both names share the gender the row states (``Stated_gender_info``), else one
  drawn per pair (race is the only contrast).
- **Intersectional rows** (``Known_stereotyped_race`` + ``Known_stereotyped_var2``): a target is a
  (race, var2) combination of a stereotyped race with the stereotyped gender / SES level; partners differ
  in race only (up to :data:`MAX_PARTNERS` races), in var2 only, or in both (up to :data:`MAX_PARTNERS`
  races), both orders (``additional_metadata.contrast`` = ``race``/``var2``/``both``).
  Tags are ``VAR2-RACE`` (``F-Black``, ``lowSES-Latino``) and ``stereotyped_groups`` the target tags.
- **Lexical diversity** (``WORD1: [..]; WORD2: [..]``): one word per slot drawn per pair, shared by the
  pair's four items.

Each pair gives four items in the published order: (ambiguous, negative), (disambiguated, negative),
(ambiguous, non-negative), (disambiguated, non-negative). The ambiguous context is the template's; the
disambiguated one appends the disambiguating sentence. The correct answer is the "unknown" answer in
ambiguous contexts and ``Answer_negative`` / ``Answer_non_negative`` in disambiguated ones. The unknown
answer's wording (one of :data:`UNKNOWN_OPTIONS`) and the order of the three answers are drawn per pair.

All draws come from a ``random.Random`` seeded by ``(seed, category, row)``: a build is deterministic for a
seed, and a category's items do not depend on which other categories are built. :data:`MAX_TARGETS` and
:data:`MAX_PARTNERS` are defaults; :class:`SampleSizes` overrides them. Filled text gets the published
files' two corrections (see :func:`_fill`).

Validation helpers: :func:`compare_with_published` (counts per stratum, exact shares, classified
differences), :func:`reachable_share` (published items an exhaustive build contains) and
:func:`proper_name_check` (names come from their tag's group).
"""

from __future__ import annotations

import csv
import itertools
import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faro_core.errors import DataError

UNKNOWN_OPTIONS: tuple[str, ...] = (
    "Unknown", "Cannot be determined", "Can't be determined", "Not answerable", "Not known",
    "Not enough info", "Not enough information", "Cannot answer", "Can't answer", "Undetermined",
)
MAX_TARGETS = 5
MAX_PARTNERS = 5


@dataclass(frozen=True)
class SampleSizes:
    """How many targets, and partners per target, a row draws (the published files' 5 and 5 by default)."""

    targets: int = MAX_TARGETS
    partners: int = MAX_PARTNERS


DEFAULT_SIZES = SampleSizes()
VOCABULARY_FILE = "vocabulary.csv"
NAMES_FILE = "vocabulary_proper_names.csv"
NON_CATEGORY_FILES = {VOCABULARY_FILE, NAMES_FILE, "Filler_items.csv"}
REQUIRED_COLUMNS = ("Q_id", "Ambiguous_Context", "Disambiguating_Context", "Question_negative_stereotype",
                    "Question_non_negative", "Answer_negative", "Answer_non_negative")
GENDER_WORD_TAGS = {"man": "M", "men": "M", "boy": "M", "boys": "M", "male": "M", "husband": "M",
                    "woman": "F", "women": "F", "girl": "F", "girls": "F", "female": "F", "wife": "F"}
# The group labels templates use for races, mapped to the ethnicity labels of the proper-name vocabulary.
RACE_TO_NAME_ETHNICITY = {"black": "Black", "africanamerican": "Black", "hispanic": "Latino",
                          "latino": "Latino", "white": "White", "caucasian": "White", "european": "White",
                          "asian": "Asian", "arab": "Arab", "middleeastern": "Arab"}
RAW_COLUMNS = ("Answer_negative", "Answer_non_negative")  # published answers keep the template's spaces
_SLOT = re.compile(r"\{\{\s*([A-Z]+)([12])\s*\}\}")


def _norm(s: Any) -> str:
    return re.sub(r"[^a-z0-9]", "", str(s).lower())


def _clean(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip()


# ------------------------------------------------------------------------------------------ parsing
def parse_slot_lists(text: str) -> dict[str, list[str]]:
    """``"NAME1: [a, b]; NAME2: [c]"`` (keys with or without ``{{ }}``) -> ``{"NAME1": [a, b], "NAME2": [c]}``.

    Items are separated by commas (or semicolons inside one bracket). A JSON list of strings
    (``'["man", "woman"]'``) gives ``{"LIST": [...]}``; a JSON list of two lists gives
    ``{"LIST1": [...], "LIST2": [...]}``. Empty text gives ``{}``.
    """
    text = (text or "").strip()
    if not text:
        return {}
    if text.startswith("["):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, list) and obj and all(isinstance(x, list) for x in obj):
            return {f"LIST{i + 1}": [_clean(str(v)) for v in x] for i, x in enumerate(obj)}
        if isinstance(obj, list):
            return {"LIST": [_clean(str(v)) for v in obj]}
    out: dict[str, list[str]] = {}
    for m in re.finditer(r"\{*\s*([A-Z]+\d)\s*\}*\s*:\s*\[([^\]]*)\]?", text):
        items = [_clean(x) for x in re.split(r"[,;]", m.group(2))]
        out[m.group(1)] = [x for x in items if x]
    return out


def _json_list(text: str) -> list[str]:
    text = (text or "").strip()
    if not text:
        return []
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return [_clean(x.strip("[]\"' ")) for x in text.split(",") if x.strip("[]\"' ")]
    if isinstance(obj, str):
        return [obj]
    return [str(x) for x in obj] if isinstance(obj, list) else [str(obj)]


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a template / vocabulary CSV as ``{column: stripped text}``; errors name the file."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            rows = [{(k or "").strip(): (v or "") if (k or "").strip() in RAW_COLUMNS else (v or "").strip()
                     for k, v in r.items()} for r in csv.DictReader(fh)]
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV ({exc})") from None
    return rows


@dataclass
class Vocabulary:
    """The group words per category and the proper names (see the module docstring)."""

    words: dict[str, list[dict[str, str]]] = field(default_factory=dict)   # category -> rows
    first_only: dict[str, list[str]] = field(default_factory=dict)         # gender -> names
    first: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (gender, ethnicity) -> names
    last: dict[str, list[str]] = field(default_factory=dict)               # ethnicity -> names

    @classmethod
    def from_dir(cls, folder: Path) -> Vocabulary:
        voc = cls()
        vpath = folder / VOCABULARY_FILE
        if vpath.exists():
            for r in read_csv_rows(vpath):
                if r.get("Pilot_include", "").lower() == "no" or not r.get("Name"):
                    continue
                voc.words.setdefault(r.get("Category", ""), []).append(r)
        npath = folder / NAMES_FILE
        if npath.exists():
            for r in read_csv_rows(npath):
                kind, g, eth, name = r.get("First_last", ""), r.get("gender", ""), r.get("ethnicity", ""), r.get("Name", "")
                if not name:
                    continue
                if kind == "first_only":
                    voc.first_only.setdefault(g, []).append(name)
                elif kind == "first":
                    voc.first.setdefault((g, eth), []).append(name)
                elif kind == "last":
                    voc.last.setdefault(eth, []).append(name)
        return voc

    def category_words(self, category: str, subcat: str = "") -> list[tuple[str, str]]:
        """``(word, tag)`` of a category (tag = ``Info``, else a gender word's F/M, else the word)."""
        out, seen = [], set()
        for r in self.words.get(category, []):
            if subcat and r.get("SubCat", "") != subcat:
                continue
            w = r["Name"]
            if w in seen:
                continue
            seen.add(w)
            out.append((w, r.get("Info") or GENDER_WORD_TAGS.get(w.lower(), w)))
        return out

    def ethnicities(self) -> list[str]:
        return sorted({e for (_, e) in self.first} & set(self.last))


# --------------------------------------------------------------------------------------- one person
@dataclass(frozen=True)
class Person:
    """One side of a pair: its slot values (``NAME``, ``GEN``, ``OCC``), answer-info term and group tag."""

    slots: tuple[tuple[str, str], ...]
    tag: str
    term: str = ""

    def value(self, slot: str) -> str | None:
        return dict(self.slots).get(slot)


def _fill(text: str, p1: Person, p2: Person, words: dict[str, str], clean: bool = True) -> str:
    """Fill the slots of ``text``; "a"/"A" after a space and before a filled-in word starting with a vowel becomes "an"/"An", and
    "lesbian man/men" becomes "lesbian woman/women" (the published files' two corrections). ``clean``
    collapses whitespace (contexts and questions; answers keep theirs, as published)."""
    def value(kind: str, idx: str, default: str) -> str:
        if kind == "WORD":
            return words.get(f"WORD{idx}", default)
        v = (p1 if idx == "1" else p2).value(kind)
        return v if v is not None else default

    def repl(m: re.Match[str]) -> str:
        art, kind, idx = m.group(1), m.group(2), m.group(3)
        v = value(kind, idx, m.group(0)[len(art or ""):])
        if art:
            a = art.strip()
            if v[:1].lower() in "aeiou":
                a = a + "n"
            return f"{a} {v}" if art.endswith(" ") else a + v
        return v

    out = re.sub(r"((?<=\s)[Aa] )?\{\{\s*([A-Z]+)([12])\s*\}\}", repl, text)
    out = re.sub(r"\blesbian (m)(a|e)n\b", lambda m: f"lesbian wom{m.group(2)}n", out)
    return _clean(out) if clean else out


def _sample(rng: random.Random, xs: Sequence[Any], k: int | None) -> list[Any]:
    """``k`` items drawn without replacement (all of them when ``k`` is None or not fewer than the items)."""
    xs = list(xs)
    return xs if k is None or len(xs) <= k else rng.sample(xs, k)


def _both_orders(pairs: Iterable[tuple[Person, Person]]) -> list[tuple[Person, Person]]:
    out, seen = [], set()
    for a, b in pairs:
        for p in ((a, b), (b, a)):
            key = (p[0].slots, p[1].slots)
            if key not in seen and p[0].slots != p[1].slots:
                seen.add(key)
                out.append(p)
    return out


def _is_target(word: str, tag: str, stereotyped: Sequence[str]) -> bool:
    sg = {_norm(s) for s in stereotyped}
    cands = {_norm(word), _norm(tag), _norm(GENDER_WORD_TAGS.get(word.lower(), ""))}
    return bool(cands & sg)


# --------------------------------------------------------------------------------------- one row
@dataclass
class RowPlan:
    pairs: list[tuple[Person, Person]]
    stereotyped: list[str]
    contrasts: list[str] | None = None
    note: str = ""


def _names_pairs(row: dict[str, str], lists: dict[str, list[str]]) -> list[tuple[Person, Person]]:
    n1, n2 = lists.get("NAME1", []), lists.get("NAME2", [])
    t1, t2 = row.get("NAME1_info", ""), row.get("NAME2_info", "")
    return [(Person((("NAME", a),), t1 or a, a), Person((("NAME", b),), t2 or b, b))
            for a in n1 for b in n2 if a != b]


def _vocab_pairs(words: list[tuple[str, str]], stereotyped: Sequence[str], rng: random.Random,
                 sizes: SampleSizes, exhaustive: bool = False) -> list[tuple[Person, Person]]:
    targets = [(w, t) for w, t in words if _is_target(w, t, stereotyped)]
    # targets named by their Info tag only (SES occupations: "lowSES") are variants of one group, used
    # like a Names list: every one of them, each with up to ``sizes.partners`` partners
    by_tag_only = bool(targets) and not any(_is_target(w, w, stereotyped) for w, _ in targets)
    if not targets:
        targets = list(words)
    others = [(w, t) for w, t in words if (w, t) not in targets] or list(words)
    pairs = []
    for w, t in _sample(rng, targets, None if exhaustive or by_tag_only else sizes.targets):
        cands = [(w2, t2) for w2, t2 in others if w2 != w]
        for w2, t2 in _sample(rng, cands, None if exhaustive else sizes.partners):
            pairs.append((Person((("NAME", w),), t, w), Person((("NAME", w2),), t2, w2)))
    return _both_orders(pairs)


def _stated_gender(row: dict[str, str]) -> str | None:
    g = _norm(row.get("Stated_gender_info", ""))
    if g in ("m", "man", "men", "male"):
        return "M"
    if g in ("f", "woman", "women", "female"):
        return "F"
    return None


def _full_name(voc: Vocabulary, gender: str, eth: str, rng: random.Random) -> str:
    return f"{rng.choice(voc.first[(gender, eth)])} {rng.choice(voc.last[eth])}"


def _race_ethnicities(stereotyped: Sequence[str], voc: Vocabulary) -> list[str]:
    have = set(voc.ethnicities())
    out = []
    for s in stereotyped:
        e = RACE_TO_NAME_ETHNICITY.get(_norm(s))
        if e and e in have and e not in out:
            out.append(e)
    return out


def plan_row(category: str, row: dict[str, str], voc: Vocabulary, rng: random.Random,
             exhaustive: bool = False, sizes: SampleSizes | None = None) -> RowPlan:
    """The pairs of one template row (see the module docstring for the rules).

    ``exhaustive``: no downsampling of vocabulary targets/partners (every pair the rules allow; used to
    check that published items are reachable). Proper-name and intersectional rows still sample.
    ``sizes``: the numbers of targets and partners drawn (default :data:`DEFAULT_SIZES`).
    """
    sizes = sizes or DEFAULT_SIZES
    proper = row.get("Proper_nouns_only", "").strip().upper() == "TRUE"
    lists = parse_slot_lists(row.get("Names", ""))
    if "Known_stereotyped_race" in row and row.get("Known_stereotyped_var2", ""):
        return _plan_intersectional(category, row, lists, proper, voc, rng, sizes)
    stereotyped = _json_list(row.get("Known_stereotyped_groups", ""))
    if proper:
        return _plan_proper(category, row, stereotyped, voc, rng, sizes)
    if "NAME1" in lists and "NAME2" in lists:
        return RowPlan(_names_pairs(row, lists), stereotyped)
    words = voc.category_words(category, row.get("Subcategory", ""))
    if not words:
        words = voc.category_words(category)
    if len(words) < 2:
        return RowPlan([], stereotyped, note=f"fewer than 2 vocabulary words for {category!r}")
    if "NAME1" in lists:  # NAME1 listed, NAME2 from the vocabulary
        t1 = row.get("NAME1_info", "")
        pairs = [(Person((("NAME", a),), t1 or a, a), Person((("NAME", w),), t, w))
                 for a in lists["NAME1"] for w, t in _sample(rng, words, None if exhaustive else sizes.partners)]
        return RowPlan(pairs, stereotyped)
    return RowPlan(_vocab_pairs(words, stereotyped, rng, sizes, exhaustive), stereotyped)


def _plan_proper(category: str, row: dict[str, str], stereotyped: list[str], voc: Vocabulary,
                 rng: random.Random, sizes: SampleSizes) -> RowPlan:
    sg = {_norm(s) for s in stereotyped}
    has_info = bool(row.get("NAME1_info") and row.get("NAME2_info"))
    by_gender = category.lower().startswith("gender") or bool(sg & {"f", "m"})
    if not (by_gender or has_info or _race_ethnicities(stereotyped, voc)):
        return RowPlan([], stereotyped, note=f"no proper names for the stereotyped groups {stereotyped} "
                                             "(proper-name rows need gender targets, NAME1_info/NAME2_info, or "
                                             "an ethnicity of the proper-name vocabulary)")
    if by_gender or has_info:
        # first names only; the groups are genders (or the row's NAMEx_info, e.g. SES)
        f, m = voc.first_only.get("F", []), voc.first_only.get("M", [])
        if not f or not m:
            return RowPlan([], stereotyped, note="no first_only names in the proper-name vocabulary")
        if has_info:
            t1, t2 = row["NAME1_info"], row["NAME2_info"]
            pool = f + m
            pairs = []
            for a in _sample(rng, pool, sizes.targets):
                for b in _sample(rng, [x for x in pool if x != a], sizes.partners):
                    pairs += [(Person((("NAME", a),), t1, a), Person((("NAME", b),), t2, b)),
                              (Person((("NAME", b),), t1, b), Person((("NAME", a),), t2, a))]
            return RowPlan(list(dict.fromkeys(pairs)), stereotyped)
        tgt_g = "F" if "f" in sg else "M"
        oth_g = "M" if tgt_g == "F" else "F"
        pairs = [(Person((("NAME", a),), tgt_g, a), Person((("NAME", b),), oth_g, b))
                 for a in _sample(rng, voc.first_only[tgt_g], sizes.targets)
                 for b in _sample(rng, voc.first_only[oth_g], sizes.partners)]
        return RowPlan(_both_orders(pairs), stereotyped)
    targets = _race_ethnicities(stereotyped, voc)
    others = [e for e in voc.ethnicities() if e not in targets]
    stated = _stated_gender(row)
    pairs = []
    for _ in range(sizes.targets):
        for _ in range(sizes.partners):
            g = stated or rng.choice(("F", "M"))
            e1, e2 = rng.choice(targets), rng.choice(others)
            a, b = _full_name(voc, g, e1, rng), _full_name(voc, g, e2, rng)
            pairs.append((Person((("NAME", a),), f"{g}-{e1}", a), Person((("NAME", b),), f"{g}-{e2}", b)))
    return RowPlan(_both_orders(pairs), stereotyped)


def _plan_intersectional(category: str, row: dict[str, str], lists: dict[str, list[str]], proper: bool,
                         voc: Vocabulary, rng: random.Random, sizes: SampleSizes) -> RowPlan:
    races = _json_list(row.get("Known_stereotyped_race", ""))
    var2 = row.get("Known_stereotyped_var2", "").strip()
    by_gender = "gender" in category.lower()
    # var2 values and, per value, the words that fill the GEN/OCC slot
    if by_gender:
        slot = "GEN"
        gwords = lists.get("LIST", [])
        levels = _json_list(row.get("Var2_info", "")) or ["M", "F"]
        if len(gwords) >= 2:
            var2_words = {lv: [w] for lv, w in zip(levels, gwords)}
        else:
            var2_words = {"M": [], "F": []}
    else:
        slot = "OCC"
        levels = _json_list(row.get("Var2_info", "")) or ["lowSES", "highSES"]
        if "LIST1" in lists:
            var2_words = {levels[0]: lists["LIST1"], levels[1]: lists.get("LIST2", [])}
        else:
            var2_words = {}
            for w, t in voc.category_words("SES", "Occupation"):
                var2_words.setdefault(t, []).append(w)
    other_levels = [lv for lv in var2_words if lv != var2]
    if var2 not in var2_words or not other_levels:
        return RowPlan([], [], note=f"no words for {var2!r} in {category}")
    stereotyped = [f"{var2}-{r}" for r in races]

    if proper:
        targets = _race_ethnicities(races, voc)
        others = [e for e in voc.ethnicities() if e not in targets]
    else:
        race_words = [w for w, _ in voc.category_words("Race_ethnicity")]
        targets = [w for w in race_words if _norm(w) in {_norm(r) for r in races}]
        others = [w for w in race_words if w not in targets]
    if not targets or not others:
        return RowPlan([], stereotyped, note="no target or partner race with names/words")
    stated = _stated_gender(row)

    def person(race: str, level: str) -> Person:
        if proper:
            g = level if by_gender else (stated or rng.choice(("F", "M")))
            name = _full_name(voc, g, race, rng)
            slots = [("NAME", name)]
            if not by_gender and var2_words.get(level):
                slots.append((slot, rng.choice(var2_words[level])))
            return Person(tuple(slots), f"{level}-{race}", name)
        slots = [("NAME", race)]
        if var2_words.get(level):
            slots.append((slot, rng.choice(var2_words[level])))
        return Person(tuple(slots), f"{level}-{race}", race)

    pairs: list[tuple[Person, Person]] = []
    contrasts: list[str] = []
    for race in _sample(rng, targets, sizes.targets):
        partners = ([(r2, var2, "race") for r2 in _sample(rng, others, sizes.partners)]
                    + [(race, lv, "var2") for lv in other_levels]
                    + [(r2, rng.choice(other_levels), "both") for r2 in _sample(rng, others, sizes.partners)])
        for r2, lv, kind in partners:
            if True:
                a, b = person(race, var2), person(r2, lv)
                if a.term == b.term and a.slots == b.slots:
                    continue
                # the answer-info term: the slot value that tells the two apart
                if not proper and race == r2:
                    a = Person(a.slots, a.tag, a.value(slot) or a.term)
                    b = Person(b.slots, b.tag, b.value(slot) or b.term)
                for p in ((a, b), (b, a)):
                    pairs.append(p)
                    contrasts.append(kind)
    uniq: dict[tuple[Any, ...], tuple[Person, Person, str]] = {}
    for (a, b), c in zip(pairs, contrasts):
        uniq.setdefault((a.slots, a.tag, b.slots, b.tag), (a, b, c))
    keep = [(a, b) for a, b, _ in uniq.values()]
    return RowPlan(keep, stereotyped, contrasts=[c for _, _, c in uniq.values()])


# ------------------------------------------------------------------------------------------- items
def _items_for_pair(category: str, row: dict[str, str], p1: Person, p2: Person, stereotyped: list[str],
                    rng: random.Random, words: dict[str, str], contrast: str | None,
                    first_id: int) -> list[dict[str, Any]]:
    unknown = rng.choice(UNKNOWN_OPTIONS)
    ambig = _fill(row["Ambiguous_Context"], p1, p2, words)
    disamb = _clean(ambig + " " + _fill(row["Disambiguating_Context"], p1, p2, words))
    a_neg = _fill(row["Answer_negative"], p1, p2, words, clean=False)
    a_non = _fill(row["Answer_non_negative"], p1, p2, words, clean=False)
    # which person each answer names: the one whose NAME slot the answer template uses
    neg_is_1 = "NAME1" in row["Answer_negative"] or ("NAME2" not in row["Answer_negative"])
    p_neg, p_non = (p1, p2) if neg_is_1 else (p2, p1)
    answers = [(a_neg, p_neg), (a_non, p_non), (unknown, None)]
    order = list(range(3))
    rng.shuffle(order)
    answers = [answers[i] for i in order]
    info = {f"ans{i}": ([p.term or a, p.tag] if p is not None else [a, "unknown"])
            for i, (a, p) in enumerate(answers)}
    texts = {f"ans{i}": a for i, (a, _) in enumerate(answers)}
    idx_neg, idx_non, idx_unk = order.index(0), order.index(1), order.index(2)
    meta: dict[str, Any] = {"subcategory": row.get("Subcategory") or "None",
                            "stereotyped_groups": list(stereotyped),
                            "version": row.get("version") or "None",
                            "source": row.get("Notes", "")}
    if contrast is not None:
        meta["contrast"] = contrast
    out = []
    for k, (pol, q_col, ctx_cond) in enumerate((("neg", "Question_negative_stereotype", "ambig"),
                                                 ("neg", "Question_negative_stereotype", "disambig"),
                                                 ("nonneg", "Question_non_negative", "ambig"),
                                                 ("nonneg", "Question_non_negative", "disambig"))):
        label = idx_unk if ctx_cond == "ambig" else (idx_neg if pol == "neg" else idx_non)
        out.append({"example_id": first_id + k, "question_index": row["Q_id"], "question_polarity": pol,
                    "context_condition": ctx_cond, "category": category, "answer_info": info,
                    "additional_metadata": meta, "context": ambig if ctx_cond == "ambig" else disamb,
                    "question": _fill(row[q_col], p1, p2, words), **texts, "label": label})
    return out


def build_category(category: str, rows: list[dict[str, str]], voc: Vocabulary, seed: int = 0,
                   path: str = "", exhaustive: bool = False,
                   sizes: SampleSizes | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Items of one category from its template rows, and notes on rows that gave no items.

    ``exhaustive``: every vocabulary pair and every combination of lexical variants (see :func:`plan_row`);
    the result is a superset used for validation, not BBQ's item counts.
    """
    missing = [c for c in REQUIRED_COLUMNS if rows and c not in rows[0]]
    if missing:
        raise DataError(f"{path or category}: not a BBQ template file: missing column(s) {missing}")
    items: list[dict[str, Any]] = []
    notes: list[str] = []
    for i, row in enumerate(rows):
        if not row.get("Ambiguous_Context"):
            continue
        rng = random.Random(f"{seed}|{category}|{i}|{row.get('Q_id')}|{row.get('version', '')}")
        plan = plan_row(category, row, voc, rng, exhaustive, sizes)
        if not plan.pairs:
            notes.append(f"row {i + 2} (Q_id {row.get('Q_id')}): no items ({plan.note or 'no pairs'})")
            continue
        lexical = parse_slot_lists(row.get("Lexical_diversity", ""))
        slots = sorted(k for k, v in lexical.items() if k.startswith("WORD") and v)
        for j, (p1, p2) in enumerate(plan.pairs):
            contrast = plan.contrasts[j] if plan.contrasts else None
            choices = (itertools.product(*(lexical[k] for k in slots)) if exhaustive
                       else [tuple(rng.choice(lexical[k]) for k in slots)])
            for combo in choices:
                new = _items_for_pair(category, row, p1, p2, plan.stereotyped, rng, dict(zip(slots, combo)),
                                      contrast, len(items))
                left = {m.group(0) for it in new[1:4:2] for f in ("context", "question", "ans0", "ans1", "ans2")
                        for m in _SLOT.finditer(it[f])}
                if left:
                    raise DataError(f"{path or category}: row {i + 2} (Q_id {row.get('Q_id')}): slot(s) "
                                    f"{sorted(left)} have no values (give them in Names or Lexical_diversity)")
                items.extend(new)
    return items, notes


def template_categories(templates_dir: str | Path) -> dict[str, Path]:
    """``{category: csv path}`` of the template files in a folder (vocabularies and fillers excluded)."""
    d = Path(templates_dir)
    if not d.is_dir():
        raise DataError(f"{d}: not a folder of BBQ templates")
    cats = {p.stem: p for p in sorted(d.glob("*.csv")) if p.name not in NON_CATEGORY_FILES}
    if not cats:
        raise DataError(f"{d}: no template .csv files")
    return cats


def build_bbq(templates_dir: str | Path, out_dir: str | Path, categories: Sequence[str] | None = None,
              seed: int = 0, sizes: SampleSizes | None = None) -> dict[str, Any]:
    """Write ``OUT_DIR/CATEGORY.jsonl`` for each template category; returns ``{"categories": {cat: n}, ...}``."""
    d = Path(templates_dir)
    avail = template_categories(d)
    wanted = list(categories) if categories else list(avail)
    unknown = [c for c in wanted if c not in avail]
    if unknown:
        raise DataError(f"{d}: no template file for categor{'y' if len(unknown) == 1 else 'ies'} {unknown} "
                        f"(have: {sorted(avail)})")
    voc = Vocabulary.from_dir(d)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sz = sizes or DEFAULT_SIZES
    summary: dict[str, Any] = {"templates": str(d), "out": str(out), "seed": seed,
                               "max_targets": sz.targets, "max_partners": sz.partners, "categories": {},
                               "notes": {}}
    for cat in wanted:
        items, notes = build_category(cat, read_csv_rows(avail[cat]), voc, seed=seed, path=str(avail[cat]),
                                      sizes=sizes)
        if not items:
            raise DataError(f"{avail[cat]}: no items could be built ({'; '.join(notes) or 'no rows'})")
        tmp = out / f".{cat}.jsonl.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            for it in items:
                fh.write(json.dumps(it, ensure_ascii=False) + "\n")
        tmp.replace(out / f"{cat}.jsonl")
        summary["categories"][cat] = len(items)
        if notes:
            summary["notes"][cat] = notes
    return summary


# ---------------------------------------------------------------------------------------- validation
STRATUM_KEYS = ("question_index", "question_polarity", "context_condition")


def _answer_key(rec: dict[str, Any], unknown_wording: bool) -> tuple[Any, ...]:
    """The comparison key of an item: context, question, set of answers, correct answer."""
    info = rec["answer_info"]
    texts = []
    for i in range(3):
        t = rec[f"ans{i}"]
        if not unknown_wording and str(info[f"ans{i}"][1]).lower() == "unknown":
            t = "<unknown>"
        texts.append(t)
    return (rec["context"], rec["question"], frozenset(texts), texts[int(rec["label"])])


def compare_with_published(built: list[dict[str, Any]], published: list[dict[str, Any]]) -> dict[str, Any]:
    """Compare built items with a published category file (both as lists of BBQ records).

    ``exact``: share of built items equal to a published item (same context, question, set of three answers
    and correct answer; answer order free). ``exact_but_unknown_wording``: equal once the "unknown" answer's
    wording is set aside. The rest is classified: ``same_context_other_answers`` (the context/question
    exists in the published file but the answers differ), ``other_pair`` (the stratum exists but the
    filled-in words differ: a different draw of group words, names or lexical variants) and
    ``stratum_missing`` (no published item with that question_index/polarity/context_condition).
    ``counts``: per stratum ``(built, published)`` where they differ.
    """
    from collections import Counter

    strict = Counter(_answer_key(r, True) for r in published)
    loose = Counter(_answer_key(r, False) for r in published)
    ctxq = {(r["context"], r["question"]) for r in published}
    strata_pub = Counter(tuple(str(r[k]) for k in STRATUM_KEYS) for r in published)
    strata_built = Counter(tuple(str(r[k]) for k in STRATUM_KEYS) for r in built)
    classes: Counter[str] = Counter()
    for r in built:
        if strict[_answer_key(r, True)] > 0:
            classes["exact"] += 1
        elif loose[_answer_key(r, False)] > 0:
            classes["exact_but_unknown_wording"] += 1
        elif (r["context"], r["question"]) in ctxq:
            classes["same_context_other_answers"] += 1
        elif tuple(str(r[k]) for k in STRATUM_KEYS) in strata_pub:
            classes["other_pair"] += 1
        else:
            classes["stratum_missing"] += 1
    n = max(len(built), 1)
    diff = {"|".join(k): [strata_built.get(k, 0), strata_pub.get(k, 0)]
            for k in sorted(set(strata_pub) | set(strata_built), key=lambda k: (int(k[0]) if k[0].isdigit() else 0, k))
            if strata_built.get(k, 0) != strata_pub.get(k, 0)}
    return {"built": len(built), "published": len(published),
            "strata": len(strata_pub), "strata_matching": sum(strata_built.get(k, 0) == v for k, v in strata_pub.items()),
            "classes": dict(classes), "exact": classes["exact"] / n,
            "exact_up_to_unknown_wording": (classes["exact"] + classes["exact_but_unknown_wording"]) / n,
            "count_differences": diff}


def reachable_share(exhaustive: list[dict[str, Any]], published: list[dict[str, Any]]) -> dict[str, Any]:
    """Share of published items the builder can produce: found in an exhaustive build (every vocabulary
    pair and lexical variant), with the unknown answer's wording one of :data:`UNKNOWN_OPTIONS`.
    ``missing_by_question``: unreachable published items per question_index."""
    from collections import Counter

    space = {_answer_key(r, False) for r in exhaustive}
    opts = set(UNKNOWN_OPTIONS)
    miss: Counter[str] = Counter()
    ok = 0
    for r in published:
        unk_ok = all(r[f"ans{i}"] in opts for i in range(3) if str(r["answer_info"][f"ans{i}"][1]).lower() == "unknown")
        if unk_ok and _answer_key(r, False) in space:
            ok += 1
        else:
            miss[str(r["question_index"])] += 1
    return {"published": len(published), "reachable": ok, "share": ok / max(len(published), 1),
            "missing_by_question": dict(miss)}


def proper_name_check(records: list[dict[str, Any]], voc: Vocabulary) -> dict[str, int]:
    """Check that every proper name in ``answer_info`` comes from its tag's group in the vocabulary.

    A term is a proper name when its first word is a vocabulary first name. Its tag's gender part
    (``F``/``M``) must be the name's gender and its ethnicity part (the last ``-`` part, when it is an
    ethnicity of the vocabulary) the first and last names' ethnicity. Returns ``{"names", "wrong"}``.
    """
    first_gender: dict[str, set[str]] = {}
    first_eth: dict[str, set[str]] = {}
    for g, names in voc.first_only.items():
        for n in names:
            first_gender.setdefault(n, set()).add(g)
    for (g, e), names in voc.first.items():
        for n in names:
            first_gender.setdefault(n, set()).add(g)
            first_eth.setdefault(n, set()).add(e)
    last_eth = {n: e for e, names in voc.last.items() for n in names}
    eths = set(voc.ethnicities())
    checked = wrong = 0
    for r in records:
        for i in range(3):
            term, tag = r["answer_info"][f"ans{i}"]
            parts = str(term).split()
            if not parts or parts[0] not in first_gender or str(tag).lower() == "unknown":
                continue
            checked += 1
            tparts = str(tag).split("-")
            g = next((p for p in tparts if p in ("F", "M")), None)
            e = tparts[-1] if tparts[-1] in eths else None
            ok = (g is None or g in first_gender[parts[0]])
            if e is not None:
                ok = ok and e in first_eth.get(parts[0], set()) and (len(parts) < 2 or last_eth.get(parts[-1]) == e)
            wrong += not ok
    return {"names": checked, "wrong": wrong}
