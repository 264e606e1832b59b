"""Bad input never crashes Faro and never touches saved results (issue #8, part 1).

:data:`CASES` is the table of the kinds of bad input tried (one named case per kind; ``len(CASES)`` is the
count). Each case goes through

- ``faro data summary`` and/or ``faro train --data`` (the CLI, in-process): exit code 2, one
  ``faro: error: ...`` line naming the problem, no ``Traceback``; and for ``train`` the files already in the
  run store are hash-identical afterwards (a failed run may be added, with its error in ``status.json``);
- the dashboard's Data page (a subset, :data:`DASHBOARD_CASES`, by path and by upload): an ``st.error``
  naming the problem and no exception.

Hypothesis adds generated variants: random bytes under every supported extension, and random tables with
missing columns, NaN / empty / non-text cells, duplicate ids and odd gold values; each either loads or
raises :class:`~faro_core.errors.DataError`, nothing else.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faro_core.cli import main as faro_main
from faro_core.data import load
from faro_core.errors import DataError, FaroError
from faro_core.store.runs import RunStore

ROOT = Path(__file__).resolve().parent.parent
HYP = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
GOOD = {"prompt": ["Which is kinder?"] * 4, "chosen": ["Help them."] * 4, "rejected": ["Ignore them."] * 4}


# ------------------------------------------------------------------------------------------------ the table
def _w(name: str, content: str | bytes) -> Callable[[Path], str]:
    def make(d: Path) -> str:
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content.encode() if isinstance(content, str) else content)
        return str(p)
    return make


def _frame(name: str, **cols: list[object]) -> Callable[[Path], str]:
    def make(d: Path) -> str:
        p = d / name
        df = pd.DataFrame(cols)
        if name.endswith(".csv"):
            df.to_csv(p, index=False)
        elif name.endswith(".parquet"):
            df.to_parquet(p)
        else:
            df.to_json(p, orient="records", lines=True)
        return str(p)
    return make


def _truncated_parquet(d: Path) -> str:
    buf = io.BytesIO()
    pd.DataFrame(GOOD).to_parquet(buf)
    p = d / "truncated.parquet"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return str(p)


def _truncated_gz(d: Path) -> str:
    raw = gzip.compress(b"".join(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}).encode() + b"\n"
                                 for _ in range(200)))
    p = d / "truncated.jsonl.gz"
    p.write_bytes(raw[: len(raw) // 2])
    return str(p)


def _bbq(name: str, **over: object) -> Callable[[Path], str]:
    rec = {"example_id": 0, "question_index": "1", "question_polarity": "neg", "context_condition": "ambig",
           "category": "Age", "context": "An old man and a young man sat.", "question": "Who forgot?",
           "ans0": "The old man", "ans1": "The young man", "ans2": "Unknown",
           "answer_info": {"ans0": ["old", "old"], "ans1": ["young", "nonOld"], "ans2": ["Unknown", "unknown"]},
           "label": 2, "additional_metadata": {"stereotyped_groups": ["old"]}}
    rec.update(over)
    rec = {k: v for k, v in rec.items() if v is not None}
    return _w(f"bbq/{name}", json.dumps(rec) + "\n")


def _dir(d: Path) -> str:
    (d / "no_jsonl").mkdir(exist_ok=True)
    (d / "no_jsonl" / "notes.txt").write_text("nothing here")
    return str(d / "no_jsonl")


@dataclass(frozen=True)
class Case:
    """One kind of bad input: how to make it, extra CLI flags, what the error must say, which commands."""

    name: str
    make: Callable[[Path], str]
    expect: str  # regex the one-line error must match (case-insensitive)
    args: tuple[str, ...] = ()
    commands: tuple[str, ...] = ("summary", "train")


N = 40
CASES: list[Case] = [
    Case("csv_unclosed_quote", _w("q.csv", 'prompt,chosen,rejected\n"a,b,c\n'), r"malformed CSV"),
    Case("csv_extra_fields", _w("r.csv", "prompt,chosen,rejected\na,b,c,d,e\n"), r"malformed CSV.*more fields"),
    Case("csv_ragged_rows", _w("rg.csv", "prompt,chosen,rejected\na,b,c\nx,y,z,w\n"), r"malformed CSV"),
    Case("jsonl_malformed_line", _w("m.jsonl", '{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": \n'),
         r"line 2 is not valid JSON"),
    Case("jsonl_non_object_line", _w("l.jsonl", "[1, 2, 3]\n"), r"line 1 is not a JSON object"),
    Case("json_not_a_list", _w("d.json", '{"x": 1}'), r"list of objects"),
    Case("json_malformed", _w("bad.json", '[{"prompt": "a",'), r"not valid JSON"),
    Case("parquet_garbage", _w("g.parquet", b"PAR1" + bytes(range(256)) * 2), r"not a readable Parquet"),
    Case("parquet_truncated", _truncated_parquet, r"not a readable Parquet"),
    Case("gzip_truncated", _truncated_gz, r"cannot read"),
    Case("empty_file", _w("empty.csv", ""), r"the dataset is empty"),
    Case("header_only", _w("header.csv", "prompt,chosen,rejected\n"), r"the dataset is empty"),
    Case("blank_jsonl", _w("blank.jsonl", "\n\n   \n"), r"the dataset is empty"),
    Case("missing_column", _frame("miss.csv", prompt=["p"] * 3, chosen=["a"] * 3), r"rejected"),
    Case("renamed_columns", _frame("ren.csv", question=["p"] * 3, good=["a"] * 3, bad=["b"] * 3),
         r"missing column.*prompt"),
    Case("mapped_column_absent", _frame("map.csv", **GOOD), r"mapped column 'nope'", ("--columns", "gold=nope"),
         ("summary",)),
    Case("nan_text", _frame("nan.csv", prompt=["p", "q"], chosen=["a", None], rejected=["b", "c"]),
         r"'chosen' has NaN or empty text at row 1"),
    Case("empty_text", _w("emp.jsonl", '{"prompt": "p", "chosen": "   ", "rejected": "b"}\n'),
         r"'chosen' has NaN or empty text"),
    Case("huge_text", _frame("huge.csv", prompt=["p"], chosen=["x" * 1_100_000], rejected=["b"]),
         r"'chosen' has a text of 1,100,000 characters"),
    Case("non_utf8_csv", _w("latin.csv", "prompt,chosen,rejected\ncaf\xe9,a,b\n".encode("latin-1")),
         r"not valid UTF-8"),
    Case("non_utf8_jsonl", _w("latin.jsonl", b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n'),
         r"line 1 is not valid UTF-8"),
    Case("wrong_type_text", _w("int.jsonl", '{"prompt": "p", "chosen": 42, "rejected": "b"}\n'),
         r"'chosen' must be a string"),
    Case("wrong_type_object", _w("obj.jsonl", '{"prompt": {"a": 1}, "chosen": "x", "rejected": "b"}\n'),
         r"'prompt' must be a string"),
    Case("wrong_type_gold", _frame("gold.csv", **GOOD, gold=["yes"] * 4), r"'gold' must be 1, 0 or empty"),
    Case("gold_out_of_range", _frame("gold2.csv", **GOOD, gold=[2] * 4), r"'gold' must hold only 1, 0"),
    Case("duplicate_ids", _frame("dup.csv", pair_id=[1, 1, 2, 3], **GOOD), r"duplicate pair_id '1'"),
    Case("unknown_extension", _w("data.xlsx", "abc"), r"cannot tell the format"),
    Case("file_not_found", lambda d: str(d / "nope.csv"), r"not found"),
    Case("folder_without_data", _dir, r"no \.jsonl"),
    Case("bbq_missing_field", _bbq("nofield.jsonl", question=None), r"not a BBQ item.*question",
         ("--format", "bbq")),
    Case("bbq_bad_label", _bbq("label.jsonl", label=7), r"label 7 is not 0, 1 or 2"),
    Case("hh_no_assistant_turn", _w("hh.jsonl", '{"chosen": "Human: hi", "rejected": "Human: yo"}\n'),
         r"no 'Assistant:' turn", ("--format", "hh")),
    Case("crows_missing_column", _w("crows.csv", "sent_more,sent_less\na,b\n"), r"missing column.*bias_type",
         ("--format", "crows")),
    Case("group_column_absent", _frame("g.csv", **GOOD), r"group column 'nope'", ("--group", "nope")),
    Case("strata_column_absent", _frame("s.csv", **GOOD), r"strata column 'nope'", ("--strata", "nope")),
    Case("unknown_group_value", lambda d: "demo", r"unknown group value", ("--groups", "martians")),
    Case("empty_group_selection", _frame("eg.csv", **GOOD, group=["a"] * 4), r"empty", ("--groups", ",")),
    Case("single_member_group", _frame("one.csv", prompt=[f"p{i}" for i in range(N)], chosen=["a"] * N,
                                       rejected=["b"] * N, group=["big"] * (N - 1) + ["solo"]),
         r"too few items \(1\)", ("--groups", "solo"), ("train",)),
    Case("skew_on_non_bbq", _frame("sk.csv", **GOOD), r"skew injection needs BBQ", ("--skew", "0.5")),
    Case("skew_out_of_range", lambda d: "demo", r"skew must be in \[0, 1\]", ("--skew", "3")),
    Case("empty_group_column_with_constraint",
         _frame("ng.csv", prompt=[f"p{i}" for i in range(N)], chosen=["a"] * N, rejected=["b"] * N, group=[""] * N),
         r"nothing to compare", ("--constraint", "eo", "--epochs", "1"), ("train",)),
]
DASHBOARD_CASES = ["csv_unclosed_quote", "parquet_truncated", "missing_column", "nan_text", "non_utf8_csv",
                   "duplicate_ids", "huge_text", "file_not_found"]
UPLOAD_CASES = ["csv_extra_fields", "jsonl_malformed_line", "wrong_type_gold"]


def test_the_table_covers_at_least_25_kinds() -> None:
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)) and len(names) >= 25, len(names)


# ------------------------------------------------------------------------------------------------ store
def tree_hashes(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root``."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def saved_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run store holding a finished run (written through the run store API, no training needed)."""
    from faro_core.io import write_parquet, write_safetensors

    root = tmp_path_factory.mktemp("fuzz_store")
    run = RunStore(root).create({"name": "kept", "constraints": ["dp"], "epsilon": 0.05}, run_id="kept")
    run.set_status("done")
    run.write("metrics.json", {"accuracy": 0.9, "violation": {"dp": 0.01}})
    write_parquet(run.file("scores.parquet"), pd.DataFrame({"pair_id": ["a"], "r_chosen": [1.0]}))
    import torch

    write_safetensors(run.file("model.safetensors"), {"w": torch.ones(3)})
    return root


@pytest.fixture()
def case_dir(tmp_path: Path) -> Path:
    return tmp_path


# ------------------------------------------------------------------------------------------------ CLI
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_cli_bad_input_exit_2_and_store_untouched(case: Case, case_dir: Path, saved_store: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    source = case.make(case_dir)
    if "summary" in case.commands:
        rc = faro_main(["data", "summary", source, *case.args])
        err = capsys.readouterr().err
        assert rc == 2, err
        assert err.startswith("faro: error: ") and len(err.strip().splitlines()) == 1, err
        assert re.search(case.expect, err, re.I), err
        assert "Traceback" not in err
    if "train" in case.commands:
        before = tree_hashes(saved_store)
        old_ids = {r.run_id for r in RunStore(saved_store).list()}
        rc = faro_main(["train", "--data", source, *case.args, "--runs-dir", str(saved_store), "--quiet"])
        err = capsys.readouterr().err
        assert rc == 2, err
        last = err.strip().splitlines()[-1]
        assert last.startswith("faro: error: ") and re.search(case.expect, last, re.I), err
        assert "Traceback" not in err
        after = tree_hashes(saved_store)
        assert {k: after[k] for k in before} == before, "a saved file changed"
        for run in RunStore(saved_store).list():  # anything new is a failed run that says why
            if run.run_id not in old_ids:
                assert run.status == "failed" and re.search(case.expect, run.raw_status()["error"], re.I)


def test_cli_subprocess_bad_input_no_traceback(tmp_path: Path) -> None:
    """The real entry point (``python -m faro_core``), for one case per command."""
    import subprocess
    import sys

    src = _w("q.csv", 'prompt,chosen,rejected\n"a,b,c\n')(tmp_path)
    for argv in (["data", "summary", src], ["train", "--data", src, "--runs-dir", str(tmp_path / "runs")]):
        res = subprocess.run([sys.executable, "-m", "faro_core", *argv], capture_output=True, text=True,
                             cwd=ROOT, timeout=120)
        assert res.returncode == 2 and "malformed CSV" in res.stderr and "Traceback" not in res.stderr


# ------------------------------------------------------------------------------------------------ dashboard
def _data_page():  # noqa: ANN202
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(ROOT / "dashboard" / "pages" / "1_Data.py"), default_timeout=60)


@pytest.mark.parametrize("name", DASHBOARD_CASES)
def test_dashboard_data_page_bad_path_shows_error(name: str, case_dir: Path) -> None:
    pytest.importorskip("streamlit")
    case = next(c for c in CASES if c.name == name)
    source = case.make(case_dir)
    at = _data_page().run()
    at.radio[0].set_value("folder or file path").run()
    at.text_input(key="data_path").set_value(source).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.error and re.search(case.expect, at.error[0].value, re.I), [e.value for e in at.error]


@pytest.mark.parametrize("name", UPLOAD_CASES)
def test_dashboard_data_page_bad_upload_shows_error(name: str, case_dir: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("streamlit")
    monkeypatch.setenv("FARO_CACHE_DIR", str(case_dir / "cache"))  # uploads land in the cache dir
    case = next(c for c in CASES if c.name == name)
    (case_dir / "src").mkdir()
    source = Path(case.make(case_dir / "src"))
    at = _data_page().run()
    at.radio[0].set_value("upload").run()
    at.file_uploader[0].set_value((source.name, source.read_bytes(), "application/octet-stream")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.error and re.search(case.expect, at.error[0].value, re.I), [e.value for e in at.error]


def test_dashboard_upload_over_the_limit_is_refused(case_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("streamlit")
    import faro_core.store.uploads as uploads

    monkeypatch.setenv("FARO_CACHE_DIR", str(case_dir / "cache"))
    monkeypatch.setattr(uploads, "MAX_UPLOAD_MB", 0.001)
    monkeypatch.setattr(uploads.save_upload, "__defaults__", (None, 0.001))
    at = _data_page().run()
    at.radio[0].set_value("upload").run()
    at.file_uploader[0].set_value(("big.csv", b"prompt,chosen,rejected\n" + b"a,b,c\n" * 1000, "text/csv")).run()
    assert not at.exception
    assert at.error and "upload limit" in at.error[0].value
    assert not (case_dir / "cache" / "uploads").exists() or not any((case_dir / "cache" / "uploads").iterdir())


# ------------------------------------------------------------------------------------------------ hypothesis
@HYP
@given(data=st.binary(max_size=600), ext=st.sampled_from([".csv", ".jsonl", ".json", ".parquet", ".jsonl.gz"]))
def test_random_bytes_load_or_data_error(tmp_path: Path, data: bytes, ext: str) -> None:
    p = tmp_path / f"random{ext}"
    p.write_bytes(data)
    try:
        load(str(p))
    except DataError as exc:
        assert str(exc).strip()  # a message, never an empty error


_cell = st.one_of(st.none(), st.just(""), st.just("   "), st.just(float("nan")), st.integers(-5, 5),
                  st.text(min_size=1, max_size=20), st.sampled_from(["a", "b", "ok text"]))
_cols = st.sets(st.sampled_from(["prompt", "chosen", "rejected", "pair_id", "gold", "group"]), max_size=6)


@HYP
@given(cols=_cols, rows=st.integers(0, 6), cells=st.data(), fmt=st.sampled_from([".csv", ".jsonl", ".parquet"]))
def test_random_tables_load_or_data_error(tmp_path: Path, cols: set[str], rows: int, cells: st.DataObject,
                                          fmt: str) -> None:
    df = pd.DataFrame({c: [cells.draw(_cell) for _ in range(rows)] for c in sorted(cols)})
    p = tmp_path / f"table{fmt}"
    if fmt == ".csv":
        df.to_csv(p, index=False)
    elif fmt == ".jsonl":
        df.to_json(p, orient="records", lines=True)
    else:
        try:
            df.astype(str).where(df.notna(), None).to_parquet(p)
        except Exception:  # noqa: BLE001 - a frame pyarrow cannot write is not a Faro input
            return
    try:
        data = load(str(p))
    except FaroError:
        return
    # what loads is clean: non-empty text everywhere, unique ids, gold in {0, 1, NaN} (random cells almost
    # never make a loadable table: test_clean_random_tables_load_whole checks these on tables that do)
    assert len(data) > 0 and data.df["pair_id"].is_unique
    for c in ("prompt", "chosen", "rejected"):
        assert data.df[c].map(lambda v: isinstance(v, str) and v.strip() != "").all()
    assert data.df["gold"].dropna().isin([0.0, 1.0]).all() and np.issubdtype(data.df["gold"].dtype, np.floating)


_word = st.from_regex(r"[a-z]{1,8}( [a-z]{1,8}){0,3}", fullmatch=True)


@HYP
@given(rows=st.integers(1, 8), with_ids=st.booleans(), with_group=st.booleans(), cells=st.data(),
       fmt=st.sampled_from([".csv", ".jsonl", ".parquet"]))
def test_clean_random_tables_load_whole(tmp_path: Path, rows: int, with_ids: bool, with_group: bool,
                                        cells: st.DataObject, fmt: str) -> None:
    """Well-formed tables of random text always load, every row kept with its text, id, gold and group."""
    df = pd.DataFrame({"prompt": [f"q {cells.draw(_word)}" for _ in range(rows)],  # "q ...": never a NaN token
                       "chosen": [f"c {cells.draw(_word)}" for _ in range(rows)],
                       "rejected": [f"r {cells.draw(_word)}" for _ in range(rows)],
                       "gold": [cells.draw(st.sampled_from([0.0, 1.0, None])) for _ in range(rows)]})
    if with_ids:
        df["pair_id"] = [f"id{i}" for i in cells.draw(st.permutations(range(rows)))]
    if with_group:
        df["group"] = [cells.draw(st.sampled_from(["a", "b"])) for _ in range(rows)]
    p = tmp_path / f"table{fmt}"
    {".csv": lambda: df.to_csv(p, index=False), ".parquet": lambda: df.to_parquet(p),
     ".jsonl": lambda: df.to_json(p, orient="records", lines=True)}[fmt]()
    data = load(str(p))  # no try: a clean table must load
    got = data.df
    assert len(got) == rows and got["pair_id"].is_unique
    for c in ("prompt", "chosen", "rejected"):
        assert got[c].tolist() == df[c].tolist()
    assert np.array_equal(got["gold"].to_numpy(dtype=float), df["gold"].to_numpy(dtype=float), equal_nan=True)
    if with_ids:
        assert got["pair_id"].astype(str).tolist() == df["pair_id"].tolist()
    if with_group:
        assert got["group"].tolist() == df["group"].tolist()
