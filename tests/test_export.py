"""`faro export` (issue #19): exported runs load and score without Faro, with a model card and the run's config.

The "without Faro" checks run in a subprocess (``python -I``, cwd outside the repository) whose import system
refuses ``faro_core`` and whose ``sys.path`` holds no path inside the repository.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from faro_core.cli import main as faro_main
from faro_core.paths import REPO_ROOT
from faro_core.store.runs import RunStore
from faro_core.train import FaroConfig, train
from faro_core.train.inputs import load_training_data

TOL = 1e-4

# Prepended to every no-Faro script: no repository path on sys.path (but the venv's), and faro_core cannot be imported (the
# venv's editable install would otherwise find it).
NO_FARO = textwrap.dedent(f"""
    import importlib.abc, json, sys
    REPO = {str(REPO_ROOT)!r}
    VENV = REPO + "/.venv"  # the interpreter's own environment may live in the checkout: it stays
    sys.path[:] = [p for p in sys.path if p and (not p.startswith(REPO) or p.startswith(VENV))]
    class _NoFaro(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "faro_core" or name.startswith("faro_core."):
                raise ModuleNotFoundError("faro_core is blocked in this check")
            return None
    sys.meta_path.insert(0, _NoFaro())
""")


def run_without_faro(script: str, cwd: Path, timeout: int = 600) -> dict:
    """Run ``script`` without Faro importable; it prints one JSON object as its last line."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["HF_HUB_OFFLINE"] = "1"
    body = NO_FARO + textwrap.dedent(script) + textwrap.dedent("""
        assert not any(m == "faro_core" or m.startswith("faro_core.") for m in sys.modules), "faro_core imported"
    """)
    proc = subprocess.run([sys.executable, "-I", "-c", body], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def held_out_pairs(run) -> pd.DataFrame:
    """The run's test pairs: texts, and the rewards `faro eval` reads (the run's scores.parquet)."""
    scores = pd.read_parquet(run.file("scores.parquet"))
    scores = scores[scores["split"] == "test"]
    _, df, _ = load_training_data(FaroConfig.from_dict(run.config))
    text = df.set_index("pair_id").loc[scores["pair_id"], ["prompt", "chosen", "rejected"]].reset_index()
    return pd.concat([text, scores[["r_chosen", "r_rejected"]].reset_index(drop=True)], axis=1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    # the session's feature cache (the mini demo is encoded once per test session, not again here): its
    # features come from other encoding batches than the export's own pass, ~1e-7 apart, far inside TOL
    mp = pytest.MonkeyPatch()
    store = RunStore(tmp_path_factory.mktemp("export") / "runs")
    train(FaroConfig(data="demo-mini", constraints=["dp"], epsilon=0.05, epochs=3, min_count=5, groups=["old"]), store,
          run_id="head", progress=False)
    train(FaroConfig(data="demo-mini", mode="full", groups=["old"], epochs=1, batch_size=32, max_length=64), store, run_id="full",
          progress=False)
    yield store
    mp.undo()


def export(runs: RunStore, run_id: str, out: Path, *extra: str) -> int:
    return faro_main(["export", run_id, "--out", str(out), "--runs-dir", str(runs.root), *extra])


def test_head_export_is_a_sentence_transformer_scoring_as_faro(runs, tmp_path):
    out = tmp_path / "head_export"
    assert export(runs, "head", out) == 0
    modules = json.loads((out / "modules.json").read_text())
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    assert kinds[:3] == ["Transformer", "Pooling", "Normalize"] and set(kinds[3:]) == {"Dense"}, kinds
    pairs = held_out_pairs(runs.get("head"))
    (tmp_path / "pairs.json").write_text(pairs.to_json(orient="records"))
    res = run_without_faro(f"""
        import pandas as pd
        from sentence_transformers import SentenceTransformer
        pairs = pd.read_json({str(tmp_path / 'pairs.json')!r}, orient="records")
        model = SentenceTransformer({str(out)!r}, device="cpu")
        rc = model.encode(list(zip(pairs["prompt"], pairs["chosen"])))[:, 0]
        rr = model.encode(list(zip(pairs["prompt"], pairs["rejected"])))[:, 0]
        print(json.dumps({{"rc": rc.tolist(), "rr": rr.tolist()}}))
    """, cwd=tmp_path)
    diff = max(np.abs(np.array(res["rc"]) - pairs["r_chosen"]).max(), np.abs(np.array(res["rr"]) - pairs["r_rejected"]).max())
    assert len(pairs) >= 10 and diff <= TOL, diff
    # the eval scores are the stored ones: faro eval's accuracy is the share of these pairs won
    assert faro_main(["eval", "head", "--runs-dir", str(runs.root), "--n-boot", "0"]) == 0
    ev = runs.get("head").read("eval.json")
    assert ev["metrics"]["accuracy"]["value"] == pytest.approx(np.mean(np.array(res["rc"]) > np.array(res["rr"])))


def test_full_export_scores_as_faro_and_trl_evaluates_it_without_faro(runs, tmp_path):
    out = tmp_path / "full_export"
    assert export(runs, "full", out) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["num_labels"] == 1 if "num_labels" in config else len(config["id2label"]) == 1
    pairs = held_out_pairs(runs.get("full"))
    (tmp_path / "pairs.json").write_text(pairs.to_json(orient="records"))
    res = run_without_faro(f"""
        import pandas as pd, torch
        from datasets import Dataset
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from trl import RewardConfig, RewardTrainer
        pairs = pd.read_json({str(tmp_path / 'pairs.json')!r}, orient="records")
        tok = AutoTokenizer.from_pretrained({str(out)!r})
        model = AutoModelForSequenceClassification.from_pretrained({str(out)!r}).eval()
        with torch.no_grad():
            rc = model(**tok(list(pairs["prompt"]), list(pairs["chosen"]), padding=True, truncation=True,
                             return_tensors="pt")).logits[:, 0]
            rr = model(**tok(list(pairs["prompt"]), list(pairs["rejected"]), padding=True, truncation=True,
                             return_tensors="pt")).logits[:, 0]
        ids = lambda col: [tok(p, r, truncation=True)["input_ids"] for p, r in zip(pairs["prompt"], pairs[col])]
        ds = Dataset.from_dict({{"chosen_ids": ids("chosen"), "rejected_ids": ids("rejected")}})
        args = RewardConfig(output_dir={str(tmp_path / 'trl')!r}, per_device_eval_batch_size=len(ds),
                            report_to=[], bf16=False, use_cpu=True)
        trainer = RewardTrainer(model=model, args=args, train_dataset=ds, eval_dataset=ds, processing_class=tok)
        print(json.dumps({{"rc": rc.tolist(), "rr": rr.tolist(), "trl": trainer.evaluate()}}))
    """, cwd=tmp_path)
    rc, rr = np.array(res["rc"]), np.array(res["rr"])
    diff = max(np.abs(rc - pairs["r_chosen"]).max(), np.abs(rr - pairs["r_rejected"]).max())
    assert len(pairs) >= 10 and diff <= TOL, diff
    # TRL's collator passes no token_type_ids (Faro encodes the sentence pair with them), so its accuracy
    # is near, not equal to, the share of pairs won with Faro's own scores
    faro_acc = float(np.mean(pairs["r_chosen"] > pairs["r_rejected"]))
    assert abs(res["trl"]["eval_accuracy"] - faro_acc) <= 0.15, (res["trl"], faro_acc)


def test_export_dir_has_a_model_card_and_the_run_config(runs, tmp_path):
    out = tmp_path / "card"
    assert faro_main(["eval", "head", "--runs-dir", str(runs.root), "--n-boot", "50"]) == 0  # the card's intervals
    assert export(runs, "head", out) == 0
    text = (out / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["datasets"] and meta["library_name"] == "sentence-transformers"
    faro = meta["faro"]
    assert faro["constraints"] == ["dp"] and faro["epsilon"] == 0.05
    acc = faro["metrics"]["accuracy"]
    assert acc["lo"] <= acc["value"] <= acc["hi"]
    cert = faro["certificate"]
    assert isinstance(cert["certified"], bool) and cert["bound_type"], cert
    rows = runs.get("head").read("certificate.json")["bounds"]
    assert {r["kind"] for r in rows} == set(cert["bound_type"])  # every certified kind names its bound
    assert meta["model-index"][0]["results"][0]["metrics"]
    assert json.loads((out / "faro_config.json").read_text()) == runs.get("head").config
    check = json.loads((out / "faro_export.json").read_text())["check"]
    assert check["max_abs_diff"] <= TOL and check["within_tolerance"]


def test_export_refuses_a_non_empty_dir_and_keeps_it(runs, tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert export(runs, "head", out) == 2
    assert "not empty" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"
    assert faro_main(["export", "nope", "--out", str(tmp_path / "x"), "--runs-dir", str(runs.root)]) == 2


def test_push_to_hub_without_network_is_a_clear_error(runs, tmp_path):
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "hf_faro_test_not_a_token",
           "PYTHONPATH": str(REPO_ROOT)}
    env.pop("HF_HUB_OFFLINE", None)
    out = tmp_path / "push"
    proc = subprocess.run([sys.executable, "-m", "faro_core", "export", "head", "--out", str(out), "--runs-dir",
                           str(runs.root), "--push-to-hub", "someone/faro-test"], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("faro: error: cannot reach the Hugging Face Hub") and "someone/faro-test" in err, err
    assert (out / "modules.json").exists()  # the export itself is kept
