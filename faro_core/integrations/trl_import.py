"""A TRL-trained reward model as an ordinary Faro run: ``faro import DIR --eval-data ...`` and
``FairRewardConfig(faro_runs_dir=...)``.

The run gets what ``faro train`` writes (``config.json``, ``status.json``, ``constraints.json``, ``data.json``,
``scores.parquet`` of the evaluation pairs as the ``test`` split, ``model.json`` + ``hf_model/``,
``metrics.json``, ``history.jsonl`` from TRL's log) plus ``eval.json`` and ``certificate.json``, so that
``faro eval/certify/report``, ``faro runs list`` and the dashboard read it like any other. ``config.json``
carries an ``imported`` record: where the model came from, the columns the user named (group columns,
attribute, strata), the evaluation data, its split column and value, and how disjointness was checked.

Contracts:

- the evaluation pairs must be disjoint from the training pairs, on pair ids and on item (prompt) ids, whichever
  both sides have; the training ids come from the model's ``faro_dual.json`` (written by
  :class:`~faro_core.integrations.trl.FairRewardTrainer`) or from ``train_data``; with neither, or on any
  overlap, a :class:`FaroError` (one line) and nothing is written;
- a directory that is not a reward model (no ``config.json``, not a sequence classifier with one label, no
  weights), or evaluation data without the named columns: a :class:`FaroError`, nothing written;
- every check and the scoring run before the run directory exists; a failure while writing removes it.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from faro_core.errors import FaroError

DUAL_FILE = "faro_dual.json"
TEXT_MODES = ("concat", "pair")
IMPORT_KIND = "trl"


# ---------------------------------------------------------------------------------------------------------
# the model directory
# ---------------------------------------------------------------------------------------------------------
def check_reward_model(model_dir: str | Path) -> dict[str, Any]:
    """The model's ``config.json`` if ``model_dir`` holds a reward model TRL saved (a sequence classifier with
    one label, with weights), else a :class:`FaroError`."""
    p = Path(model_dir)
    if not p.is_dir():
        raise FaroError(f"{p}: not a directory")
    cfg_path = p / "config.json"
    if not cfg_path.exists():
        raise FaroError(f"{p} is not a reward model directory: no config.json (give the folder TRL's save_model "
                        "or a checkpoint-N wrote)")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FaroError(f"{cfg_path}: not JSON ({exc})") from exc
    arch = [a for a in (cfg.get("architectures") or []) if isinstance(a, str)]
    n_labels = cfg.get("num_labels", len(cfg.get("id2label") or {}) or None)
    if not any(a.endswith("ForSequenceClassification") for a in arch) or n_labels != 1:
        raise FaroError(f"{p} is not a reward model: architectures {arch or 'none'}, {n_labels} label(s); a reward "
                        "model is a *ForSequenceClassification with num_labels=1")
    if not any(p.glob("*.safetensors")):
        raise FaroError(f"{p} has no safetensors weights (model.safetensors); save it with safe_serialization")
    return cfg


def read_record(model_dir: str | Path) -> dict[str, Any] | None:
    """``faro_dual.json`` beside the model (None when the model was trained without Faro's constraints)."""
    p = Path(model_dir) / DUAL_FILE
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise FaroError(f"{p}: not JSON ({exc})") from exc


# ---------------------------------------------------------------------------------------------------------
# the evaluation pairs
# ---------------------------------------------------------------------------------------------------------
def columns_of(record: dict[str, Any] | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """The dataset's column names: the training record's, then what the user passed (None: keep)."""
    cols = {"attribute": "group", "role_columns": None, "item_column": "item_id",
            "chosen_group_column": "chosen_group", "rejected_group_column": "rejected_group",
            "attribute_column": "group", "strata_columns": None, "label_column": "gold",
            "pair_id_column": "pair_id"}
    cols.update((record or {}).get("columns") or {})
    cols.update({k: v for k, v in overrides.items() if v is not None})
    return cols


def eval_frame(source: str, cols: dict[str, Any], kinds: list[str], format: str | None = None,
               split_column: str | None = None, split: str | None = None) -> tuple[Any, pd.DataFrame, list[str]]:
    """(PreferenceData, pairs frame under Faro's column names, strata columns) of the evaluation data; the
    rows with ``split_column == split`` when given. A :class:`FaroError` names what is missing."""
    from faro_core.data import load
    from faro_core.data.readers import read_table
    from faro_core.fairness.attributes import attribute_strategy

    path = Path(source)
    named = {"chosen_group": cols["chosen_group_column"], "rejected_group": cols["rejected_group_column"],
             "group": cols["attribute_column"], "item_id": cols["item_column"], "pair_id": cols["pair_id_column"],
             "gold": cols["label_column"]}
    attribute = attribute_strategy(cols["attribute"])
    needed = {c for k in kinds for c in attribute.frame_columns(k)}
    if path.is_file():  # a table: check the named columns before loading anything
        raw_cols = set(map(str, read_table(path).columns))
        want = {named[k] for k in needed if named[k]} | set(cols["strata_columns"] or [])
        want |= set(cols["role_columns"] or []) | ({split_column} if split_column else set())
        missing = sorted(want - raw_cols)
        if missing:
            raise FaroError(f"{path}: no column(s) {missing} (columns: {sorted(raw_cols)}); name the dataset's "
                            f"columns as at training (--group-columns, --group, --item-column, --strata)")
        mapping = {ours: theirs for ours, theirs in named.items() if theirs and theirs != ours and theirs in raw_cols}
        data = load(source, format=format, columns=mapping or None)
    else:
        data = load(source, format=format)
    df = data.df.reset_index(drop=True)
    if split_column:
        if split_column not in df:
            raise FaroError(f"{source}: no split column {split_column!r}")
        if split is None:
            raise FaroError("--split-column needs --split VALUE (the held-out rows)")
        df = df[df[split_column].astype(str) == str(split)].reset_index(drop=True)
        if df.empty:
            raise FaroError(f"{source}: no row has {split_column} = {split!r}")
    missing = sorted(k for k in needed if k not in df or df[k].isna().all())
    if missing:
        raise FaroError(f"{source}: the constraints {kinds} need column(s) {[named[k] for k in missing]}, which "
                        f"are absent or empty")
    strata = cols["strata_columns"]
    if strata is None:
        strata = attribute.default_strata(list(df.columns)) or []
    absent = [c for c in strata if c not in df]
    if absent:
        raise FaroError(f"{source}: no strata column(s) {absent}")
    df = attribute.prepare(df, cols["role_columns"], name=str(source))
    return data, df, list(strata)


def check_disjoint(df: pd.DataFrame, record: dict[str, Any] | None, train: pd.DataFrame | None,
                   source: str) -> dict[str, Any]:
    """Refuse evaluation pairs that overlap the training pairs (pair ids, item ids, or prompt texts, whichever
    both sides have); returns how it was checked."""
    sides: dict[str, set[str]] = {}
    if train is not None:
        sides["pair_id"] = set(train["pair_id"].astype(str))
        sides["item_id"] = set(train["item_id"].astype(str))
        sides["prompt"] = set(train["prompt"].astype(str))
        where = "the training data"
    elif record is not None and record.get("train_pair_ids") is not None:
        if record.get("pair_ids_from") != "row":  # row numbers name no pair outside their dataset
            sides["pair_id"] = set(map(str, record["train_pair_ids"]))
        if record.get("train_item_ids") is not None:
            sides["item_id"] = set(map(str, record["train_item_ids"]))
        where = f"the training pairs recorded in {DUAL_FILE}"
    else:
        raise FaroError("cannot check that the evaluation data is disjoint from the training data: the model has no "
                        f"{DUAL_FILE} with training ids; pass --train-data (the data it was trained on)")
    if not sides:
        raise FaroError(f"cannot check disjointness: {where} has neither pair ids nor item ids; pass --train-data")
    checked = {}
    for key, ids in sides.items():
        ours = set(df[key].astype(str)) if key in df else set()
        both = ours & ids
        if both:
            raise FaroError(f"{source} overlaps the training data: {len(both)} {key}(s) in both (e.g. "
                            f"{sorted(both)[0]!r}); evaluate on held-out pairs (--split-column/--split)")
        checked[key] = len(ours)
    return {"against": where, "checked_on": sorted(checked), "n_eval_ids": checked}


def score_frame(model_dir: str | Path, df: pd.DataFrame, text: str, max_length: int) -> tuple[np.ndarray, ...]:
    """(r_chosen, r_rejected, cf_r_chosen, cf_r_rejected) of the frame's pairs by the model, reading each
    (prompt, response) as ``text`` says (:class:`faro_core.models.reward.RewardScorer`)."""
    from faro_core.models.reward import RewardScorer, load_sequence_classifier

    tok, model = load_sequence_classifier(str(model_dir), "cpu")
    scorer = RewardScorer("full", max_length, model=model, tok=tok, text=text)
    r_c = scorer.score(df["prompt"], df["chosen"])
    r_r = scorer.score(df["prompt"], df["rejected"])
    cf_c = np.full(len(df), np.nan, dtype=np.float32)
    cf_r = cf_c.copy()
    if {"cf_prompt", "cf_chosen", "cf_rejected"} <= set(df.columns):
        twin = (df["cf_prompt"].notna() & df["cf_chosen"].notna() & df["cf_rejected"].notna()).to_numpy()
        if twin.any():
            tw = df[twin]
            cf_c[twin] = scorer.score(tw["cf_prompt"], tw["cf_chosen"])
            cf_r[twin] = scorer.score(tw["cf_prompt"], tw["cf_rejected"])
    return r_c, r_r, cf_c, cf_r


# ---------------------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------------------
def _history(model_dir: Path, log_history: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """history.jsonl rows from TRL's log (``trainer_state.json``'s ``log_history`` or the trainer's)."""
    if log_history is None:
        st = model_dir / "trainer_state.json"
        log_history = json.loads(st.read_text()).get("log_history", []) if st.exists() else []
    rows = []
    for h in log_history:
        if "loss" not in h or "step" not in h:
            continue
        row: dict[str, Any] = {"step": int(h["step"]), "epoch": h.get("epoch"), "loss": h["loss"]}
        viol = {k[len("faro/violation_"):]: v for k, v in h.items() if k.startswith("faro/violation_")}
        if viol:
            row["violation"] = viol
        if "faro/lambda_max" in h:
            row["lambda_max"] = h["faro/lambda_max"]
        rows.append(row)
    return rows


def import_run(model_dir: str | Path, eval_data: str, runs_dir: str | Path | None = None, run_id: str | None = None,
               format: str | None = None, split_column: str | None = None, split: str | None = None,
               train_data: str | None = None, train_format: str | None = None, text: str | None = None,
               max_length: int | None = None, columns: dict[str, Any] | None = None,
               constraints: list[str] | None = None, epsilon: float | None = None, n_boot: int = 200,
               seed: int = 0) -> Any:
    """Import the reward model in ``model_dir`` into the run store as a finished run evaluated on ``eval_data``
    (see the module docstring); returns the :class:`~faro_core.store.runs.Run`."""
    from faro_core.data import load
    from faro_core.store.runs import RunStore

    model_dir = Path(model_dir)
    check_reward_model(model_dir)
    record = read_record(model_dir)
    cols = columns_of(record, columns or {})
    kinds = _kinds(record, constraints)
    text = text or (record or {}).get("text")
    if text not in TEXT_MODES:
        raise FaroError(f"say how the model reads a (prompt, response): --text concat (TRL's default: prompt + "
                        f"response as one sequence) or --text pair (a sentence pair, as faro train); got {text!r}")
    settings = (record or {}).get("settings") or {}
    max_length = int(max_length or settings.get("max_length") or 512)
    if run_id is not None and RunStore(runs_dir).has(run_id):
        raise FaroError(f"run {run_id!r} already exists in {RunStore(runs_dir).root}")
    data, df, strata_cols = eval_frame(eval_data, cols, kinds, format=format, split_column=split_column, split=split)
    train = load(train_data, format=train_format).df if train_data is not None else None
    disjoint = check_disjoint(df, record, train, str(eval_data))
    rewards = score_frame(model_dir, df, text, max_length)
    source = {"data": str(eval_data), "format": format, "split_column": split_column, "split": split,
              "train_data": train_data}
    return write_run(model_dir, record, cols, kinds, epsilon, data.name, data.meta, df, strata_cols, rewards,
                     text, max_length, disjoint, source, runs_dir=runs_dir, run_id=run_id, n_boot=n_boot, seed=seed)


def _kinds(record: dict[str, Any] | None, constraints: list[str] | None) -> list[str]:
    kinds = list(constraints if constraints is not None else (record or {}).get("kinds") or [])
    bad = [k for k in kinds if k not in ("dp", "eo", "cf")]
    if bad:
        raise FaroError(f"unknown constraint kind(s) {bad}; choose from dp, eo, cf")
    return kinds


def write_run(model_dir: str | Path, record: dict[str, Any] | None, cols: dict[str, Any], kinds: list[str],
              epsilon: float | None, data_name: str, data_meta: dict[str, Any], df: pd.DataFrame,
              strata_cols: list[str], rewards: tuple[np.ndarray, ...], text: str | None, max_length: int,
              disjoint: dict[str, Any], source: dict[str, Any], runs_dir: str | Path | None = None,
              run_id: str | None = None, n_boot: int = 200, seed: int = 0,
              log_history: list[dict[str, Any]] | None = None) -> Any:
    """Write the run of a scored evaluation frame (Faro's column names; ``rewards`` [N] each): every file of the
    module docstring, then ``faro eval`` and ``faro certify``. Removes the run directory if anything fails."""
    import torch

    from faro_core.evaluate.certify import certify_run
    from faro_core.evaluate.metrics import evaluate_run
    from faro_core.fairness.constraint_set import ConstraintSet, all_constraints
    from faro_core.fairness.pairs import GroupIndex, PairTensors, dp_strata_in_scope, stratum_labels
    from faro_core.io import write_text
    from faro_core.models.reward import load_sequence_classifier
    from faro_core.store.runs import RunStore
    from faro_core.train.config import FaroConfig
    from faro_core.train.outputs import role_metrics, split_metrics_of, write_scores

    model_dir = Path(model_dir)
    settings = (record or {}).get("settings") or {}
    eps = float(epsilon if epsilon is not None else (record or {}).get("eps", 0.05 if kinds else math.inf))
    for c in ("prompt", "chosen", "rejected", "cf_prompt", "cf_chosen", "cf_rejected"):
        if c not in df:
            df[c] = None
    df = df.assign(split="test")
    df["stratum"] = stratum_labels(df, strata_cols).to_numpy()
    resp = sorted(set(df["chosen_group"].dropna()) | set(df["rejected_group"].dropna()))
    index = GroupIndex(response_groups=resp, pair_groups=sorted(set(df["group"].dropna())),
                       strata=sorted(df["stratum"].unique()),
                       dp_strata=dp_strata_in_scope(df, strata_cols, settings.get("dp_scope")),
                       dp_partner=bool(settings.get("dp_partner", True)), attribute=cols["attribute"])
    min_count = int(settings.get("min_count", 30))
    tens = PairTensors.from_frame(df, index)
    cons = ConstraintSet.parse(kinds if math.isfinite(eps) else [], eps, index, min_count)
    idx = torch.arange(len(df))
    test = split_metrics_of(df, tens, idx, rewards, cons, all_constraints(index, min_count))
    test.update(role_metrics(df, tens, idx, rewards, index, min_count))  # {} unless the attribute is per item

    cfg = FaroConfig(name=f"trl-{'-'.join(kinds) or 'bt'}", data=source.get("data"), format=source.get("format"),
                     attribute=cols["attribute"], role_columns=cols["role_columns"], group=cols["attribute_column"],
                     strata=strata_cols, dp_scope=settings.get("dp_scope"),
                     dp_partner=bool(settings.get("dp_partner", True)), constraints=kinds, epsilon=eps,
                     min_count=min_count, method="faro" if kinds else "bt", mode="full",
                     backbone=str(model_dir.resolve()), max_length=max_length, lr=settings.get("learning_rate"),
                     batch_size=int(settings.get("per_device_train_batch_size", 8)),
                     dual_lr=float(settings.get("dual_lr", 0.1)), dual_every=settings.get("dual_every"),
                     lambda_max=settings.get("lambda_max", 0.3), dual_signal=settings.get("dual_signal", "auto"),
                     ema=float(settings.get("ema", 0.0)), seed=int(settings.get("seed", 0)), select="last")
    imported = {"kind": IMPORT_KIND, "model_dir": str(model_dir.resolve()), "text": text,
                "columns": {**cols, "strata_columns": strata_cols},
                "eval": {**source, "cluster_column": "item_id", "pairs": int(len(df)),
                         "items": int(df["item_id"].nunique()) if "item_id" in df else None},
                "disjoint": disjoint, "faro_record": record is not None,
                "multipliers": (record or {}).get("lambda"), "steps": (record or {}).get("step"),
                "imported_at": time.time()}
    run = RunStore(runs_dir).create({**cfg.stored_dict(), "imported": imported}, run_id=run_id or None)
    try:
        run.set_status("running")
        run.write("constraints.json", {"names": cons.names(), "epsilon": cons.epsilons().tolist(),
                                       "index": index.to_dict(), "imported": True})
        run.write("data.json", {"name": data_name, "meta": data_meta, "strata": strata_cols,
                                "pairs": {"train": 0, "val": 0, "test": int(len(df))},
                                "groups": sorted(map(str, df["group"].dropna().unique())), "response_groups": resp})
        write_scores(run, df, tens, rewards)
        tok, model = load_sequence_classifier(str(model_dir), "cpu")
        model.save_pretrained(run.file("hf_model"), safe_serialization=True)
        tok.save_pretrained(run.file("hf_model"))
        run.write("model.json", {"mode": "full", "backbone": str(model_dir.resolve()), "max_length": max_length,
                                 "text": text or "pair", "imported": IMPORT_KIND})
        hist = _history(model_dir, log_history)
        write_text(run.file("history.jsonl"), "".join(json.dumps(h) + "\n" for h in hist))
        run.write("metrics.json", {**test, "split": "test", "test": test, "train": {},
                                   "steps": (record or {}).get("step"), "selected_by": "last (imported from TRL)",
                                   "constraints": kinds, "epsilon": eps if math.isfinite(eps) else None,
                                   "method": cfg.method, "imported": True})
        evaluate_run(run, n_boot=n_boot, seed=seed)
        certify_run(run)
        run.set_status("done")
    except BaseException:
        shutil.rmtree(run.path, ignore_errors=True)
        raise
    return run


def is_imported(config: dict[str, Any]) -> bool:
    """True for a run that ``faro import`` (or ``FairRewardConfig(faro_runs_dir=...)``) made."""
    return isinstance(config.get("imported"), dict) and config["imported"].get("kind") == IMPORT_KIND


def imported_note(run: Any) -> str:
    """What the Overview says about an imported run that has no BT counterpart: what it can show, and how to train
    the counterpart."""
    cfg = run.config
    m = run.metrics() or {}
    cert = run.read("certificate.json") or {}
    viol = ", ".join(f"{k.upper()} {v:.3f}" for k, v in (m.get("violation") or {}).items() if v is not None)
    cols = cfg["imported"].get("columns") or {}
    attr = f"--attribute {cols['attribute']} " if cols.get("attribute") else ""
    acc = f"{m['accuracy']:.3f}" if m.get("accuracy") is not None else "n/a"
    return (f"Run `{run.run_id}` was imported from TRL: it has no BT counterpart trained on the same data, so there "
            f"is no before/after story. What it shows: held-out accuracy {acc}, violations {viol or 'n/a'} on "
            f"{m.get('pairs')} pairs, {'certified' if cert.get('certified') else 'not certified'} at "
            f"ε = {cert.get('epsilon')} (Groups and Report pages show it in full). To compare, train a BT reward on "
            f"its training data: `faro train --data TRAIN_DATA {attr}--constraint none --mode full --backbone "
            f"BASE_MODEL` (or the Train page), or train one with TRL's RewardTrainer and `faro import` it.")
