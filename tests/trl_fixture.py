"""What the TRL workflow tests share (tests/test_trl_workflow.py, tests/test_trl_agreement.py): a tiny reward
backbone built locally, TRL preference datasets of Faro's pairs, and the TRL settings that match
``faro train --mode full``.

The tiny backbone is a randomly initialised 2-layer DistilBERT (hidden size 32, no dropout) with the embedded
MiniLM's tokenizer, saved with its scalar head (``num_labels=1``) so that both trainers start from the same
weights; its tokenizer gives no ``token_type_ids`` (DistilBERT has no segment embedding), so a sentence pair
tokenized by Faro and the same ids handed to TRL read identically. No network, no hub.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

MAX_LEN = 64
# Faro's full-mode optimiser in TRL's words: Adam (= AdamW without weight decay), constant lr, no clipping, no
# warm-up; the tiny backbone has no dropout, so neither trainer draws random numbers after its data order
COMMON: dict[str, Any] = dict(lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0,
                              disable_dropout=False, bf16=False, activation_checkpointing=False, use_cpu=True,
                              report_to=[], logging_steps=1, disable_tqdm=True, seed=0, data_seed=0,
                              max_length=None, dataloader_num_workers=0, warmup_steps=0)


def tiny_backbone(folder: Path, dropout: float = 0.0) -> str:
    """Save the tiny reward backbone (model with its head, tokenizer) under ``folder``; returns its path.
    ``dropout``: of every layer (0: the trainers draw no random numbers after their data order)."""
    import torch
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForSequenceClassification

    from faro_core.paths import embedded_encoder

    folder = Path(folder)
    if (folder / "config.json").exists():
        return str(folder)
    tok = AutoTokenizer.from_pretrained(embedded_encoder(), model_input_names=["input_ids", "attention_mask"])
    cfg = DistilBertConfig(vocab_size=tok.vocab_size, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                           max_position_embeddings=128, dropout=dropout, attention_dropout=dropout,
                           seq_classif_dropout=dropout,
                           num_labels=1, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = DistilBertForSequenceClassification(cfg)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return str(folder)


def preference_dataset(df: pd.DataFrame, tok: Any, extra: tuple[str, ...] = ()) -> Any:
    """A TRL preference dataset of Faro's pairs, pre-tokenized the way ``faro train --mode full`` encodes them
    (the sentence pair (prompt, response), truncated to :data:`MAX_LEN`), with the columns a user would name."""
    from datasets import Dataset

    def ids(prompts: Any, responses: Any) -> list[list[int]]:
        return [tok(p, r, truncation="longest_first", max_length=MAX_LEN)["input_ids"]
                for p, r in zip(prompts, responses)]

    cols = ["chosen_group", "rejected_group", "group", "gold", "pair_id", "item_id", "question_polarity",
            "context_condition", *extra]
    return Dataset.from_dict({"chosen_ids": ids(df["prompt"], df["chosen"]),
                              "rejected_ids": ids(df["prompt"], df["rejected"]),
                              **{c: [None if pd.isna(v) else v for v in df[c]] for c in cols if c in df}})


def role_pairs(n_items: int = 48) -> pd.DataFrame:
    """The first ``n_items`` items of each split of the embedded demo, BBQ format, with role columns (training
    frame of ``faro train --attribute role``: ``split``, ``chosen_role`` / ``rejected_role``, ``item_id``)."""
    from faro_core.train import FaroConfig
    from faro_core.train.inputs import load_training_data

    _, df, _ = load_training_data(FaroConfig(groups=["old"], attribute="role"))
    keep = []
    for _, part in df.groupby("split", sort=False):
        items = list(dict.fromkeys(part["item_id"]))[:n_items]
        keep.append(part[part["item_id"].isin(items)])
    return pd.concat(keep, ignore_index=True)
