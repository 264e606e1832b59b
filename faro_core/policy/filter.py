"""A plain filter for replies shown to people: profanity and slurs, empty text, non-English text.

:func:`filter_reason` gives the first reason a reply fails (``"empty"``, ``"profanity"``,
``"non-English"``) or None. Filtered replies stay in the data (a ``filtered`` column); the dashboard hides
them from its cards and says how many it hid, and each reward's rate of choosing a filtered reply as its
best-of-n is reported (a reward that prefers profanity is reward behaviour, not noise to hide).

- Profanity and slurs: the word list of the maintained ``better-profanity`` package (0.7.0; ~900 words and
  their leetspeak variants), matched on whole words, and on word *beginnings* for its words of >= 4 letters
  (a 135M LM writes fused forms such as "Miso-fuckazio"), less :data:`ALLOWED`: BBQ's own identity terms
  ("gay", "lesbians", "queer"), ordinary words the list carries ("god", "fat", "kill", "hell") and common
  words that merely begin with a listed one ("analysis", "muffin"). Words of the prompt itself are allowed
  too (a reply that repeats the question's words is not profane for that).
- Empty: nothing but whitespace and punctuation.
- Non-English: more than 20 % of its letters outside ASCII, or, with >= 4 words, none of English's most
  common function words (:data:`ENGLISH_WORDS`). A rule, not a language model: BBQ prompts and SmolLM2's
  replies are English, so what fails is the model drifting into another script or language or producing
  word salad; a language identifier is unreliable on one-sentence replies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

FILTER_REASONS = ("empty", "profanity", "non-English")
ALLOWED = frozenset({
    # identity terms BBQ itself uses
    "gay", "gays", "lesbian", "lesbians", "queer", "queers", "bisexual", "transsexual", "homosexual",
    "homo", "jew", "jews", "jewish", "muslim", "muslims", "christian", "black", "asian", "african",
    "schizophrenia", "schizophrenic", "autistic", "disabled",
    # ordinary words on the list
    "god", "gods", "hell", "kill", "killed", "killing", "fat", "ugly", "pot", "weed", "hemp", "womb", "ovum",
    "oral", "sex", "sexual", "sexy", "hiv", "pee", "lust", "rum", "pawn", "maxi", "len", "loin", "lech", "teat",
    "prig", "racy", "thug", "thugs", "jerk", "suck", "sucks", "crap", "damn", "omg", "lmao", "xx", "wad", "whiz",
    "hump", "meth", "uzi", "pms", "pcp", "toke", "nude", "poop", "fart", "knob", "dink", "lube", "hoar",
    "herp", "nob", "nad", "nads", "drunk", "cocaine", "heroin", "marijuana",
    "seaman", "semen", "sperm", "ejaculate", "erection", "vagina", "penis", "breast", "breasts", "nipple",
    "urine", "virgin", "condom", "strip", "shaved", "wang",
    # common words that begin with a listed word (matched on word beginnings)
    "analysis", "analyst", "analysts", "analyze", "analyzed", "analytical", "analog", "analogy",
    "cockpit", "cocktail", "cocktails", "cockroach", "pimple", "pimples", "shaggy", "dickens", "dongle",
    "homogeneous", "muffin", "muffins", "spicy", "spice", "booby", "turdus", "clitoris", "scumble",
    "twattle", "tittle", "pussycat", "assassin", "assess", "assessment", "assist", "assistant", "class",
    "classic", "grass", "passion", "mass", "bass", "hello", "helpful", "shell", "knobby", "lubricant",
    "herpes", "hoard", "hoarder", "semenov", "nudes", "rapeseed", "raper", "piston", "pistol", "bitter",
    "butter", "button", "bumble", "buttress", "hornet", "horny", "hornbill", "horse", "horses",
})
ENGLISH_WORDS = frozenset(
    "the a an is are was were be been of and or to in on at by for with from as it its this that these "
    "those he she they them his her their we you i not no who which what can could would will do does did "
    "has have had there here but if so than then".split())
_WORD = re.compile(r"[a-z0-9@$!*]+(?:'[a-z]+)?")


@lru_cache(maxsize=1)
def _wordlist() -> tuple[frozenset[str], tuple[str, ...]]:
    """``(all words, words of >= 4 letters matched on beginnings)`` of better-profanity's list."""
    from better_profanity import profanity

    profanity.load_censor_words()
    words = frozenset(str(w).lower() for w in profanity.CENSOR_WORDSET)
    prefixes = tuple(sorted(w for w in words if len(w) >= 4 and w.isalpha() and w not in ALLOWED))
    return words, prefixes


def profane_words(text: str, allow: Iterable[str] = ()) -> list[str]:
    """The words of ``text`` that the profanity rule flags (see the module docstring)."""
    words, prefixes = _wordlist()
    ok = ALLOWED | {w.lower() for w in allow}
    out = []
    for tok in re.split(r"[\s\-_/.,;:!?\"()\[\]]+", str(text).lower()):
        tok = tok.strip("'")
        if not tok or tok in ok:
            continue
        if tok in words or tok.rstrip("s") in words - ok or (tok.isalpha() and tok.startswith(prefixes)):
            out.append(tok)
    return out


def is_non_english(text: str) -> bool:
    """True when ``text`` fails the non-English rule (module docstring)."""
    letters = [c for c in str(text) if c.isalpha()]
    if not letters:
        return False
    if sum(not c.isascii() for c in letters) > 0.2 * len(letters):
        return True
    words = re.findall(r"[a-z]+", str(text).lower())
    return len(words) >= 4 and not (set(words) & ENGLISH_WORDS)


def filter_reason(text: str, allow: Iterable[str] = ()) -> str | None:
    """The first of :data:`FILTER_REASONS` that ``text`` fails, or None when it may be shown. ``allow``:
    words not to count as profanity (the prompt's own words)."""
    s = "" if text is None else str(text)
    if not re.search(r"[^\W_]", s):
        return "empty"
    if profane_words(s, allow):
        return "profanity"
    if is_non_english(s):
        return "non-English"
    return None


def prompt_words(*texts: str) -> set[str]:
    """The lower-case words of a prompt's texts (context, question, answers): allowed in its replies."""
    out: set[str] = set()
    for t in texts:
        out.update(_WORD.findall(str(t).lower()))
    return out
