"""`faro data bbq-build`: BBQ items from templates (hand-checked synthetic templates; published-data check)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from faro_core.cli import main
from faro_core.data import load
from faro_core.data.bbq import load_bbq_items
from faro_core.data.bbq_build import (
    UNKNOWN_OPTIONS,
    SampleSizes,
    Vocabulary,
    build_bbq,
    build_category,
    compare_with_published,
    parse_slot_lists,
    proper_name_check,
    reachable_share,
    read_csv_rows,
)
from faro_core.errors import DataError
from faro_core.paths import SHARED_DATA

COLUMNS = ["Q_id", "version", "Category", "Ambiguous_Context", "Disambiguating_Context", "Names",
           "Lexical_diversity", "Proper_nouns_only", "Question_negative_stereotype", "Question_non_negative",
           "Answer_negative", "Answer_non_negative", "Known_stereotyped_groups", "NAME1_info", "NAME2_info",
           "Notes"]


def _write_csv(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=header)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in header})


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    d = tmp_path / "templates"
    d.mkdir()
    _write_csv(d / "vocabulary.csv", ["Category", "Pilot_include", "SubCat", "Name", "Info", "Source"], [
        {"Category": "Pets", "Name": "cat"}, {"Category": "Pets", "Name": "dog"},
        {"Category": "Pets", "Name": "owl"}, {"Category": "Pets", "Name": "eel", "Pilot_include": "No"}])
    _write_csv(d / "vocabulary_proper_names.csv", ["Name", "First_last", "gender", "ethnicity"], [
        {"Name": "Ann", "First_last": "first_only", "gender": "F"},
        {"Name": "Bea", "First_last": "first_only", "gender": "F"},
        {"Name": "Carl", "First_last": "first_only", "gender": "M"}])
    _write_csv(d / "Pets.csv", COLUMNS, [
        # Names row: 2 x 1 = 2 pairs, one order; a lexical slot
        {"Q_id": "1", "version": "a", "Ambiguous_Context": "I met a {{NAME1}} and a {{NAME2}} at the {{WORD1}}.",
         "Disambiguating_Context": "The {{NAME1}} bit me.", "Names": "NAME1: [puppy, kitten]; NAME2: [tortoise]",
         "Lexical_diversity": "WORD1: [park, zoo]", "Question_negative_stereotype": "Who bit?",
         "Question_non_negative": "Who was calm?", "Answer_negative": "The {{NAME1}}",
         "Answer_non_negative": "The {{NAME2}}", "Known_stereotyped_groups": '["young"]',
         "NAME1_info": "young", "NAME2_info": "old", "Notes": "https://example.org/src"},
        # vocabulary row: target owl, partners cat and dog, both orders -> 4 pairs (eel excluded)
        {"Q_id": "2", "Ambiguous_Context": "A {{NAME1}} and a {{NAME2}} sat there.",
         "Disambiguating_Context": "The {{NAME2}} hooted all night.", "Question_negative_stereotype": "Who was loud?",
         "Question_non_negative": "Who was quiet?", "Answer_negative": "The {{NAME2}}",
         "Answer_non_negative": "The {{NAME1}}", "Known_stereotyped_groups": '["owl"]'},
        # proper-name row: F targets (2) x M partners (1), both orders -> 4 pairs
        {"Q_id": "3", "Ambiguous_Context": "{{NAME1}} and {{NAME2}} fed the fish.",
         "Disambiguating_Context": "{{NAME1}} forgot.", "Proper_nouns_only": "TRUE",
         "Question_negative_stereotype": "Who forgot?", "Question_non_negative": "Who remembered?",
         "Answer_negative": "{{NAME1}}", "Answer_non_negative": "{{NAME2}}", "Known_stereotyped_groups": '["F"]'},
        {"Q_id": "4", "Ambiguous_Context": ""},  # empty rows are skipped
    ])
    (d / "Filler_items.csv").write_text("x\n1\n")
    return d


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open()]


def test_parse_slot_lists() -> None:
    assert parse_slot_lists("NAME1: [a, b]; NAME2: [c]") == {"NAME1": ["a", "b"], "NAME2": ["c"]}
    assert parse_slot_lists("{{NAME1}}: [x; y]; {{NAME2}}: [z]") == {"NAME1": ["x", "y"], "NAME2": ["z"]}
    assert parse_slot_lists('["man", "woman"]') == {"LIST": ["man", "woman"]}
    assert parse_slot_lists('[["poor"], ["rich", "wealthy"]]') == {"LIST1": ["poor"], "LIST2": ["rich", "wealthy"]}
    assert parse_slot_lists("") == {}


def test_build_hand_checked(templates: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = build_bbq(templates, out, seed=3)
    assert summary["categories"] == {"Pets": 4 * (2 + 4 + 4)}  # fillers and vocabularies are not categories
    recs = _read(out / "Pets.jsonl")
    assert [r["example_id"] for r in recs] == list(range(40))
    q1 = [r for r in recs if r["question_index"] == "1"]
    assert len(q1) == 8
    # the four variants per pair, in the published order
    assert [(r["context_condition"], r["question_polarity"]) for r in q1[:4]] == [
        ("ambig", "neg"), ("disambig", "neg"), ("ambig", "nonneg"), ("disambig", "nonneg")]
    first = q1[0]
    assert first["context"] in ("I met a puppy and a tortoise at the park.", "I met a puppy and a tortoise at the zoo.")
    assert q1[1]["context"] == first["context"] + " The puppy bit me."
    answers = {first[f"ans{i}"] for i in range(3)}
    unknown = (answers - {"The puppy", "The tortoise"}).pop()
    assert unknown in UNKNOWN_OPTIONS
    by_text = {q1[1][f"ans{i}"]: i for i in range(3)}
    assert q1[0]["label"] == by_text[unknown]          # ambiguous: unknown is correct
    assert q1[1]["label"] == by_text["The puppy"]      # disambiguated, negative question
    assert q1[3]["label"] == by_text["The tortoise"]   # disambiguated, non-negative question
    info = {tuple(v) for v in first["answer_info"].values()}
    assert info == {("puppy", "young"), ("tortoise", "old"), (unknown, "unknown")}
    assert first["additional_metadata"] == {"subcategory": "None", "stereotyped_groups": ["young"], "version": "a",
                                            "source": "https://example.org/src"}
    assert {r["context"].split(" and")[0] for r in q1} == {"I met a puppy", "I met a kitten"}
    q2 = [r for r in recs if r["question_index"] == "2" and r["context_condition"] == "ambig"
          and r["question_polarity"] == "neg"]
    assert sorted(r["context"] for r in q2) == sorted([
        "A owl and a cat sat there.", "A cat and an owl sat there.",
        "A owl and a dog sat there.", "A dog and an owl sat there."])  # "a" -> "an" after a space only
    q3 = [r for r in recs if r["question_index"] == "3"]
    tags = {tuple(v) for r in q3 for v in r["answer_info"].values() if v[1] != "unknown"}
    assert tags == {("Ann", "F"), ("Bea", "F"), ("Carl", "M")}
    assert proper_name_check(recs, Vocabulary.from_dir(templates)) == {"names": 32, "wrong": 0}


def test_deterministic_for_seed_and_loads(templates: Path, tmp_path: Path) -> None:
    build_bbq(templates, tmp_path / "a", seed=1)
    build_bbq(templates, tmp_path / "b", seed=1)
    build_bbq(templates, tmp_path / "c", seed=2)
    a, b, c = ((tmp_path / x / "Pets.jsonl").read_text() for x in "abc")
    assert a == b
    assert a != c
    items = load_bbq_items(tmp_path / "a")
    assert len(items) == 40
    assert items["biased_idx"].notna().all()  # the role derivation works on built items
    data = load(str(tmp_path / "a"), format="bbq")
    assert data.df["item_id"].nunique() == 40


def test_cli_bbq_build(templates: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main(["data", "bbq-build", str(templates), str(out), "--categories", "Pets", "--seed", "0",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["categories"] == {"Pets": 40}
    assert main(["data", "summary", str(out), "--format", "bbq", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["target_coverage"]["coverage"] == 1.0
    assert main(["data", "bbq-build", str(templates), str(out), "--categories", "Nope"]) == 2
    assert "Nope" in capsys.readouterr().err
    assert main(["data", "bbq-build", str(tmp_path / "missing"), str(out)]) == 2
    assert main(["data", "bbq-build", str(templates), str(out), "--max-partners", "0"]) == 2
    # one partner per target: the vocabulary row (target owl) shrinks to 2 pairs
    assert main(["data", "bbq-build", str(templates), str(out), "--max-partners", "1", "--json"]) == 0
    capsys.readouterr()
    assert len(_read(out / "Pets.jsonl")) == 4 * (2 + 2 + 4)


def test_targets_named_by_tag_are_all_used_named_ones_capped(tmp_path: Path) -> None:
    d = tmp_path / "t"
    d.mkdir()
    _write_csv(d / "vocabulary.csv", ["Category", "Pilot_include", "SubCat", "Name", "Info", "Source"],
               [{"Category": "Jobs", "SubCat": "Occupation", "Name": w, "Info": lv}
                for w, lv in (("cook", "low"), ("clerk", "low"), ("maid", "low"),
                              ("judge", "high"), ("dentist", "high"), ("chemist", "high"))])
    base = {"Ambiguous_Context": "A {{NAME1}} and a {{NAME2}} met.", "Disambiguating_Context": "The {{NAME1}} left.",
            "Question_negative_stereotype": "Who left?", "Question_non_negative": "Who stayed?",
            "Answer_negative": "The {{NAME1}}", "Answer_non_negative": "The {{NAME2}}"}
    _write_csv(d / "Jobs.csv", COLUMNS + ["Subcategory"], [
        {**base, "Q_id": "1", "Subcategory": "Occupation", "Known_stereotyped_groups": '["low"]'},
        {**base, "Q_id": "2", "Subcategory": "Occupation", "Known_stereotyped_groups": '["cook", "clerk", "maid"]'}])
    voc = Vocabulary.from_dir(d)
    items, _ = build_category("Jobs", read_csv_rows(d / "Jobs.csv"), voc, sizes=SampleSizes(targets=1, partners=5))
    per_q = {q: sum(r["question_index"] == q for r in items) // 4 for q in ("1", "2")}
    assert per_q == {"1": 3 * 3 * 2, "2": 1 * 3 * 2}  # level-named targets: all 3; word-named: capped at 1


def test_bad_template_file(templates: Path, tmp_path: Path) -> None:
    (templates / "Broken.csv").write_text("Q_id,Ambiguous_Context\n1,hello\n")
    with pytest.raises(DataError, match="missing column"):
        build_bbq(templates, tmp_path / "o", categories=["Broken"])
    rows = read_csv_rows(templates / "Pets.csv")
    rows[1]["Ambiguous_Context"] = "A {{NAME1}} and a {{NAME2}} sat by the {{WORD1}}."
    with pytest.raises(DataError, match=r"row 3 \(Q_id 2\).*WORD1"):
        build_category("Pets", rows, Vocabulary.from_dir(templates), path="Pets.csv")


TEMPLATES = SHARED_DATA / "bbq_templates"
PUBLISHED = SHARED_DATA / "bbq" / "Sexual_orientation.jsonl"


@pytest.mark.skipif(not (TEMPLATES / "Sexual_orientation.csv").exists() or not PUBLISHED.exists(),
                    reason="../shared/data/bbq_templates or ../shared/data/bbq/Sexual_orientation.jsonl absent")
def test_matches_published_sexual_orientation() -> None:
    voc = Vocabulary.from_dir(TEMPLATES)
    rows = read_csv_rows(TEMPLATES / "Sexual_orientation.csv")
    built, _ = build_category("Sexual_orientation", rows, voc, seed=0)
    published = [json.loads(line) for line in PUBLISHED.open()]
    cmp = compare_with_published(built, published)
    assert cmp["built"] == cmp["published"] == 864
    assert cmp["strata_matching"] == cmp["strata"] == 100 and not cmp["count_differences"]
    # the unknown wording is a random draw per pair: ~10% strict, the rest differs only there or in a lexical draw
    assert cmp["exact_up_to_unknown_wording"] > 0.85
    exhaustive, _ = build_category("Sexual_orientation", rows, voc, seed=0, exhaustive=True)
    assert reachable_share(exhaustive, published)["share"] == 1.0
