"""The demo sweep the dashboard opens on: BT, Faro-DP, Faro-EO and Faro-CF at a few ε on the demo data.

``build_demo(store)`` trains every missing run of :func:`demo_specs` in this process as one batch of the
batched engine (:mod:`faro_core.train.batched`: head mode, one feature-cache pass, every member equal to its
solo run), then, when the policy stage is installed,
writes ``policy.json`` (and a few generations) for the runs that lack it. Run ids are fixed
(``demo-bt-s0``, ``demo-faro-dp-eps0.05-s0`` ...), so a second call does nothing: the build is idempotent.
A run that failed or was interrupted is rebuilt from scratch.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from faro_core.errors import FaroError
from faro_core.evaluate.certify import certify_run
from faro_core.store.runs import RunStore
from faro_core.train import FaroConfig, train
from faro_core.train.batched import plan_batches, train_batch

DEMO_SWEEP = "demo"
DEMO_EPSILONS = (0.02, 0.05, 0.1)
DEMO_EPOCHS = 50  # the head-mode default; ~45 steps per epoch on the demo's ~2,850 training items
DEMO_BATCH = 128
# Annotator skew: half of the eligible ambiguous items are relabelled to prefer the stereotyped answer. At the
# demo's size (half of each BBQ category) rho = 0.3 leaves BT's preference for the stereotyped answer at
# P = 0.508 on validation (0.531 test), within noise; rho = 0.5 gives 0.582 (test 0.591), the same bias the
# full five categories reach at rho = 0.3 (docs/RESULTS.md, "The demo").
DEMO_SKEW = 0.5
# A 30% test split holds ~790 ambiguous items: a Clopper-Pearson margin of ~0.035 on P(biased > counter).
DEMO_TEST_FRAC = 0.3
DEMO_ATTRIBUTE = "role"
DEMO_POLICY_ITEMS = 600  # test items the policy stage evaluates (their pi_ref scores ship with the data)
# The grid: BT, DP(role) at three epsilon (the default constraint, the first screen's), EO(role) and CF at one.
DEMO_GRID: tuple[tuple[str, float], ...] = (("dp", 0.02), ("dp", 0.05), ("dp", 0.1), ("eo", 0.05), ("cf", 0.05))


def demo_split_config() -> FaroConfig:
    """The config whose data split the demo runs share (their template-held-out test split)."""
    return FaroConfig(data="demo", skew=DEMO_SKEW, test_frac=DEMO_TEST_FRAC)


@dataclass(frozen=True)
class DemoSpec:
    """One demo run: its fixed id and the training config overrides."""

    run_id: str
    config: dict[str, Any] = field(default_factory=dict)


def demo_run_id(constraint: str | None, epsilon: float | None = None, seed: int = 0) -> str:
    """``demo-bt-s0`` for plain BT, ``demo-faro-dp-eps0.05-s0`` for a constrained run."""
    if not constraint:
        return f"demo-bt-s{seed}"
    return f"demo-faro-{constraint}-eps{epsilon:g}-s{seed}"


def demo_specs(grid: tuple[tuple[str, float], ...] = DEMO_GRID, seeds: tuple[int, ...] = (0,),
               epochs: int = DEMO_EPOCHS, epsilons: tuple[float, ...] | None = None,
               constraints: tuple[str, ...] | None = None) -> list[DemoSpec]:
    """The demo grid: BT plus each (constraint, epsilon) of ``grid``, for each seed. ``constraints`` and
    ``epsilons`` given together replace the grid by their product (for small test sweeps)."""
    if constraints is not None or epsilons is not None:
        grid = tuple((c, e) for c in (constraints or ("dp", "eo", "cf")) for e in (epsilons or DEMO_EPSILONS))
    base = {"data": "demo", "mode": "head", "epochs": epochs, "sweep": DEMO_SWEEP, "batch_size": DEMO_BATCH,
            "skew": DEMO_SKEW, "test_frac": DEMO_TEST_FRAC, "attribute": DEMO_ATTRIBUTE}
    specs: list[DemoSpec] = []
    for seed in seeds:
        specs.append(DemoSpec(demo_run_id(None, seed=seed),
                              {**base, "method": "bt", "constraints": [], "seed": seed, "name": "bt"}))
        for c, eps in grid:
            specs.append(DemoSpec(demo_run_id(c, eps, seed),
                                  {**base, "method": "faro", "constraints": [c], "epsilon": eps,
                                   "seed": seed, "name": f"faro-{c}-eps{eps:g}"}))
    return specs


def policy_available() -> bool:
    """True when the policy stage (``faro_core.policy.evaluate``) is installed in this tree."""
    try:
        return importlib.util.find_spec("faro_core.policy.evaluate") is not None
    except (ImportError, ValueError):
        return False


def build_demo(store: RunStore | None = None, specs: list[DemoSpec] | None = None, policy: bool = True,
               generate: bool = True, policy_limit: int | None = None, n_prompts: int = 3,
               progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Build the demo sweep into ``store`` where missing; return what was built and what was kept.

    ``policy``: also compute ``policy.json`` (Gibbs policy on the demo BBQ items) for runs that lack it, when
    the policy stage exists; ``generate``: also score the shipped best-of-n replies under each reward
    (:mod:`faro_core.policy.replies`; ``n_prompts`` is not used: the shipped replies set the prompts).
    Policy failures are reported in the result (``policy_error``), not raised: the reward runs stay usable.
    """
    store = store or RunStore()
    say = progress or (lambda s: None)
    specs = specs if specs is not None else demo_specs()
    t0 = time.time()
    built, kept = [], []
    bar = tqdm(total=len(specs), desc="demo runs", unit="run", file=sys.stderr,
               disable=progress is None and not sys.stderr.isatty())
    todo: list[tuple[str, FaroConfig]] = []
    for spec in specs:
        bar.update(0)
        if store.has(spec.run_id):
            run = store.get(spec.run_id)
            if run.status == "done" and run.file("scores.parquet").exists():
                kept.append(spec.run_id)
                bar.update(1)
                continue
            if run.status == "running":
                raise FaroError(f"demo run {spec.run_id!r} is being built by another process; wait for it")
            shutil.rmtree(run.path)  # failed / interrupted: rebuild
        todo.append((spec.run_id, FaroConfig(**spec.config)))
    # the missing runs train as one batch through the engine (each still an ordinary run, equal to its solo
    # training); a config that cannot batch trains alone
    batches, serial = plan_batches([c for _, c in todo])
    rid_of = {id(c): rid for rid, c in todo}
    for batch in batches:
        ids = [rid_of[id(c)] for c in batch]
        say(f"training {', '.join(ids)} (one batch)")
        bar.set_postfix_str(f"batch of {len(ids)}")
        runs = train_batch(batch, store, ids, progress=False)
        bad = [f"{r.run_id}: {r.raw_status().get('error')}" for r in runs if r.status != "done"]
        if bad:
            raise FaroError("demo run(s) failed: " + "; ".join(bad))
        built += ids
        bar.update(len(ids))
    for cfg in serial:
        say(f"training {rid_of[id(cfg)]}")
        bar.set_postfix_str(rid_of[id(cfg)])
        train(cfg, store, run_id=rid_of[id(cfg)], progress=False)
        built.append(rid_of[id(cfg)])
        bar.update(1)
    bar.close()
    built = [s.run_id for s in specs if s.run_id in set(built)]  # in the grid's order
    out: dict[str, Any] = {"runs_dir": str(store.root), "runs": [s.run_id for s in specs], "built": built,
                           "kept": kept, "train_seconds": round(time.time() - t0, 2), "policy": [],
                           "certified": _certify([store.get(s.run_id) for s in specs], say)}
    try:  # the Overview's story (story.json), so the dashboard's first screen reads it
        from faro_core.results.story import load_story

        load_story(store)
    except Exception as exc:  # optional for the demo: report, do not fail the build
        out["story_error"] = f"{type(exc).__name__}: {exc}"
    if policy and policy_available():
        runs = [store.get(s.run_id) for s in specs]
        generate = generate and _shipped_replies_exist()
        todo = runs if any(_policy_stale(r, generate) for r in runs) else []  # compared with each other
        if todo:
            t1 = time.time()
            try:
                out["policy"] = _build_policy(todo, generate, policy_limit, n_prompts, say)
            except Exception as exc:  # the policy stage is optional for the demo
                out["policy_error"] = f"{type(exc).__name__}: {exc}"
            out["policy_seconds"] = round(time.time() - t1, 2)
    out["seconds"] = round(time.time() - t0, 2)
    return out


def _policy_stale(run: Any, generate: bool) -> bool:
    """A run's policy results need (re)building: none yet, written before the reward-induced bias existed,
    or (``generate``) without generations scored from the shipped replies."""
    pol = run.read("policy.json") if run.file("policy.json").exists() else None
    if not pol or "reward_induced" not in pol:
        return True
    return generate and not (run.file("policy_generations.parquet").exists()
                             and (pol.get("generation") or {}).get("shipped"))


def _shipped_replies_exist() -> bool:
    from faro_core.policy.replies import shipped_replies

    return shipped_replies() is not None


def _certify(runs: list[Any], say: Callable[[str], None]) -> dict[str, Any]:
    """``certificate.json`` for runs that lack it, when the evaluation stage exists (cheap: scores only)."""
    out: dict[str, Any] = {}
    for run in runs:
        if run.file("certificate.json").exists():
            continue
        try:
            out[run.run_id] = certify_run(run)["certified"]
        except Exception as exc:  # optional for the demo: report, do not fail the build
            out[run.run_id] = f"{type(exc).__name__}: {exc}"
    if out:
        say(f"certified {len(out)} runs")
    return out


def _build_policy(runs: list[Any], generate: bool, limit: int | None, n_prompts: int,
                  say: Callable[[str], None]) -> list[str]:
    # function-level: the policy stage is optional (policy_available()) and loads a language model
    from faro_core.policy.evaluate import evaluate_policies, load_items, select_items, write_policy
    from faro_core.policy.gibbs import DEFAULT_BETAS

    items = select_items(load_items("demo"), runs, split="test", seed=0,
                         limit=DEMO_POLICY_ITEMS if limit is None else limit)
    say(f"policy: {len(items)} BBQ items, {len(runs)} rewards")
    result = evaluate_policies(runs, items, betas=list(DEFAULT_BETAS), progress=say)
    result.update({"data": "demo", "split": "test"})
    write_policy(runs, result)  # policy results first: generation on a CPU is the slow part
    if generate:  # score the shipped replies (generating them takes ~15 min on 2 cores)
        from faro_core.policy.replies import DEMO_GENERATION, replies_key, shipped_replies
        from faro_core.policy.rerank import rerank_runs

        replies = shipped_replies()
        if replies is None:
            say(f"policy: no shipped replies for key {replies_key()}; `faro policy generate RUN...` makes them")
        else:
            result["generation"] = rerank_runs(runs, load_items("demo"), config=DEMO_GENERATION,
                                               betas=list(DEFAULT_BETAS), progress=say, replies=replies)
            write_policy(runs, result)
    return [r.run_id for r in runs]
