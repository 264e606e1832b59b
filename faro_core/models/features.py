"""Frozen-backbone features, cached on disk (head mode, DESIGN §3).

A response is encoded as the sentence pair (prompt, response), mean-pooled over tokens and L2-normalized
(how all-MiniLM-L6-v2 was trained). Features are stored as safetensors shards under
``<cache_dir>/features/<backbone key>/``, keyed by the SHA-1 of (max_length, prompt, response), so a second
run on the same data reads instead of encoding. Only safetensors are written or read.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from faro_core.errors import FaroError
from faro_core.io import write_safetensors
from faro_core.models.shipped import shipped_features
from faro_core.models.threads import encoding_threads
from faro_core.paths import cache_dir, embedded_encoder, embedded_identity

_LOCK = threading.Lock()


def resolve_backbone(backbone: str | None) -> str:
    """``None``/``"embedded"``/``"minilm"`` -> the embedded MiniLM path; anything else as given."""
    if backbone in (None, "", "embedded", "minilm", "default"):
        return embedded_encoder()
    return str(backbone)


def backbone_key(backbone: str) -> str:
    """A stable cache key for a backbone: hub id or local path, hashed. The embedded encoder is keyed by
    its package and version instead of its install path (:func:`faro_core.paths.embedded_identity`), so
    a cache built elsewhere (the demo's shipped features) matches."""
    embedded = embedded_identity(backbone) if os.path.isdir(backbone) else None
    if embedded is not None:
        return f"embedded-minilm-{hashlib.sha1(embedded.encode()).hexdigest()[:10]}"
    name = Path(backbone).name if os.path.isdir(backbone) else backbone.replace("/", "--")
    return f"{name[:40]}-{hashlib.sha1(backbone.encode()).hexdigest()[:10]}"


def pair_text(prompt: str, response: str) -> tuple[str, str]:
    """What the encoder reads for one response: the sentence pair (prompt, response)."""
    return prompt, response


def text_key(prompt: str, response: str, max_length: int) -> bytes:
    h = hashlib.sha1()
    h.update(str(max_length).encode())
    h.update(b"\x00")
    h.update(prompt.encode("utf-8", "surrogatepass"))
    h.update(b"\x00")
    h.update(response.encode("utf-8", "surrogatepass"))
    return h.digest()


def load_encoder(backbone: str, device: str | None = None):
    """(tokenizer, model) for a backbone id or path, on ``device``; offline-friendly errors."""
    from transformers import AutoModel, AutoTokenizer  # heavy: only when an encoder is loaded

    try:
        tok = AutoTokenizer.from_pretrained(backbone)
        model = AutoModel.from_pretrained(backbone)
    except OSError as exc:
        raise FaroError(f"cannot load backbone {backbone!r}: {str(exc).splitlines()[0]} "
                        "(no network? use the embedded default or a local path)") from exc
    model.eval()
    if device:
        model.to(device)
    return tok, model


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens. hidden [B, T, d], mask [B, T] -> [B, d]."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)


class FeatureCache:
    """Encode (prompt, response) pairs with a frozen backbone, caching features on disk.

    Parameters
    ----------
    backbone : hub id or local path (``None``: the embedded all-MiniLM-L6-v2).
    root : cache directory (default :func:`faro_core.paths.cache_dir`).
    max_length : tokens per (prompt, response) pair; longer pairs are truncated from the prompt side first.
    batch_size : encoding batch size.
    threads : CPU threads of the encoder's passes (default :func:`~faro_core.models.threads.torch_threads`,
        the idle cores); the caller's thread count is restored after each pass, so a head-mode trainer's
        one-thread steps are unaffected.
    """

    def __init__(self, backbone: str | None = None, root: str | Path | None = None, max_length: int = 256,
                 batch_size: int = 64, device: str | None = None, progress: bool = True,
                 threads: int | None = None) -> None:
        self.backbone = resolve_backbone(backbone)
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.progress = progress
        self.threads = threads
        self.dir = Path(root or cache_dir()) / "features" / backbone_key(self.backbone)
        self._index: dict[bytes, tuple[int, int]] = {}
        self._shards: list[np.ndarray] = []
        self._loaded: set[str] = set()
        self._model = None
        self._tok = None
        self.last_encoded = 0  # texts encoded (not read from cache) by the last call
        self._shipped_tried = False  # the shipped file is read on the first miss, not for every cache
        self._load_shards()

    # -- cache -----------------------------------------------------------------------------------
    def _load_shipped(self) -> None:
        """Features shipped with Faro's data for this backbone and max_length (verified; read-only), read on
        the first text the local cache lacks. They equal the encoder's output to float rounding (the encoder's own
        output moves by up to ~2e-7 with the batch a text is encoded in), so either source gives the same features
        to that precision."""
        for keys, feats in shipped_features(backbone_key(self.backbone), self.max_length):
            sid = len(self._shards)
            self._shards.append(feats)
            for i, k in enumerate(keys):
                self._index.setdefault(k.tobytes(), (sid, i))

    def _load_shards(self) -> None:
        """Read shards not read yet (other processes may have added some since)."""
        from safetensors.numpy import load_file

        if not self.dir.exists():
            return
        for p in sorted(self.dir.glob("shard-*.safetensors")):
            if p.name in self._loaded:
                continue
            try:
                t = load_file(str(p))
            except Exception:  # shards are written atomically; an unreadable one is skipped, not trusted
                continue
            self._loaded.add(p.name)
            keys, feats = t["keys"], t["features"]
            sid = len(self._shards)
            self._shards.append(feats)
            for i, k in enumerate(keys):
                self._index.setdefault(k.tobytes(), (sid, i))

    def _add_shard(self, keys: list[bytes], feats: np.ndarray) -> None:
        kb = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 20)
        name = f"shard-{os.getpid()}-{secrets.token_hex(4)}.safetensors"
        write_safetensors(self.dir / name, {"keys": torch.from_numpy(kb.copy()), "features": torch.from_numpy(feats)},
                          metadata={"backbone": self.backbone, "max_length": str(self.max_length)})
        self._loaded.add(name)
        sid = len(self._shards)
        self._shards.append(feats)
        for j, k in enumerate(keys):
            self._index[k] = (sid, j)

    def __len__(self) -> int:
        return len(self._index)

    @property
    def dim(self) -> int:
        if self._shards:
            return int(self._shards[0].shape[1])
        self._ensure_model()
        return int(self._model.config.hidden_size)

    def _ensure_model(self) -> None:
        if self._model is None:
            self._tok, self._model = load_encoder(self.backbone, self.device)

    # -- encoding --------------------------------------------------------------------------------
    @torch.no_grad()
    def _encode_uncached(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        self._ensure_model()
        order = np.argsort([len(p) + len(r) for p, r in zip(prompts, responses)])  # less padding
        out = np.zeros((len(prompts), self._model.config.hidden_size), dtype=np.float32)
        with encoding_threads(self.threads):  # every idle core; the caller's count is restored after
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                enc = self._tok([prompts[i] for i in idx], [responses[i] for i in idx], padding=True,
                                truncation="longest_first", max_length=self.max_length, return_tensors="pt")
                enc = {k: v.to(self.device) for k, v in enc.items()}
                hidden = self._model(**enc).last_hidden_state
                pooled = torch.nn.functional.normalize(mean_pool(hidden, enc["attention_mask"]), dim=-1)
                out[idx] = pooled.float().cpu().numpy()
        return out

    def encode(self, prompts: Sequence[str], responses: Sequence[str], flush_every: int = 2048) -> np.ndarray:
        """Features of each (prompt, response) pair. Returns float32 [n, d]; cached pairs are not recomputed.

        New features are written every ``flush_every`` pairs, so a killed run keeps what it encoded and
        concurrent runs on the same data share the work (each re-reads the shards before a chunk).
        """
        from tqdm.auto import tqdm

        assert len(prompts) == len(responses)
        keys = [text_key(p, r, self.max_length) for p, r in zip(prompts, responses)]
        with _LOCK:
            self._load_shards()
            if not self._shipped_tried and any(k not in self._index for k in keys):
                self._shipped_tried = True
                self._load_shipped()
            missing: dict[bytes, int] = {}
            for i, k in enumerate(keys):
                if k not in self._index and k not in missing:
                    missing[k] = i
            self.last_encoded = len(missing)
            todo = list(missing.items())
            bar = tqdm(total=len(todo), desc="encoding", unit="text", disable=not (self.progress and todo),
                       file=sys.stderr)
            for start in range(0, len(todo), flush_every):
                self._load_shards()
                chunk = [(k, i) for k, i in todo[start:start + flush_every] if k not in self._index]
                if chunk:
                    feats = self._encode_uncached([prompts[i] for _, i in chunk], [responses[i] for _, i in chunk])
                    self._add_shard([k for k, _ in chunk], feats)
                bar.update(len(todo[start:start + flush_every]))
            bar.close()
            if not keys:
                return np.zeros((0, self.dim), dtype=np.float32)
            return np.stack([self._shards[s][i] for s, i in (self._index[k] for k in keys)]).astype(np.float32)
