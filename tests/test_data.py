"""Data layer: loaders, BBQ items and pairs, skew, twins, splits, demo data (issue #2)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from faro_core.data import PreferenceData, load, split_by_item
from faro_core.data.bbq import load_bbq_items, target_coverage
from faro_core.data.skew import choose_skewed, eligible_items
from faro_core.data.twins import DEFAULT_TERM_PAIRS, TermSwapper, add_text_twins, swap_pair_terms
from faro_core.errors import DataError
from faro_core.paths import DEMO_DATA_DIR, DEMO_MINI_DIR, REPO_ROOT, SHARED_DATA

BBQ_DIR = SHARED_DATA / "bbq"
CROWS = SHARED_DATA / "crows_pairs" / "crows_pairs_anonymized.csv"
HH_DIR = SHARED_DATA / "hh_rlhf"
BBQ_CATEGORIES = {"Age", "Disability_status", "Nationality", "Religion", "Sexual_orientation"}

needs_bbq = pytest.mark.skipif(not BBQ_DIR.is_dir(), reason=f"shared BBQ data absent ({BBQ_DIR})")
needs_crows = pytest.mark.skipif(not CROWS.is_file(), reason=f"shared CrowS-Pairs CSV absent ({CROWS})")
needs_hh = pytest.mark.skipif(not HH_DIR.is_dir(), reason=f"shared HH-RLHF data absent ({HH_DIR})")


@pytest.fixture(scope="module")
def bbq_items() -> pd.DataFrame:
    if not BBQ_DIR.is_dir():
        pytest.skip(f"shared BBQ data absent ({BBQ_DIR})")
    return load_bbq_items(BBQ_DIR)


@pytest.fixture(scope="module")
def bbq() -> PreferenceData:
    if not BBQ_DIR.is_dir():
        pytest.skip(f"shared BBQ data absent ({BBQ_DIR})")
    return load(BBQ_DIR)


# ------------------------------------------------------------------------------------------------ BBQ
@needs_bbq
def test_bbq_counts_and_pairs(bbq: PreferenceData) -> None:
    df = bbq.df
    assert df["item_id"].nunique() == 10380
    assert len(df) == 2 * 10380
    assert set(df["category"]) == BBQ_CATEGORIES
    assert bbq.strata == ["question_polarity", "context_condition"]
    assert (df["gold"] == 1.0).all() and not df["skewed"].any()
    # chosen = the correct answer; the two rejected answers of an item are the two wrong ones
    assert (df["chosen_idx"] == df["label"]).all()
    assert (df["rejected_idx"] != df["label"]).all()
    assert df.groupby("item_id")["rejected_idx"].nunique().eq(2).all()
    # unknown answers are kept and marked None
    unk_rej = df["rejected_idx"] == df["unknown_idx"]
    assert unk_rej.any() and df.loc[unk_rej, "rejected_group"].isna().all()
    amb = df["context_condition"] == "ambig"
    assert df.loc[amb, "chosen_group"].isna().all()  # ambiguous: correct answer is "unknown"


@needs_bbq
def test_bbq_target_coverage_and_biased_answer(bbq_items: pd.DataFrame) -> None:
    cov = target_coverage(bbq_items)
    assert cov["items"] == 10380
    assert cov["coverage"] >= 0.95, cov
    it = bbq_items.dropna(subset=["target_idx"])
    tgt = it["target_idx"].astype(int)
    bia = it["biased_idx"].astype(int)
    neg = it["question_polarity"] == "neg"
    assert (bia[neg] == tgt[neg]).all()
    assert (bia[~neg] != tgt[~neg]).all() and (bia[~neg] != it.loc[~neg, "unknown_idx"]).all()
    # in disambiguated items BBQ balances stereotype-consistent and -inconsistent answers
    dis = it[it["context_condition"] == "disambig"]
    share = (dis["label"] == dis["target_idx"].astype(int)).mean()
    assert 0.45 < share < 0.55
    # Nationality: region tags, stereotyped groups are nationalities; the answer text's nationality matches
    nat = it[it["category"] == "Nationality"].iloc[0]
    t = int(nat["target_idx"])
    assert nat["answer_terms"][t].lower() in {s.lower() for s in nat["stereotyped_groups"]}


@needs_bbq
def test_bbq_group_is_target_tag(bbq: PreferenceData) -> None:
    df = bbq.df
    has = df["target_group"].notna()
    assert (df.loc[has, "group"] == df.loc[has, "target_group"]).all()
    assert {"old", "nonOld", "disabled", "Muslim"} <= set(bbq.groups())


@needs_bbq
def test_bbq_any_category_file_loads(tmp_path) -> None:
    lines = (BBQ_DIR / "Religion.jsonl").read_text(encoding="utf-8").splitlines()[:200]
    recs = [json.loads(x) for x in lines]
    for r in recs:
        r["category"] = "Faith_new"
    f = tmp_path / "Faith_new.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in recs) + "\n", encoding="utf-8")
    d = load(f)
    assert d.meta["format"] == "bbq"
    assert set(d.df["category"]) == {"Faith_new"} and d.df["item_id"].nunique() == 200
    d2 = load(tmp_path, format="bbq")  # a folder with that one file
    assert len(d2) == 400


# ------------------------------------------------------------------------------------------------ skew
@needs_bbq
def test_skew_fraction_and_seed(bbq: PreferenceData) -> None:
    from faro_core.data.skew import apply_skew

    elig = eligible_items(bbq.df)
    assert len(elig) > 1000
    s1 = apply_skew(bbq, 0.3, seed=1)
    items1 = set(s1.df.loc[s1.df["skewed"], "item_id"])
    assert len(items1) == round(0.3 * len(elig))  # exactly round(rho * eligible items)
    assert items1 <= set(elig)
    assert items1 == set(choose_skewed(bbq.df, 0.3, seed=1))  # same seed, same items
    assert set(choose_skewed(bbq.df, 0.3, seed=2)) != items1  # another seed, other items
    df = s1.df[s1.df["skewed"]]
    assert (df["chosen_idx"] == df["biased_idx"]).all()
    to_unknown = df["rejected_idx"] == df["unknown_idx"]
    assert to_unknown.sum() == len(items1) and (df.loc[to_unknown, "gold"] == 0.0).all()
    assert df.loc[~to_unknown, "gold"].isna().all()
    assert s1.df["pair_id"].is_unique
    # unskewed rows untouched
    rest = s1.df[~s1.df["skewed"]].set_index("pair_id")
    orig = bbq.df.set_index("pair_id").loc[rest.index]
    assert (rest["chosen"] == orig["chosen"]).all() and (rest["gold"] == 1.0).all()


def test_skew_on_demo_and_errors() -> None:
    d = load("demo", skew=0.5, seed=3)
    # counted from the frame and the unskewed data, not from the skew's own bookkeeping
    n_eligible = len(eligible_items(load("demo").df))
    assert d.df.loc[d.df["skewed"], "item_id"].nunique() == round(0.5 * n_eligible) > 0
    assert d.meta["skewed_items"] == round(0.5 * n_eligible) and d.meta["skew_eligible_items"] == n_eligible
    sk = d.df[d.df["skewed"]]
    # observed chosen: the target in negative questions, the other group in non-negative ones
    neg = sk["question_polarity"] == "neg"
    assert (sk.loc[neg, "chosen_idx"] == sk.loc[neg, "target_idx"]).all()
    assert (sk.loc[~neg, "chosen_idx"] != sk.loc[~neg, "target_idx"]).all()
    assert (sk["context_condition"] == "ambig").all()
    assert load("demo", skew=0.0).df["skewed"].sum() == 0
    with pytest.raises(DataError, match="skew"):
        load("demo", skew=1.5)


# ------------------------------------------------------------------------------------------------ twins
_WORD = re.compile(r"\w+(?:['’-]\w+)*|[^\w\s]")


def _twin_ok(orig: str, twin: str, a: str, b: str) -> bool:
    """Token-level: masking every occurrence of a or b leaves both texts equal, and the sequence of masked
    terms in the twin is the swapped sequence of the original's."""
    pat = re.compile(r"(?<![\w-])(" + "|".join(re.escape(t) for t in sorted({a, b}, key=len, reverse=True))
                     + r")(?![\w-])", re.IGNORECASE)
    if _WORD.findall(pat.sub(" \x00 ", orig)) != _WORD.findall(pat.sub(" \x00 ", twin)):
        return False
    al, bl = a.lower(), b.lower()
    seq_o = [m.lower() for m in pat.findall(orig)]
    seq_t = [m.lower() for m in pat.findall(twin)]
    return seq_t == [bl if x == al else al for x in seq_o]


@needs_bbq
def test_bbq_twins_differ_only_in_group_terms_all_items(bbq_items: pd.DataFrame, bbq: PreferenceData) -> None:
    terms = {}
    for it in bbq_items.itertuples(index=False):
        g = [i for i in range(3) if it.answer_tags[i] is not None]
        terms[it.item_id] = (it.answer_terms[g[0]], it.answer_terms[g[1]])
    df = bbq.df
    assert df["twin_id"].notna().all()
    bad = []
    changed = 0
    for r in df.itertuples(index=False):
        a, b = terms[r.item_id]
        for o, t in ((r.prompt, r.cf_prompt), (r.chosen, r.cf_chosen), (r.rejected, r.cf_rejected)):
            if not _twin_ok(o, t, a, b):
                bad.append((r.pair_id, o, t))
            changed += o != t
    assert not bad, bad[:3]
    assert changed > len(df)  # the swap actually changes text (prompt and a named answer at least)


def test_demo_twins_swap_prompt() -> None:
    d = load("demo-mini")
    df = d.df
    assert (df["cf_prompt"] != df["prompt"]).all()  # mini demo contexts always name both people
    r = df[df["category"] == "Age"].iloc[0]
    assert r["cf_prompt"] != r["prompt"]


def test_swap_simultaneous_whole_word_case() -> None:
    assert swap_pair_terms("The grandfather and the grandson.", "grandfather", "grandson") == \
        "The grandson and the grandfather."
    assert swap_pair_terms("Grandfather GRANDFATHER grandfather", "grandfather", "grandson") == \
        "Grandson GRANDSON grandson"
    s = TermSwapper(DEFAULT_TERM_PAIRS)
    assert s("He told his sister.") == "She told her brother."
    assert s("SHE is the queen") == "HE is the king"
    assert s("the shepherd hemmed") == "the shepherd hemmed"  # whole words only
    assert s("A Muslim and a Christian") == "A Christian and a Muslim"
    assert s("an old man") == "an young woman"
    assert swap_pair_terms("a gay man and a lesbian woman", "gay", "lesbian") == "a lesbian man and a gay woman"
    # multi-word terms
    assert swap_pair_terms("one carrying a stack of papers, one with a wheelchair", "carrying a stack of papers",
                           "wheelchair") == "one wheelchair, one with a carrying a stack of papers"
    df = pd.DataFrame({"pair_id": ["p0", "p1"], "prompt": ["Complete.", "Complete."],
                       "chosen": ["She is kind.", "A dog."], "rejected": ["He is kind.", "A cat."]})
    out = add_text_twins(df, [("he", "she")])
    assert out.loc[0, "cf_chosen"] == "He is kind." and out.loc[0, "twin_id"] == "p0~cf"
    assert out.loc[1, "twin_id"] is None and out.loc[1, "cf_chosen"] is None


# ------------------------------------------------------------------------------------------------ demo
def test_mini_demo_data_schema_and_coverage() -> None:
    files = sorted(DEMO_MINI_DIR.glob("*.jsonl"))
    assert len(files) >= 2
    keys = {"example_id", "question_index", "question_polarity", "context_condition", "category",
            "answer_info", "additional_metadata", "context", "question", "ans0", "ans1", "ans2", "label"}
    n = 0
    for f in files:
        for line in f.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            assert set(rec) == keys
            assert set(rec["additional_metadata"]) == {"subcategory", "stereotyped_groups", "version", "source"}
            n += 1
    assert 300 <= n <= 600
    items = load_bbq_items(DEMO_MINI_DIR)
    assert set(items["context_condition"]) == {"ambig", "disambig"}
    assert set(items["question_polarity"]) == {"neg", "nonneg"}
    assert items["category"].nunique() >= 2
    assert target_coverage(items)["coverage"] == 1.0
    d = load("demo-mini")
    assert d.name == "demo-mini" and len(d) == 2 * n
    assert len(d.groups()) >= 4 and min(d.groups().values()) >= 30
    assert (DEMO_MINI_DIR / "LICENSE.md").exists()


def test_mini_demo_is_what_its_maker_writes(tmp_path) -> None:
    """tools/make_demo_mini.py (seeded) rewrites the shipped mini demo byte for byte."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_demo_mini", REPO_ROOT / "tools" / "make_demo_mini.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.OUT.resolve() == DEMO_MINI_DIR.resolve()  # its default target is the folder the package reads
    mod.main(tmp_path)
    made = sorted(f.name for f in tmp_path.glob("*.jsonl"))
    assert made == sorted(f.name for f in DEMO_MINI_DIR.glob("*.jsonl")) and made
    for name in made:
        assert (tmp_path / name).read_bytes() == (DEMO_MINI_DIR / name).read_bytes(), name


def test_demo_is_a_seeded_bbq_subset_with_attribution() -> None:
    """The default data: half of each published BBQ category, records unchanged, attributed (CC BY 4.0)."""
    import gzip

    files = sorted(DEMO_DATA_DIR.glob("*.jsonl.gz"))
    names = {f.name.removesuffix(".jsonl.gz") for f in files}
    assert names == {"Age", "Disability_status", "Nationality", "Religion", "Sexual_orientation"}
    d = load()
    assert d.name == "demo" and d.df["item_id"].nunique() == 5190 and len(d) == 2 * 5190
    items = load_bbq_items(DEMO_DATA_DIR)
    n_amb = int((items["context_condition"] == "ambig").sum())
    assert n_amb == 2642  # ~790 ambiguous items in a 30% test split
    for f in ("README.md", "LICENSE.md"):
        text = (DEMO_DATA_DIR / f).read_text()
        assert "Parrish" in text and "CC BY 4.0" in text
    published = SHARED_DATA / "bbq"
    if not published.is_dir():
        pytest.skip(f"{published} absent: cannot compare with the published BBQ files")
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_demo_bbq", REPO_ROOT / "tools" / "make_demo_bbq.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for f in files:  # regenerating from the published files gives the shipped records, byte for byte
        name = f.name.removesuffix(".jsonl.gz")
        want = mod.subset_lines(published / f"{name}.jsonl", mod.FRACTION, mod.SEED)
        assert gzip.decompress(f.read_bytes()).decode("utf-8").splitlines() == want


def test_demo_loads_without_shared_or_network(tmp_path) -> None:
    code = (
        "import socket\n"
        "def _no(*a, **k):\n    raise OSError('network disabled in test')\n"
        "socket.create_connection = _no\nsocket.socket.connect = _no\n"
        "from faro_core.paths import SHARED_DATA\nassert not SHARED_DATA.exists(), SHARED_DATA\n"
        "from faro_core.data import load\nd = load()\nassert d.name == 'demo' and len(d) > 0\n"
        "d = load('demo', skew=0.3)\nprint(len(d))\n"
    )
    env = {**os.environ, "FARO_SHARED_DATA": str(tmp_path / "nonexistent"), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.strip()) > 0


# ------------------------------------------------------------------------------------------------ CrowS / HH
@needs_crows
def test_crows_pairs() -> None:
    d = load(CROWS)
    assert d.meta["format"] == "crows"
    assert len(d) == 1508
    assert len(d.groups()) == 9 and d.df["category"].nunique() == 9
    raw = pd.read_csv(CROWS)
    assert (d.df["chosen"].to_numpy() == raw["sent_less"].to_numpy()).all()
    assert (d.df["rejected"].to_numpy() == raw["sent_more"].to_numpy()).all()
    assert set(d.df["stereo_antistereo"]) == {"stereo", "antistereo"}
    assert (d.df["prompt"] != "").all()
    assert d.has_twins  # default gender/religion/... term swaps where a term occurs


@needs_hh
def test_hh_rlhf_pairs() -> None:
    files = sorted(HH_DIR.rglob("test.jsonl.gz"))
    assert len(files) == 2
    total = sum(len(load(f)) for f in files)
    assert total == 4666
    d = load(HH_DIR)
    assert len(d) == 4666 and d.meta["format"] == "hh"
    assert d.df["prompt"].str.startswith("Human:").all()
    assert d.df["prompt"].str.endswith("Assistant:").all()
    # the responses are the final assistant turn only: no row carries a later human turn
    for col in ("chosen", "rejected"):
        assert not d.df[col].str.contains("\n\nHuman:").any(), col
    assert not d.groups()


# ------------------------------------------------------------------------------------------------ TRL / generic
def test_trl_standard_and_conversational(tmp_path) -> None:
    std = tmp_path / "std.jsonl"
    std.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "What color is the sky?", "chosen": "Blue.", "rejected": "Green."},
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
    ]) + "\n", encoding="utf-8")
    d = load(std)
    assert d.meta["format"] == "trl" and len(d) == 2 and d.df.loc[0, "chosen"] == "Blue."
    conv = tmp_path / "conv.jsonl"
    conv.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": [{"role": "user", "content": "What color is the sky?"}],
         "chosen": [{"role": "assistant", "content": "It is blue."}],
         "rejected": [{"role": "assistant", "content": "It is green."}]},
    ]) + "\n", encoding="utf-8")
    d = load(conv)
    assert d.df.loc[0, "prompt"] == "User: What color is the sky?"
    assert d.df.loc[0, "chosen"] == "It is blue." and d.df.loc[0, "rejected"] == "It is green."
    implicit = tmp_path / "implicit.jsonl"
    implicit.write_text(json.dumps({
        "chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go away."}],
    }) + "\n", encoding="utf-8")
    d = load(implicit, format="trl")
    assert d.df.loc[0, "prompt"] == "User: Hi" and d.df.loc[0, "rejected"] == "Go away."
    pq = tmp_path / "conv.parquet"
    pd.DataFrame({"prompt": ["Q1", "Q2"], "chosen": ["a", "b"], "rejected": ["c", "d"]}).to_parquet(pq)
    assert len(load(pq)) == 2


def test_generic_csv_with_column_mapping(tmp_path) -> None:
    f = tmp_path / "prefs.csv"
    pd.DataFrame({"question": ["q1", "q1", "q2", "q3"], "good": ["a", "b", "c", "d"],
                  "bad": ["w", "x", "y", "z"], "who": ["g1", "g1", "g2", "g2"],
                  "qid": ["i1", "i1", "i2", "i3"], "annot": ["u", "v", "u", "v"]}).to_csv(f, index=False)
    cols = {"prompt": "question", "chosen": "good", "rejected": "bad", "group": "who", "item_id": "qid"}
    d = load(f, columns=cols)
    assert d.meta["format"] == "csv" and len(d) == 4
    assert d.groups() == {"g1": 2, "g2": 2}
    assert d.df["item_id"].nunique() == 3 and d.df["pair_id"].is_unique
    d2 = load(f, columns=cols, group="annot", groups=["u"])
    assert len(d2) == 2 and set(d2.df["group"]) == {"u"}
    d3 = load(f, columns=cols, strata=["annot"])
    assert d3.strata == ["annot"]
    j = tmp_path / "prefs.jsonl"
    pd.read_csv(f).to_json(j, orient="records", lines=True)
    assert len(load(j, columns=cols)) == 4
    with pytest.raises(DataError, match="'nope'"):
        load(f, columns={**cols, "group": "nope"})


def test_hub_id_without_network_fails_fast() -> None:
    from faro_core.data import hub

    if hub.hub_reachable(timeout=2.0):
        pytest.skip("the Hugging Face hub is reachable here; the no-network path cannot be tested")
    t = time.monotonic()
    with pytest.raises(DataError, match="hub"):
        load("some-owner/some-dataset-that-does-not-exist")
    assert time.monotonic() - t < 10


# ------------------------------------------------------------------------------------------------ filters / splits
def test_groups_filter_and_unknown_value() -> None:
    d = load("demo-mini", groups=["old", "F"])
    assert set(d.groups()) == {"old", "F"}
    with pytest.raises(DataError, match="'Martian'.*known"):
        load(groups=["Martian"])


def test_split_by_item() -> None:
    d = load()
    sp = split_by_item(d, val_frac=0.15, test_frac=0.15, seed=0)
    assert set(sp) == {"train", "val", "test"}
    ids = {k: set(v.df["item_id"]) for k, v in sp.items()}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    assert sum(len(v) for v in sp.values()) == len(d)
    n_items = d.df["item_id"].nunique()
    assert math.isclose(len(ids["test"]) / n_items, 0.15, abs_tol=0.03)
    for g in d.groups():  # stratified: each group keeps its share in every split
        items_g = d.df.loc[d.df["group"] == g, "item_id"].nunique()
        test_g = sp["test"].df.loc[sp["test"].df["group"] == g, "item_id"].nunique()
        assert abs(test_g - 0.15 * items_g) <= 1.0, (g, test_g, items_g)
    again = split_by_item(d, seed=0)
    assert set(again["test"].df["item_id"]) == ids["test"]
    assert set(split_by_item(d, seed=1)["test"].df["item_id"]) != ids["test"]
    assert np.isfinite(sp["train"].df["gold"]).all()
