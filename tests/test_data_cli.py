"""``faro data summary``: JSON/table output and bad input → exit 2 with a one-line message (issue #2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from faro_core.cli import main
from faro_core.paths import DEMO_MINI_DIR, REPO_ROOT, SHARED_DATA

BBQ_DIR = SHARED_DATA / "bbq"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["data", "summary", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_summary_demo_json(capsys) -> None:
    code, out, err = run_cli(capsys, "demo", "--json")
    assert code == 0, err
    s = json.loads(out)
    for key in ("items", "pairs", "groups", "strata", "twins", "skewed", "warnings", "categories"):
        assert key in s
    assert s["pairs"] == 2 * s["items"] and s["items"] == 5190
    assert s["strata"] == ["question_polarity", "context_condition"]
    assert s["twins"] == s["pairs"] and s["skewed"] == 0
    assert sum(s["groups"].values()) == s["pairs"]


def test_summary_demo_table_and_skew(capsys) -> None:
    code, out, _ = run_cli(capsys, "demo")
    assert code == 0 and "items" in out and "groups (pairs)" in out
    code, out, _ = run_cli(capsys, "demo", "--format", "demo", "--skew", "0.4", "--seed", "7", "--json")
    s = json.loads(out)
    assert code == 0 and s["skewed_items"] == round(0.4 * s["skew_eligible_items"]) and s["skewed"] > 0


def test_summary_group_column_and_small_group_warning(capsys, tmp_path) -> None:
    code, out, _ = run_cli(capsys, "demo-mini", "--group", "question_index", "--json")
    assert code == 0
    assert set(json.loads(out)["groups"]) == {"1", "2", "3", "4"}
    f = tmp_path / "small.csv"
    pd.DataFrame({"prompt": ["p"] * 40, "chosen": ["a"] * 40, "rejected": ["b"] * 40,
                  "grp": ["big"] * 35 + ["tiny"] * 5}).to_csv(f, index=False)
    code, out, _ = run_cli(capsys, str(f), "--columns", "group=grp", "--json")
    s = json.loads(out)
    assert code == 0 and s["groups"] == {"big": 35, "tiny": 5}
    assert any("'tiny'" in w for w in s["warnings"]) and not any("'big'" in w for w in s["warnings"])


@pytest.mark.skipif(not BBQ_DIR.is_dir(), reason=f"shared BBQ data absent ({BBQ_DIR})")
def test_summary_shared_bbq_subprocess() -> None:
    rel = os.path.relpath(BBQ_DIR, REPO_ROOT)
    r = subprocess.run([sys.executable, "-m", "faro_core", "data", "summary", rel, "--format", "bbq", "--json"],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["items"] == 10380 and s["pairs"] == 2 * 10380
    assert set(s["categories"]) == {"Age", "Disability_status", "Nationality", "Religion", "Sexual_orientation"}
    assert s["target_coverage"]["coverage"] >= 0.95


# ------------------------------------------------------------------------------------------------ bad input
def _assert_bad(capsys, argv: list[str], *needles: str) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, (code, out, err)
    assert "Traceback" not in err
    lines = [x for x in err.strip().splitlines() if x]
    assert len(lines) == 1, err
    for n in needles:
        assert n in err, (n, err)


def test_bad_missing_file(capsys, tmp_path) -> None:
    _assert_bad(capsys, [str(tmp_path / "nope.jsonl")], "nope.jsonl", "not found")


def test_bad_wrong_format(capsys, tmp_path) -> None:
    f = tmp_path / "prefs.csv"
    pd.DataFrame({"prompt": ["p"], "chosen": ["a"], "rejected": ["b"]}).to_csv(f, index=False)
    _assert_bad(capsys, [str(f), "--format", "bbq"], "prefs.csv", "line 1")
    _assert_bad(capsys, [str(f), "--format", "crows"], "prefs.csv", "sent_more")
    g = tmp_path / "data.txt"
    g.write_text("hello\n", encoding="utf-8")
    _assert_bad(capsys, [str(g)], "data.txt", "cannot tell the format")


def test_bad_mapped_column_absent(capsys, tmp_path) -> None:
    f = tmp_path / "t.csv"
    pd.DataFrame({"q": ["p"], "good": ["a"], "bad": ["b"]}).to_csv(f, index=False)
    _assert_bad(capsys, [str(f), "--columns", "prompt=q,chosen=good,rejected=worse"], "t.csv", "'worse'")
    _assert_bad(capsys, [str(f), "--columns", '{"prompt": "q", "chosen": "good"}'], "t.csv", "rejected")


def test_bad_empty_dataset(capsys, tmp_path) -> None:
    f = tmp_path / "empty.jsonl"
    f.write_text("", encoding="utf-8")
    _assert_bad(capsys, [str(f)], "empty.jsonl", "the dataset is empty")  # not just the file's name
    c = tmp_path / "empty.csv"
    c.write_text("prompt,chosen,rejected\n", encoding="utf-8")
    _assert_bad(capsys, [str(c)], "empty.csv", "the dataset is empty")


def test_bad_nan_or_empty_text(capsys, tmp_path) -> None:
    f = tmp_path / "t.csv"
    pd.DataFrame({"prompt": ["p", "p2"], "chosen": ["a", None], "rejected": ["b", "c"]}).to_csv(f, index=False)
    _assert_bad(capsys, [str(f)], "t.csv", "'chosen'", "row 1")
    j = tmp_path / "t.jsonl"
    j.write_text(json.dumps({"prompt": "  ", "chosen": "a", "rejected": "b"}) + "\n", encoding="utf-8")
    _assert_bad(capsys, [str(j)], "t.jsonl", "'prompt'", "row 0")


def test_bad_unknown_group(capsys) -> None:
    _assert_bad(capsys, ["demo", "--groups", "old,Martian"], "'Martian'", "known")
    _assert_bad(capsys, ["demo", "--group", "no_such_column"], "'no_such_column'")


def test_bad_malformed_json_line(capsys, tmp_path) -> None:
    f = tmp_path / "bad.jsonl"
    good = json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"})
    f.write_text(f"{good}\n{good}\n{{not json\n", encoding="utf-8")
    _assert_bad(capsys, [str(f)], "bad.jsonl", "line 3")


def test_bad_non_utf8(capsys, tmp_path) -> None:
    f = tmp_path / "latin.jsonl"
    f.write_bytes(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}).encode() + b"\n"
                  + b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n')
    _assert_bad(capsys, [str(f)], "latin.jsonl", "line 2", "UTF-8")
    c = tmp_path / "latin.csv"
    c.write_bytes(b"prompt,chosen,rejected\ncaf\xe9,a,b\n")
    _assert_bad(capsys, [str(c)], "latin.csv", "UTF-8")


def test_bad_duplicate_ids(capsys, tmp_path) -> None:
    f = tmp_path / "dup.csv"
    pd.DataFrame({"pair_id": ["x", "y", "x"], "prompt": ["p"] * 3, "chosen": ["a"] * 3,
                  "rejected": ["b"] * 3}).to_csv(f, index=False)
    _assert_bad(capsys, [str(f)], "dup.csv", "duplicate", "'x'")
    demo = sorted(DEMO_MINI_DIR.glob("*.jsonl"))[0]
    b = tmp_path / "bbq"
    b.mkdir()
    text = demo.read_text(encoding="utf-8")
    (b / "A.jsonl").write_text(text, encoding="utf-8")
    (b / "B.jsonl").write_text(text, encoding="utf-8")
    _assert_bad(capsys, [str(b)], "B.jsonl", "duplicate", "line 1")


def test_bad_skew_on_non_bbq_and_range(capsys, tmp_path) -> None:
    f = tmp_path / "t.csv"
    pd.DataFrame({"prompt": ["p"], "chosen": ["a"], "rejected": ["b"]}).to_csv(f, index=False)
    _assert_bad(capsys, [str(f), "--skew", "0.2"], "skew")
    _assert_bad(capsys, ["demo", "--skew", "2"], "skew")


def test_bad_hub_id_offline(capsys) -> None:
    from faro_core.data import hub

    if hub.hub_reachable(timeout=2.0):
        pytest.skip("the Hugging Face hub is reachable here")
    _assert_bad(capsys, ["someone/some-dataset"], "someone/some-dataset", "hub")
