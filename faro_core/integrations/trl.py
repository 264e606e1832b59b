"""Faro as a drop-in for TRL's reward trainer, and Faro rewards for TRL's online trainers.

A TRL reward script becomes a Faro script by changing two class names and naming the dataset's group columns::

    config = FairRewardConfig(output_dir="rm", constraints=["dp"], epsilon=0.05,
                              chosen_group_column="chosen_group", rejected_group_column="rejected_group",
                              strata_columns=["context_condition"])
    trainer = FairRewardTrainer(model=model, args=config, train_dataset=ds, processing_class=tok)
    trainer.train()

:class:`FairRewardTrainer` is TRL's ``RewardTrainer``; with constraints it adds, inside its hooks:

- ``compute_loss``: TRL's Bradley-Terry loss (``RewardTrainer.compute_loss``, unchanged) plus ProxyGDA's
  linearized constraint penalty ``(N/B) sum_i coef_i phi_i - sum_j lambda_j eps_j`` on the batch's rewards
  (:meth:`faro_core.train.proxy_gda.ProxyGDA.penalty`; twins scored too when CF is on), and each pair's latest
  rewards into a buffer;
- the step hook (a ``TrainerCallback.on_step_end``): every ``dual_every`` optimizer steps, the dual ascent step
  ``lambda <- clip(lambda + dual_lr (g - eps), 0, lambda_max)`` on the buffer's cell statistics over the training
  split (:meth:`ProxyGDA.dual_step`), as ``faro train --mode full`` does;
- logging: ``faro/penalty``, ``faro/lambda_max`` and per kind ``faro/violation_<kind>`` (largest strict
  one-sided violation at the last dual step) and ``faro/lambda_max_<kind>`` go through the Trainer's own log, so
  TensorBoard, W&B and ``trainer.state.log_history`` show them.

With no constraint (or ``epsilon = inf``) nothing is added: it is TRL's ``RewardTrainer`` exactly (same loss,
same batches, same weights). The saved model is TRL's (``AutoModelForSequenceClassification``, ``num_labels=1``);
``faro_dual.json`` beside it holds the constraint names, multipliers and last violations.

Dataset columns (names configurable): ``chosen_group`` / ``rejected_group`` (the group each response names,
None for none: DP), ``group`` (the pair's sensitive attribute: EO, CF), ``strata_columns`` (conditioning cells),
``gold`` (EO's true label: 1.0 if the chosen response is truly better; absent: the observed label), ``pair_id``
(EO's fixed presentation order; absent: the row number), and for CF the twins ``cf_prompt`` / ``cf_chosen`` /
``cf_rejected`` (or pre-tokenized ``cf_chosen_ids`` / ``cf_rejected_ids``), preprocessed exactly as TRL
preprocesses ``prompt`` / ``chosen`` / ``rejected``.

:func:`reward_function` turns a run or an exported directory into the callable TRL's GRPO and RLOO trainers
take as a reward function: ``f(prompts=..., completions=..., **kwargs) -> list[float]``.
"""

from __future__ import annotations

import json
import math
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import TrainerCallback
from trl import RewardConfig, RewardTrainer

from faro_core.errors import FaroError
from faro_core.fairness.attributes import attribute_names, attribute_strategy
from faro_core.train.config import FaroConfig, check_value, default_of

DUAL_FILE = "faro_dual.json"  # constraint names, multipliers, index, columns: beside every saved model
STATE_FILE = "faro_state.safetensors"  # the dual state a resumed run continues from
INDEX_COL = "faro_pair_index"  # row of each training pair in the trainer's attribute tensors
TWIN_KEY = "faro_twins"


def faro_trl_fields() -> list[tuple[str, Any, Any, str]]:
    """(name, type, dataclass field, FaroConfig setting) of every :class:`~faro_core.train.config.FaroConfig`
    setting classified ``trl``: its TRL-facing ``name`` (default: the setting's), its help, and its default --
    the classified ``default``, else the setting's, a mode-dependent one as in full mode (TRL fine-tunes the
    backbone). The type admits None only where None means something to the trainer (a None default, or a
    ``none_word`` such as ``lambda_max=None``: no cap)."""
    hints = typing.get_type_hints(FaroConfig)
    out = []
    for f in fields(FaroConfig):
        trl = f.metadata["trl"]
        if trl is None:
            continue
        default = trl.get("default", default_of(f.name, mode="full"))
        tp = hints[f.name]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if default is not None and not f.metadata.get("none_word") and len(args) == 1 and args != [tp]:
            tp = args[0]  # an optional type whose None the trainer has no meaning for: required
        md = {"help": trl.get("help", f.metadata["help"])}  # HfArgumentParser passes metadata to argparse
        fld = field(default_factory=list, metadata=md) if default == [] else field(default=default, metadata=md)
        out.append((trl.get("name", f.name), tp, fld, f.name))
    return out


FARO_SETTINGS: dict[str, str] = {}  # FairRewardConfig field -> the FaroConfig setting it is generated from


def _with_faro_settings(cls: type) -> type:
    """``cls`` as a dataclass, with :func:`faro_trl_fields` added after its own fields."""
    for name, tp, fld, setting in faro_trl_fields():
        cls.__annotations__[name] = tp
        setattr(cls, name, fld)
        FARO_SETTINGS[name] = setting
    return dataclass(cls)


@_with_faro_settings
class FairRewardConfig(RewardConfig):
    """TRL's ``RewardConfig`` plus the fairness constraints, the dataset's group columns and the dual settings.

    The Faro settings are generated from :class:`~faro_core.train.config.FaroConfig` (each field classified
    ``trl``; :func:`faro_trl_fields`), with the same help and range checks: ``constraints`` (kinds among
    ``dp``, ``eo``, ``cf``; empty: plain TRL), ``epsilon`` (slack of every one-sided constraint), ``min_count``,
    ``attribute`` / ``role_columns``, ``attribute_column`` (FaroConfig's ``group``), ``strata_columns``
    (``strata``), ``dp_scope``, ``dp_partner`` and the dual player's ``dual_lr``, ``dual_every``,
    ``lambda_max``, ``dual_signal``, ``ema``. Declared here: the dataset's other column names and the run store.
    """

    chosen_group_column: str = field(default="chosen_group", metadata={"help": "group the chosen response names"})
    rejected_group_column: str = field(default="rejected_group",
                                       metadata={"help": "group the rejected response names"})
    item_column: str = field(default="item_id", metadata={"help": "the item (question) a pair belongs to (role)"})
    faro_runs_dir: str | None = field(default=None, metadata={
        "help": "after training, write the model as a Faro run into this run store (scored on eval_dataset)"})
    faro_run_id: str | None = field(default=None, metadata={"help": "id of that run (default: trl-<kinds>-<time>)"})
    label_column: str | None = field(default="gold", metadata={"help": "EO's true label (1.0: chosen is better)"})
    pair_id_column: str | None = field(default="pair_id", metadata={"help": "stable pair id (EO's order bit)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        hints = typing.get_type_hints(type(self))
        unset = [n for n in FARO_SETTINGS if getattr(self, n) is None and type(None) not in typing.get_args(hints[n])]
        if unset:
            raise FaroError(f"{unset[0]} must be set (FairRewardConfig), got None")
        if isinstance(self.constraints, str):
            self.constraints = [c for c in self.constraints.split(",")]
        self.constraints = [c.strip().lower() for c in self.constraints if c.strip() and c.strip() != "none"]
        bad = [c for c in self.constraints if c not in ("dp", "eo", "cf")]
        if bad:
            raise FaroError(f"unknown constraint kind(s) {bad}; choose from dp, eo, cf")
        if not self.epsilon >= 0:
            raise FaroError(f"epsilon must be >= 0 (or inf), got {self.epsilon}")
        if self.dual_every < 1:
            raise FaroError(f"dual_every must be >= 1, got {self.dual_every}")
        if self.attribute not in attribute_names():
            raise FaroError(f"attribute must be one of {', '.join(attribute_names())}, got {self.attribute!r}")
        if isinstance(self.role_columns, str):
            self.role_columns = [c.strip() for c in self.role_columns.split(",") if c.strip()]
        if self.role_columns is not None and len(self.role_columns) != 2:
            raise FaroError(f"role_columns takes two columns (the chosen and the rejected response's role), got "
                            f"{self.role_columns}")
        if isinstance(self.strata_columns, str):
            self.strata_columns = [c.strip() for c in self.strata_columns.split(",") if c.strip()]
        for name, setting in FARO_SETTINGS.items():  # the generated Faro settings: FaroConfig's checks
            setattr(self, name, check_value(setting, getattr(self, name)))


class _DualStep(TrainerCallback):
    """The dual player's step hook: after every ``dual_every``-th optimizer step."""

    def __init__(self, trainer: FairRewardTrainer) -> None:
        self.trainer = trainer

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer._faro_micro = 0
        if state.global_step % self.trainer.args.dual_every == 0:
            self.trainer.dual_step()


class _WithPairIndex:
    """Wraps the preference collator: adds each example's pair index (and, for CF, its padded twins)."""

    def __init__(self, base: Any, twins: dict[int, tuple[list[int], list[int]]] | None, pad_id: int) -> None:
        self.base, self.twins, self.pad_id = base, twins, pad_id

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        idx = [e.pop(INDEX_COL) for e in examples if INDEX_COL in e]
        out = self.base(examples)
        if len(idx) == len(examples) and idx:
            out[INDEX_COL] = torch.tensor(idx, dtype=torch.long)
            if self.twins is not None:
                pos = [j for j, i in enumerate(idx) if i in self.twins]
                if pos:
                    seqs = [self.twins[idx[j]][0] for j in pos] + [self.twins[idx[j]][1] for j in pos]
                    width = max(len(s) for s in seqs)
                    ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
                    mask = torch.zeros((len(seqs), width), dtype=torch.long)
                    for k, s in enumerate(seqs):
                        ids[k, :len(s)] = torch.tensor(s, dtype=torch.long)
                        mask[k, :len(s)] = 1
                    out[TWIN_KEY] = {"input_ids": ids, "attention_mask": mask, "pos": torch.tensor(pos)}
        return out


class FairRewardTrainer(RewardTrainer):
    """TRL's ``RewardTrainer`` with Faro's constraints (see the module docstring). Same arguments as
    ``RewardTrainer``; ``args`` is a :class:`FairRewardConfig` (a plain ``RewardConfig`` means no constraint)."""

    def __init__(self, model: Any, args: RewardConfig | None = None, train_dataset: Any = None, **kwargs: Any):
        from datasets import Dataset

        self._faro_on = (isinstance(args, FairRewardConfig) and bool(args.constraints)
                         and math.isfinite(float(args.epsilon)))
        frame = None
        self._faro_text: str | None = None
        if isinstance(args, FairRewardConfig) and train_dataset is not None and hasattr(train_dataset, "column_names"):
            cols = set(train_dataset.column_names or [])
            # how TRL read the text: its own preprocessing of prompt/chosen/rejected strings (pre-tokenized ids or
            # conversations: unknown here, faro import asks)
            if "chosen_ids" not in cols and "chosen" in cols and len(train_dataset) and \
                    isinstance(train_dataset[0]["chosen"], str):
                self._faro_text = "concat"
            if not self._faro_on:  # no constraint: TRL's trainer as is; the record still names the training pairs
                n = len(train_dataset)
                self.pair_ids = ([str(v) for v in train_dataset[args.pair_id_column]] if args.pair_id_column in cols
                                 else [str(i) for i in range(n)])
                self.item_ids = [str(v) for v in train_dataset[args.item_column]] if args.item_column in cols else None
                self.strata_cols = self._strata(args, cols)
                self.train_idx = torch.arange(n)
            if args.faro_runs_dir and kwargs.get("eval_dataset") is None:
                raise FaroError("faro_runs_dir needs an eval_dataset: the held-out pairs (with the group columns) "
                                "the run is evaluated and certified on")
        self._faro_raw_twins: dict[str, list[Any]] | None = None
        if self._faro_on:
            if not isinstance(train_dataset, Dataset):
                raise FaroError("FairRewardTrainer with constraints needs a datasets.Dataset (the constraint "
                                "cells are counted over the whole training split; an IterableDataset has no end)")
            frame = self._group_frame(train_dataset, args)
            if "cf" in args.constraints:
                self._faro_raw_twins = self._raw_twins(train_dataset)
            train_dataset = train_dataset.add_column(INDEX_COL, list(range(len(train_dataset))))
        super().__init__(model, args=args, train_dataset=train_dataset, **kwargs)
        if self._faro_on:
            self._faro_setup(frame)

    # -- set-up ------------------------------------------------------------------------------------------
    @staticmethod
    def _strata(args: FairRewardConfig, cols: set[str]) -> list[str]:
        """The conditioning columns: as named; when none are named, ``context_condition`` for the role
        attribute where the dataset has it (as ``faro train --attribute role``: DP(role) on the ambiguous
        items, EO(role) on the disambiguated ones; :meth:`~faro_core.fairness.attributes.Attribute.default_strata`),
        else none."""
        if args.strata_columns is not None:
            return list(args.strata_columns)
        return attribute_strategy(args.attribute).default_strata(sorted(cols)) or []

    @staticmethod
    def _group_frame(ds: Any, args: FairRewardConfig) -> pd.DataFrame:
        """The pairs' attributes under Faro's column names (see the module docstring)."""
        cols = set(ds.column_names)
        strata_cols = FairRewardTrainer._strata(args, cols)
        attribute = attribute_strategy(args.attribute)
        named = {"chosen_group": args.chosen_group_column, "rejected_group": args.rejected_group_column,
                 "group": args.attribute_column, "item_id": args.item_column}
        need = {k: [named[c] for c in attribute.frame_columns(k)] for k in args.constraints}
        missing = sorted({c for k in args.constraints for c in need[k] if c not in cols}
                         | {c for c in strata_cols if c not in cols})
        if missing:
            raise FaroError(f"the training dataset has no column(s) {missing} (columns: {sorted(cols)}); name the "
                            "group columns in FairRewardConfig")
        n = len(ds)

        def col(name: str | None) -> list[Any]:
            return list(ds[name]) if name and name in cols else [None] * n

        df = pd.DataFrame({
            "chosen_group": col(args.chosen_group_column), "rejected_group": col(args.rejected_group_column),
            "group": col(args.attribute_column),
            "gold": pd.to_numeric(pd.Series(col(args.label_column)), errors="coerce"),
            "pair_id": [str(p) for p in col(args.pair_id_column)] if args.pair_id_column in cols
            else [str(i) for i in range(n)],
        })
        for c in strata_cols:
            df[c] = col(c)
        if args.item_column in cols:
            df["item_id"] = [str(v) for v in col(args.item_column)]
        if attribute.prepared_columns:  # the response-level attribute's columns (role: chosen_role, rejected_role)
            src = [c for c in attribute.source_columns(args.role_columns) if c in cols]
            prepared = attribute.prepare(pd.DataFrame({c: col(c) for c in src}), args.role_columns,
                                         name="the training dataset")
            for c in attribute.prepared_columns:
                df[c] = prepared[c].to_numpy()
        has_twin_text = {"cf_chosen", "cf_rejected"} <= cols
        has_twin_ids = {"cf_chosen_ids", "cf_rejected_ids"} <= cols
        if "cf" in args.constraints and not (has_twin_text or has_twin_ids):
            raise FaroError("the CF constraint needs counterfactual twins: columns cf_chosen and cf_rejected "
                            "(with cf_prompt), or cf_chosen_ids and cf_rejected_ids")
        if has_twin_ids:
            ok = [a is not None and b is not None for a, b in zip(ds["cf_chosen_ids"], ds["cf_rejected_ids"])]
        elif has_twin_text:
            ok = [a is not None and b is not None for a, b in zip(ds["cf_chosen"], ds["cf_rejected"])]
        else:
            ok = [False] * n
        df["cf_chosen"] = np.where(ok, "x", None)
        df["cf_rejected"] = np.where(ok, "x", None)
        df.attrs["strata_cols"] = strata_cols
        return df

    def _faro_setup(self, df: pd.DataFrame) -> None:
        from faro_core.fairness.constraint_set import ConstraintSet
        from faro_core.fairness.pairs import GroupIndex, PairTensors, dp_strata_in_scope, stratum_labels
        from faro_core.fairness.role_constraint import ITEM_TERMS
        from faro_core.train.backends import all_reduce_sum
        from faro_core.train.proxy_gda import ProxyGDA
        from faro_core.train.role_batches import RoleItemBatches

        args = self.args
        strata_cols = list(df.attrs["strata_cols"])
        self.strata_cols = strata_cols
        df["stratum"] = stratum_labels(df, strata_cols).to_numpy()
        resp = sorted(set(df["chosen_group"].dropna()) | set(df["rejected_group"].dropna()))
        index = GroupIndex(response_groups=resp, pair_groups=sorted(set(df["group"].dropna())),
                           strata=sorted(df["stratum"].unique()),
                           dp_strata=dp_strata_in_scope(df, strata_cols, args.dp_scope), dp_partner=args.dp_partner,
                           attribute=args.attribute)
        self.group_index = index
        self.constraint_set = ConstraintSet.parse(args.constraints, float(args.epsilon), index, args.min_count)
        empty = [c.kind for c in self.constraint_set.constraints if not c.names()]
        if empty:
            raise FaroError(f"constraint(s) {empty} have nothing to compare: no groups in the named columns "
                            f"(DP: {args.chosen_group_column}/{args.rejected_group_column}, EO/CF: "
                            f"{args.attribute_column}) or no twins (CF)")
        self.pair_tensors = PairTensors.from_frame(df, index)
        self.pair_ids = list(df["pair_id"])
        self.item_ids = list(df["item_id"]) if "item_id" in df else None
        n = len(df)
        # the pairs TRL kept (it drops pairs longer than max_length): the training split of the constraints
        self.train_idx = torch.as_tensor(np.asarray(self.train_dataset[INDEX_COL], dtype=np.int64))
        zero = torch.zeros(n)
        twin_or_nan = torch.where(self.pair_tensors.has_twin, 0.0, float("nan"))
        tr = self.train_idx
        self.cell_counts = self.constraint_set.fix_cells(
            self.pair_tensors.batch(tr, (zero[tr], zero[tr], twin_or_nan[tr], twin_or_nan[tr])))
        self.gda = ProxyGDA(self.constraint_set, dual_lr=args.dual_lr, ema=args.ema, reduce=all_reduce_sum,
                            dual_signal=args.dual_signal, lambda_max=args.lambda_max)
        self.gda.set_pairs(self.pair_tensors.batch(torch.arange(n), (zero, zero, twin_or_nan, twin_or_nan)), len(tr))
        self.buf = [torch.full((n,), float("nan")) for _ in range(4)]
        self.seen = torch.zeros(n, dtype=torch.bool)
        self.g_strict = torch.zeros(len(self.constraint_set))
        self.need_twins = "cf" in args.constraints
        # the role constraints' item terms need whole items: a batch of training items per step, as faro train
        role_cons = [c for c in self.constraint_set.constraints if c.term_key()[0] in ITEM_TERMS]
        self.role_batches = None
        self._faro_micro = 0
        if role_cons:
            bs = min(int(args.per_device_train_batch_size), len(tr))
            self.role_batches = RoleItemBatches(self.pair_tensors, tr, role_cons, n_items=bs, seed=args.seed)
            self._pair_ids_tok = dict(zip((int(i) for i in self.train_dataset[INDEX_COL]),
                                          zip(self.train_dataset["chosen_ids"], self.train_dataset["rejected_ids"])))
        twins = self._tokenized_twins() if self.need_twins else None
        self.data_collator = _WithPairIndex(self.data_collator, twins, self.processing_class.pad_token_id)
        self.add_callback(_DualStep(self))

    # -- the run store -----------------------------------------------------------------------------------
    def train(self, *a: Any, **kw: Any) -> Any:
        out = super().train(*a, **kw)
        if isinstance(self.args, FairRewardConfig) and self.args.faro_runs_dir and self.args.should_save:
            self.faro_run = self.to_run_store(self.args.faro_runs_dir, self.args.faro_run_id)
        return out

    def to_run_store(self, runs_dir: str | Path, run_id: str | None = None) -> Any:
        """Save the model and write it as a finished Faro run scored on ``eval_dataset`` (TRL's preprocessed ids,
        exactly what the model reads; :func:`faro_core.integrations.trl_import.write_run`). The evaluation pairs
        must be disjoint from the training pairs (pair and item ids). Returns the run."""
        from faro_core.integrations.trl_import import check_disjoint, columns_of, write_run

        if self.eval_dataset is None or isinstance(self.eval_dataset, dict):
            raise FaroError("the run store needs one eval_dataset (held-out pairs with the group columns)")
        out = Path(self.args.output_dir)
        self.save_model(str(out))
        record = json.loads((out / DUAL_FILE).read_text())
        ev = self.eval_dataset
        df = self._group_frame(ev, self.args)
        strata_cols = list(df.attrs["strata_cols"])
        df["cf_chosen"] = None
        df["cf_rejected"] = None
        if "item_id" not in df:  # the bootstrap's clusters: each pair its own without an item column
            df["item_id"] = df["pair_id"]
        disjoint = check_disjoint(df, record, None, "eval_dataset")
        rewards = self._score_ids(list(ev["chosen_ids"]), list(ev["rejected_ids"]))
        nan = np.full(len(df), np.nan, dtype=np.float32)
        cols = columns_of(record, {})
        return write_run(out, record, cols, list(self.args.constraints), float(self.args.epsilon), "eval_dataset",
                         {"source": "FairRewardTrainer eval_dataset"}, df, strata_cols, (*rewards, nan, nan),
                         self._faro_text, int(self.args.max_length or 512), disjoint,
                         {"data": "eval_dataset", "format": None, "split_column": None, "split": None,
                          "train_data": None}, runs_dir=runs_dir, run_id=run_id,
                         log_history=list(self.state.log_history))

    @torch.no_grad()
    def _score_ids(self, chosen: list[list[int]], rejected: list[list[int]], batch: int = 64
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Rewards of pre-tokenized pairs, padded as TRL's collator pads them."""
        model = self.model
        was = model.training
        model.eval()
        dev = next(model.parameters()).device
        base = self.data_collator.base if isinstance(self.data_collator, _WithPairIndex) else self.data_collator
        r_c, r_r = [], []
        for i in range(0, len(chosen), batch):
            enc = base([{"chosen_ids": c, "rejected_ids": r} for c, r in zip(chosen[i:i + batch], rejected[i:i + batch])])
            lg = model(input_ids=enc["input_ids"].to(dev), attention_mask=enc["attention_mask"].to(dev)).logits
            a, b = torch.chunk(lg.squeeze(-1).float().cpu(), chunks=2)
            r_c.append(a)
            r_r.append(b)
        model.train(was)
        return torch.cat(r_c).numpy(), torch.cat(r_r).numpy()

    @staticmethod
    def _raw_twins(ds: Any) -> dict[str, list[Any]]:
        """The twins of the pairs that have them, as a preference dataset's columns (with the pair index)."""
        cols = set(ds.column_names)
        if {"cf_chosen_ids", "cf_rejected_ids"} <= cols:
            names = {"chosen_ids": "cf_chosen_ids", "rejected_ids": "cf_rejected_ids"}
        else:
            names = {"chosen": "cf_chosen", "rejected": "cf_rejected"}
            if "cf_prompt" in cols:
                names["prompt"] = "cf_prompt"
        data = {k: list(ds[v]) for k, v in names.items()}
        keep = [i for i in range(len(ds)) if all(data[k][i] is not None for k in data)]
        return {INDEX_COL: keep, **{k: [v[i] for i in keep] for k, v in data.items()}}

    def _tokenized_twins(self) -> dict[int, tuple[list[int], list[int]]]:
        """Each pair's twins, preprocessed by TRL itself (``_prepare_dataset``: EOS, tokenization, length filter)."""
        from datasets import Dataset

        if not self._faro_raw_twins or not self._faro_raw_twins[INDEX_COL]:
            return {}
        twin = self._prepare_dataset(Dataset.from_dict(self._faro_raw_twins), self.processing_class, self.args,
                                     "twins")
        return {int(i): (c, r) for i, c, r in zip(twin[INDEX_COL], twin["chosen_ids"], twin["rejected_ids"])}

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if self._faro_on and INDEX_COL not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, INDEX_COL]

    # -- the hooks ---------------------------------------------------------------------------------------
    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        idx = inputs.pop(INDEX_COL, None)
        twins = inputs.pop(TWIN_KEY, None)
        if not self._faro_on or idx is None or not model.training:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        from faro_core.fairness.pairs import PairBatch

        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        r_c, r_r = (t.float() for t in torch.chunk(outputs.logits.squeeze(-1), chunks=2))
        cf_c = torch.full_like(r_c, float("nan"))
        cf_r = cf_c.clone()
        if twins is not None:
            pos = twins["pos"].to(r_c.device)
            tw = model(input_ids=twins["input_ids"].to(r_c.device),
                       attention_mask=twins["attention_mask"].to(r_c.device), use_cache=False).logits.squeeze(-1)
            cf_c = cf_c.index_put((pos,), tw[:len(pos)].float())
            cf_r = cf_r.index_put((pos,), tw[len(pos):].float())
        idx_dev = idx.to(r_c.device)
        penalty = self.gda.penalty(PairBatch(r_c, r_r, *([None] * 6), cf_c, cf_r), idx_dev)
        cpu_idx = idx.cpu()
        for k, r in enumerate((r_c, r_r, cf_c, cf_r)):
            self.buf[k][cpu_idx] = r.detach().float().cpu()
        self.seen[cpu_idx] = True
        if self.role_batches is not None:
            penalty = penalty + self._item_penalty(model)
        m = self._metrics["train"]
        m["faro/penalty"].append(float(penalty.detach()))
        m["faro/lambda_max"].append(float(self.gda.lam.max()) if len(self.gda.lam) else 0.0)
        lam = self.gda.lam
        for kind in sorted(set(self.constraint_set.kinds())):
            sel = torch.tensor([k == kind for k in self.constraint_set.kinds()])
            m[f"faro/lambda_max_{kind}"].append(float(lam[sel].max()))
            m[f"faro/violation_{kind}"].append(float(self.g_strict[sel].max()))
        loss = loss + penalty
        return (loss, outputs) if return_outputs else loss

    def _item_penalty(self, model: Any) -> torch.Tensor:
        """The role constraints' item terms on this step's batch of whole training items (drawn by
        :class:`~faro_core.train.role_batches.RoleItemBatches`, seeded by the step, so a resumed run replays it),
        scored in a forward of their own: :meth:`ProxyGDA.item_penalty`, as ``faro train`` adds it. Their
        rewards go into the buffer (chosen and rejected only: the role batch scores no twins)."""
        ga = max(1, int(self.args.gradient_accumulation_steps))
        ridx = self.role_batches.draw(int(self.state.global_step) * ga + self._faro_micro)
        self._faro_micro += 1
        if len(ridx) == 0:
            return torch.zeros(())
        ids = [self._pair_ids_tok[int(i)] for i in ridx.tolist()]
        enc = self.data_collator.base([{"chosen_ids": c, "rejected_ids": r} for c, r in ids])
        dev = next(model.parameters()).device
        out = model(input_ids=enc["input_ids"].to(dev), attention_mask=enc["attention_mask"].to(dev), use_cache=False)
        r_c, r_r = (t.float() for t in torch.chunk(out.logits.squeeze(-1), chunks=2))
        nan = torch.full_like(r_c, float("nan"))
        batch = self.pair_tensors.batch(ridx, (r_c, r_r, nan, nan))  # PairTensors moves to the rewards' device
        self.buf[0][ridx] = r_c.detach().cpu()
        self.buf[1][ridx] = r_r.detach().cpu()
        self.seen[ridx] = True
        return self.gda.item_penalty(batch, ridx, self.role_batches.factor)

    @torch.no_grad()
    def dual_step(self) -> torch.Tensor:
        """The dual ascent step on the buffer's rewards of the training pairs seen so far (all-reduced across
        processes). Returns the strict one-sided violations g [m]."""
        mine = self.train_idx[self.seen[self.train_idx]]
        if len(mine) == 0:
            return self.g_strict
        batch = self.pair_tensors.batch(mine, tuple(b[mine] for b in self.buf))
        self.g_strict = self.gda.dual_step(batch)
        return self.g_strict

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """TRL's model, plus (with constraints) ``faro_dual.json`` (constraint names, multipliers, last violations,
        the group index and the columns named) and ``faro_state.safetensors`` (what a resumed run needs to
        continue exactly: multipliers, the dual player's running statistics, the reward buffer). Called for
        every TRL checkpoint too, so each ``checkpoint-N`` carries the dual state of step N."""
        super().save_model(output_dir, _internal_call=_internal_call)
        if isinstance(self.args, FairRewardConfig) and self.args.should_save and hasattr(self, "train_idx"):
            from safetensors.torch import save_file

            out = Path(output_dir or self.args.output_dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / DUAL_FILE).write_text(json.dumps(self.faro_record(), indent=1) + "\n")
            if self._faro_on:
                save_file({k: v.contiguous() for k, v in self.faro_state().items()}, str(out / STATE_FILE))

    def faro_record(self) -> dict[str, Any]:
        """What ``faro_dual.json`` holds: enough for ``faro import`` to rebuild the run's constraints."""
        a = self.args
        if not self._faro_on:
            return {"constraints": [], "kinds": [], "text": self._faro_text, "epsilon": [], "eps": None,
                    "lambda": [], "violation": [], "index": None, "step": int(self.state.global_step),
                    **self._record_common()}
        return {"constraints": self.constraint_set.names(), "kinds": list(a.constraints), "text": self._faro_text,
                "epsilon": self.constraint_set.epsilons().tolist(), "eps": float(a.epsilon),
                "lambda": self.gda.lam.tolist(), "violation": self.g_strict.tolist(),
                "index": self.group_index.to_dict(), "step": int(self.state.global_step), **self._record_common()}

    def _record_common(self) -> dict[str, Any]:
        a = self.args
        return {"columns": {"attribute": a.attribute, "role_columns": a.role_columns, "item_column": a.item_column,
                            "chosen_group_column": a.chosen_group_column,
                            "rejected_group_column": a.rejected_group_column,
                            "attribute_column": a.attribute_column, "strata_columns": self.strata_cols,
                            "label_column": a.label_column, "pair_id_column": a.pair_id_column},
                "settings": {"min_count": a.min_count, "dual_lr": a.dual_lr, "dual_every": a.dual_every,
                             "lambda_max": a.lambda_max, "dual_signal": a.dual_signal, "ema": a.ema,
                             "dp_scope": a.dp_scope, "dp_partner": a.dp_partner, "seed": a.seed,
                             "learning_rate": a.learning_rate,
                             "per_device_train_batch_size": a.per_device_train_batch_size,
                             "max_length": a.max_length},
                # the training pairs' ids: faro import checks that evaluation data is disjoint from them
                "pair_ids_from": "column" if a.pair_id_column in self.train_dataset.column_names else "row",
                "train_pair_ids": [self.pair_ids[i] for i in self.train_idx.tolist()],
                "train_item_ids": ([self.item_ids[i] for i in self.train_idx.tolist()]
                                   if self.item_ids is not None else None)}

    def faro_state(self) -> dict[str, torch.Tensor]:
        """The constraint state of this step as tensors: ProxyGDA's (multipliers ``lam``, ``last_strict`` and
        the running cell statistics ``running.*``; plain projected ascent has no other optimiser state), the
        last strict violations ``g_strict`` and the reward buffer ``buf0..3`` / ``seen`` the dual step reads."""
        out = {f"gda.{k}": v.detach().cpu() for k, v in self.gda.state_tensors().items()}
        out.update({"g_strict": self.g_strict.detach().cpu(), "seen": self.seen.to(torch.uint8),
                    **{f"buf{k}": b.detach().cpu() for k, b in enumerate(self.buf)}})
        return out

    def load_faro_state(self, folder: str | Path) -> None:
        """Restore :meth:`faro_state` from a checkpoint folder (a :class:`FaroError` if it has none, or one of
        other constraints)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        path, rec = folder / STATE_FILE, folder / DUAL_FILE
        if not path.exists() or not rec.exists():
            raise FaroError(f"checkpoint {folder} has no {STATE_FILE}: it was not saved by a FairRewardTrainer with "
                            "constraints, so its multipliers cannot be restored")
        names = json.loads(rec.read_text()).get("constraints")
        if names != self.constraint_set.names():
            raise FaroError(f"checkpoint {folder} holds the dual state of other constraints ({len(names or [])} "
                            f"one-sided constraints, this run has {len(self.constraint_set.names())})")
        t = load_file(str(path))
        self.gda.load_state_tensors({k[len("gda."):]: v for k, v in t.items() if k.startswith("gda.")})
        self.g_strict = t["g_strict"].clone()
        self.seen = t["seen"].to(torch.bool)
        self.buf = [t[f"buf{k}"].clone() for k in range(4)]

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        if self._faro_on:
            self.load_faro_state(resume_from_checkpoint)


# ---------------------------------------------------------------------------------------------------------
# rewards for TRL's online trainers
# ---------------------------------------------------------------------------------------------------------
def _text(x: Any) -> str:
    """A prompt or completion as text: a string as is; a conversation (list of {"role", "content"}) as its
    contents joined by newlines."""
    if isinstance(x, str):
        return x
    if isinstance(x, dict):
        return str(x.get("content", ""))
    if isinstance(x, (list, tuple)):
        return "\n".join(_text(m) for m in x)
    return str(x)


class FaroReward:
    """A reward function for TRL's GRPO / RLOO trainers: ``f(prompts=..., completions=..., **kwargs)`` returns one
    float per (prompt, completion), the reward model's score of the sentence pair. Extra keyword arguments
    (``completion_ids``, ``trainer_state``, dataset columns) are ignored."""

    def __init__(self, scorer: Any, name: str) -> None:
        self.scorer = scorer
        self.__name__ = name

    def __call__(self, prompts: list[Any] | None = None, completions: list[Any] | None = None,
                 **kwargs: Any) -> list[float]:
        if prompts is None or completions is None:
            raise FaroError("a Faro reward needs prompts= and completions=")
        if len(prompts) != len(completions):
            raise FaroError(f"{len(prompts)} prompts but {len(completions)} completions")
        r = self.scorer.score([_text(p) for p in prompts], [_text(c) for c in completions])
        return [float(v) for v in np.asarray(r, dtype=np.float64)]


def reward_function(source: str | Path, runs_dir: str | Path | None = None, device: str | None = None) -> FaroReward:
    """A TRL reward function from a Faro run (id in ``runs_dir``, or the run's folder) or an exported directory
    (``faro export``: a sentence-transformers or transformers model; the reward of a (prompt, completion) is
    the score of the sentence pair, as Faro trained it).

    A post-processing baseline run's group shifts are not applied (a completion does not say which group it
    names).
    """
    from faro_core.integrations.export import EXPORT_META, ExportScorer

    path = Path(source)
    if path.is_dir() and (path / EXPORT_META).exists():
        return FaroReward(ExportScorer(path, device=device), f"faro_{path.name}")
    if path.is_dir() and (path / "config.json").exists():
        raise FaroError(f"{path} is a model directory but not a `faro export` (no {EXPORT_META}): a model trained by "
                        "TRL's or Faro's reward trainer on TRL's text format is scored as TRL scores it, so pass the "
                        "model itself as reward_funcs")
    from faro_core.models import load_scorer
    from faro_core.store.runs import Run, RunStore

    if path.is_dir() and (path / "model.json").exists():
        run = Run(path.name, path)
    else:
        run = RunStore(runs_dir).get(str(source))
    return FaroReward(load_scorer(run, device=device or "cpu"), f"faro_{run.run_id}")
