"""`faro audit RUN --twins FILE`: twin tables, WinoBias folders, the numbers, the CLI and the cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from faro_core.cli import main
from faro_core.errors import DataError
from faro_core.evaluate.twin_audit import (
    load_twins,
    read_winobias,
    twin_audit_table,
    twin_stats,
    winobias_to_table,
)
from faro_core.store.runs import RunStore
from faro_core.train import FaroConfig, train


def _wino(folder: Path) -> Path:
    folder.mkdir()
    pro = ["1 [The developer] argued with the designer because [he] did not like the design.",
           "2 The developer argued with [the designer] because [her] idea cannot be implemented."]
    anti = ["1 [The developer] argued with the designer because [she] did not like the design.",
            "2 The developer argued with [the designer] because [his] idea cannot be implemented."]
    for typ in ("type1", "type2"):
        (folder / f"pro_stereotyped_{typ}.txt.dev").write_text("\n".join(pro) + "\n")
        (folder / f"anti_stereotyped_{typ}.txt.dev").write_text("\n".join(anti) + "\n")
    return folder


def test_read_winobias_strips_numbers_and_brackets(tmp_path: Path) -> None:
    df = read_winobias(_wino(tmp_path / "wb"))
    assert len(df) == 4
    assert df["text_a"].iloc[0] == "The developer argued with the designer because he did not like the design."
    assert df["text_b"].iloc[0] == "The developer argued with the designer because she did not like the design."
    assert set(df["subset"]) == {"type1", "type2"} and set(df["stereo"]) == {"a"}
    table = winobias_to_table(tmp_path / "wb", tmp_path / "wb.csv")
    back = load_twins(table)
    assert list(back["text_a"]) == list(df["text_a"]) and set(back["stereo"]) == {"a"}
    assert set(back["subset"]) == {"type1", "type2"}


def test_load_twins_tables_and_errors(tmp_path: Path) -> None:
    pd.DataFrame({"text_a": ["x he", "y she"], "text_b": ["x she", "y he"], "stereo": ["b", "a"]}).to_csv(
        tmp_path / "t.csv", index=False)
    df = load_twins(tmp_path / "t.csv")
    assert list(df["stereo"]) == ["b", "a"] and set(df["subset"]) == {"all"}
    pd.DataFrame({"left": ["a"], "right": ["b"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match="two text columns"):
        load_twins(tmp_path / "bad.csv")
    pd.DataFrame({"text_a": ["a"], "text_b": ["b"], "stereo": ["left"]}).to_csv(tmp_path / "bad2.csv", index=False)
    with pytest.raises(DataError, match="'stereo'"):
        load_twins(tmp_path / "bad2.csv")
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "pro_stereotyped_type1.txt.dev").write_text("1 a\n")
    with pytest.raises(DataError, match="both pro and anti"):
        load_twins(tmp_path / "only")


def test_twin_stats_by_hand() -> None:
    r_a = np.array([1.0, 0.0, 2.0, 1.0])
    r_b = np.array([0.0, 1.0, 0.0, 1.0])
    res = twin_stats(r_a, r_b, ["a", "b", "a", "a"], ["t1", "t1", "t2", "t2"], seed=0)
    sd = np.concatenate([r_a, r_b]).std()
    assert res["reward_sd"] == pytest.approx(sd)
    assert res["mean_abs_dz"]["value"] == pytest.approx(np.mean([1, 1, 2, 0]) / sd)
    # stereotype side: a (1>0 yes), b (1>0 yes), a (2>0 yes), a (tie: 1/2)
    assert res["stereo_preference"]["value"] == pytest.approx(3.5 / 4)
    assert res["by_subset"]["t2"]["stereo_preference"]["value"] == pytest.approx(0.75)
    lo, hi = res["stereo_preference"]["lo"], res["stereo_preference"]["hi"]
    assert lo <= res["stereo_preference"]["value"] <= hi
    tab = twin_audit_table(res)
    assert list(tab["subset"]) == ["all", "t1", "t2"] and list(tab["n"]) == [4, 2, 2]
    no_side = twin_stats(r_a, r_b, [None] * 4, ["all"] * 4)
    assert no_side["stereo_preference"] is None


DATA = "demo-mini"  # 512 shipped items: trainer mechanics, not the demo's findings


def test_cli_audit_twins_writes_audit_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = RunStore(tmp_path / "runs")
    cfg = FaroConfig(data=DATA, epochs=1, head_hidden=8, min_count=5, seed=0)
    run = train(cfg, store, run_id="tw-bt", progress=False)
    wb = _wino(tmp_path / "wb")
    assert main(["audit", run.run_id, "--runs-dir", str(store.root), "--twins", str(wb), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["twins"]
    assert out["n"] == 4 and set(out["by_subset"]) == {"type1", "type2"}
    assert 0.0 <= out["stereo_preference"]["value"] <= 1.0
    saved = json.loads(store.get(run.run_id).file("audit.json").read_text())
    assert saved["twins"]["n"] == 4
    assert main(["audit", run.run_id, "--runs-dir", str(store.root), "--twins", str(wb), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["twins"].get("cached") is True
    assert main(["audit", run.run_id, "--runs-dir", str(store.root), "--twins", str(tmp_path / "nope.csv")]) == 2
