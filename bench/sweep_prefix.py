"""How much of an epsilon sweep could share training: the prefix each run has in common with lambda = 0.

    python bench/sweep_prefix.py [--quick] [--json]

A Faro run's multipliers start at 0 and stay 0 while every dual step's violation (the dual signal: smooth for
DP/EO, strict for CF) is within epsilon; until then the run is bit-identical to the trajectory with the
constraints measured but never enforced (tests/test_train.py, ``..._multipliers_stay_zero_train_plain_bt``;
which validation-evaluated iterate it returns still depends on epsilon). So a sweep over epsilon could train that trajectory once per
constraint and start each run from its checkpoint before the first dual step that binds. This script
measures, in ``bench/vs_fairlearn.py``'s set-up (BBQ Religion, head mode, no strata, min count 10, 10 epochs,
seed 0), where each run leaves the shared trajectory, the fraction of the sweep's steps on it, and what that
would save of the sweep's time at most, given the share of a run spent in its training loop (one run).
With --json the last stdout line is ``{"shared_step_fraction": ..., "step_time_share": ...,
"estimated_saving": ...}``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from typing import Any

import torch
from _common import RESULTS, Benchmark, bbq_source, finish, machine_line, md_table

EPSILONS = [0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5]


def dual_signal_path(config: Any) -> tuple[list[tuple[int, float]], int, int]:
    """([(step, largest dual-signal violation)] at each dual step of the never-enforced trajectory, total steps,
    dual_every) for ``config`` (its epsilon is ignored)."""
    from faro_core.fairness.pairs import PairTensors
    from faro_core.train import FaroConfig
    from faro_core.train.backends import HeadBackend
    from faro_core.train.inputs import load_training_data
    from faro_core.train.stepper import TrainStepper

    cfg = FaroConfig(**{**config.to_dict(), "epsilon": 1e9}).resolved()  # measured, never binding
    _, df, index = load_training_data(cfg)
    backend = HeadBackend(cfg, df, progress=False)
    stepper = TrainStepper(cfg, df, index, PairTensors.from_frame(df, index), backend, backend.model)
    total = stepper.steps_per_epoch * cfg.epochs
    path = []
    for s in range(total):
        if stepper.step(s)["dual"]:
            path.append((s + 1, float(stepper.gda.last_signal.max())))
    return path, total, stepper.dual_every


def main(argv: list[str] | None = None) -> int:
    """Run the measurement; returns the exit status."""
    from faro_core.store.runs import RunStore
    from faro_core.studies.inprocess import SharedInputs, train_inprocess
    from faro_core.train import FaroConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 epochs")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    data, fmt, label = bbq_source()
    epochs = 2 if args.quick else 10
    base: dict[str, Any] = dict(data=data, format=fmt, mode="head", seed=0, strata=[], min_count=10, epochs=epochs)
    rows, total_steps, shared_steps, parents = [], 0, 0, 0
    inputs = SharedInputs()
    for kind in ("dp", "eo", "cf"):
        path, total, every = dual_signal_path(FaroConfig(**base, constraints=[kind]))
        parents += total
        for eps in EPSILONS:
            branch = next((s for s, v in path if v > eps), None)
            shared = total if branch is None else branch - every  # resume from the checkpoint before it
            total_steps, shared_steps = total_steps + total, shared_steps + shared
            rows.append([kind.upper(), f"{eps:g}", "never" if branch is None else str(branch),
                         f"{shared}/{total}"])
    # the share of a run's time spent in its training steps (the rest: set-up, validation, files)
    with tempfile.TemporaryDirectory(prefix="faro-bench-prefix-") as tmp:
        store = RunStore(tmp)
        train_inprocess(FaroConfig(**{**base, "seed": 99}, constraints=["dp"], epsilon=0.05), store, inputs)  # warm
        row = train_inprocess(FaroConfig(**base, constraints=["dp"], epsilon=0.05), store, inputs)
        step_share = store.get(row["run_id"]).history()[-1]["time"] / row["job_seconds"]
    frac = shared_steps / total_steps
    needed = (total_steps - shared_steps + parents) / total_steps  # steps still trained, with the 3 trajectories
    saving = step_share * (1 - needed)
    fl = RESULTS / "vs_fairlearn.json"
    fl_figs = json.loads(fl.read_text()) if fl.exists() else {}
    ratio = None if fl_figs.get("quick") else fl_figs.get("time_ratio")  # a --quick sweep says nothing here
    goal_text = (f"Not built: `bench/vs_fairlearn.py`'s goal (0.1, measured {ratio:.3f}) needs "
                 f"{1 - 0.1 / ratio:.0%} off the sweep." if ratio else "")
    body = (f"Data: {label}, head mode, no strata, min count 10, {epochs} epochs, seed 0 "
            f"(`bench/vs_fairlearn.py`'s sweep). {machine_line()}.\n\n"
            + md_table(["constraint", "ε", "first binding dual step", "steps shared with λ = 0"], rows)
            + f"\n\nSteps on the shared prefix: **{frac:.1%}** of the sweep's {total_steps}. Training the three "
            f"λ = 0 trajectories once, the sweep would train {needed:.1%} of its steps. A run spends "
            f"{step_share:.0%} of its time in its training loop (steps, and the per-epoch validation passes a "
            f"shared prefix would not save; the rest: set-up, scoring and files), so the saving is at most "
            f"**{saving:.0%}** of the sweep's time. {goal_text}\n\n"
            "Produced by `python bench/sweep_prefix.py" + (" --quick" if args.quick else "") + "`.")
    finish("sweep_prefix", "Sharing training across an ε sweep (estimate)", body,
           {"shared_step_fraction": round(frac, 4), "step_time_share": round(step_share, 4),
            "estimated_saving": round(saving, 4)}, args.json)
    return 0


BENCH = Benchmark("sweep_prefix", "speed", "the training prefix an epsilon sweep shares with lambda = 0",
                  run=main)

if __name__ == "__main__":
    raise SystemExit(BENCH.run())
