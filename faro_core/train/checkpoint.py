"""Checkpoints of a training run: model, optimizer, multipliers, RNG and the best iterate so far, in one
safetensors file named by step plus ``state.json`` (written last), so a kill between the two writes leaves
the previous pair intact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from faro_core.io import read_json, write_json, write_safetensors
from faro_core.store.runs import Run
from faro_core.train.proxy_gda import ProxyGDA


def save_checkpoint(run: Run, model: torch.nn.Module, opt: torch.optim.Optimizer, gda: ProxyGDA,
                     state: dict[str, Any], best_state: dict[str, torch.Tensor] | None,
                     extra: dict[str, torch.Tensor] | None = None) -> None:
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
    ckpt = run.file("checkpoint")
    # The tensors go to a file named by step and state.json, written last, names it: a kill between the two
    # writes leaves the previous (state.json, tensors) pair intact instead of new tensors with an old step.
    name = f"state-{int(state['step']):09d}.safetensors"
    write_safetensors(ckpt / name, tensors)
    write_json(ckpt / "state.json", {**state, "tensors": name, "param_groups": osd["param_groups"]})
    for old in ckpt.glob("state*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


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
