"""Checkpoints of a training run: model, optimizer, multipliers, RNG and the best iterate so far, in one
safetensors file named by step plus ``state.json`` (written last), so a kill between the two writes leaves
the previous pair intact. :func:`save_checkpoints` writes the checkpoints of several runs (a batch's members)
with two file-system syncs in all instead of two fsyncs per run, keeping that order on disk."""

from __future__ import annotations

from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from faro_core.io import joined_sync, one_sync, read_json, write_json, write_safetensors
from faro_core.store.runs import Run
from faro_core.train.proxy_gda import ProxyGDA


def _checkpoint_files(model: torch.nn.Module, opt: torch.optim.Optimizer, gda: ProxyGDA, state: dict[str, Any],
                      best_state: dict[str, torch.Tensor] | None, extra: dict[str, torch.Tensor] | None
                      ) -> tuple[str, dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors file name, tensors, state.json) of one checkpoint."""
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"extra.{k}": v for k, v in (extra or {}).items()})
    if best_state is not None:
        tensors.update({f"best.{k}": v for k, v in best_state.items()})
    tensors.update({f"gda.{k}": v for k, v in gda.state_tensors().items()})
    osd = opt.state_dict()
    for pid, st in osd["state"].items():
        for k, v in st.items():
            tensors[f"opt.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    tensors["rng"] = torch.get_rng_state()
    name = f"state-{int(state['step']):09d}.safetensors"
    return name, tensors, {**state, "tensors": name, "param_groups": osd["param_groups"]}


def _drop_older(ckpt: Path, name: str) -> None:
    for old in ckpt.glob("state*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def save_checkpoint(run: Run, model: torch.nn.Module, opt: torch.optim.Optimizer, gda: ProxyGDA,
                    state: dict[str, Any], best_state: dict[str, torch.Tensor] | None,
                    extra: dict[str, torch.Tensor] | None = None) -> None:
    name, tensors, meta = _checkpoint_files(model, opt, gda, state, best_state, extra)
    ckpt = run.file("checkpoint")
    # The tensors go to a file named by step and state.json, written last, names it: a kill between the two
    # writes leaves the previous (state.json, tensors) pair intact instead of new tensors with an old step.
    write_safetensors(ckpt / name, tensors)
    write_json(ckpt / "state.json", meta)
    _drop_older(ckpt, name)


def save_checkpoints(items: list[tuple[Run, torch.nn.Module, Any, ProxyGDA, dict[str, Any],
                                       dict[str, torch.Tensor] | None, dict[str, torch.Tensor] | None]],
                     pool: Executor | None = None) -> None:
    """The checkpoints of several runs (each item: what :func:`save_checkpoint` takes), each run's files exactly
    as :func:`save_checkpoint` writes them, with two syncs in all (:func:`faro_core.io.one_sync`): every
    run's tensors file, one sync, then every run's ``state.json``, one sync, so that no ``state.json`` reaches
    the disk before the tensors it names; then the older tensors files go. ``pool``: threads that write the
    tensors files (all of them are written before the sync that follows)."""
    if len(items) == 1:
        save_checkpoint(*items[0])
        return
    if not items:
        return
    files = [(run.file("checkpoint"), *_checkpoint_files(*rest)) for run, *rest in items]
    for ckpt, _, _, _ in files:
        ckpt.mkdir(parents=True, exist_ok=True)

    def write(file: tuple[Path, str, dict[str, torch.Tensor], dict[str, Any]]) -> None:
        with joined_sync():  # the block below syncs them
            write_safetensors(file[0] / file[1], file[2])

    with one_sync(files[0][0]):
        list(pool.map(write, files) if pool is not None else map(write, files))
    with one_sync(files[0][0]):
        for ckpt, _, _, meta in files:
            write_json(ckpt / "state.json", meta)
    for ckpt, name, _, _ in files:
        _drop_older(ckpt, name)


def load_checkpoint(run: Run, model: torch.nn.Module, opt: torch.optim.Optimizer, gda: ProxyGDA
                     ) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None, dict[str, torch.Tensor]] | None:

    ckpt = run.file("checkpoint")
    if not (ckpt / "state.json").exists():
        return None
    state = read_json(ckpt / "state.json")
    name = str(state.pop("tensors", "state.safetensors"))  # older checkpoints: one fixed name
    if Path(name).name != name or not (ckpt / name).exists():
        return None
    t = load_file(str(ckpt / name))
    model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
    best = {k[5:]: v for k, v in t.items() if k.startswith("best.")} or None
    gda.load_state_tensors({k[4:]: v for k, v in t.items() if k.startswith("gda.")})
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in t.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            opt_state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": opt_state, "param_groups": state.pop("param_groups")})
    torch.set_rng_state(t["rng"])
    return state, best, {k[6:]: v for k, v in t.items() if k.startswith("extra.")}


def checkpoint_step(run: Run) -> int:
    """The step of a run's last complete checkpoint (0: none), without loading it."""
    ckpt = run.file("checkpoint")
    if not (ckpt / "state.json").exists():
        return 0
    state = read_json(ckpt / "state.json")
    name = str(state.get("tensors", "state.safetensors"))
    return int(state.get("step", 0)) if Path(name).name == name and (ckpt / name).exists() else 0
