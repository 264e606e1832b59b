"""The trainer (issue #3): exact BT when unconstrained, constraints met, resume, run store, HF export, CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from faro_core.cli import main as faro_main
from faro_core.errors import FaroError, RunError
from faro_core.store.runs import RunStore, validate_run_id
from faro_core.train import FaroConfig, train
from faro_core.train.inputs import load_training_data

FAST = dict(data="demo-mini", epochs=6, batch_size=256)


@pytest.fixture()
def store(tmp_path) -> RunStore:
    return RunStore(tmp_path / "runs")


def weights(run) -> dict[str, torch.Tensor]:
    return load_file(str(run.file("model.safetensors")))


def test_unconstrained_is_exactly_plain_bt(store):
    none = train(FaroConfig(constraints=[], select="last", **FAST), store, progress=False)
    inf = train(FaroConfig(constraints=["dp", "eo"], epsilon=math.inf, select="last", **FAST), store, progress=False)
    a, b = weights(none), weights(inf)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k

    # an independent plain Bradley-Terry loop with the same seed, data order and optimizer
    from faro_core.models import FeatureCache, HeadRewardModel

    cfg = FaroConfig(**FAST).resolved()
    _, df, _ = load_training_data(cfg)
    tr = df[df["split"] == "train"]
    cache = FeatureCache(None, max_length=cfg.max_length, progress=False)
    xc = torch.from_numpy(cache.encode(list(tr["prompt"]), list(tr["chosen"])))
    xr = torch.from_numpy(cache.encode(list(tr["prompt"]), list(tr["rejected"])))
    torch.manual_seed(cfg.seed)
    model = HeadRewardModel(xc.shape[1], cfg.head_hidden)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)  # the trainer's (make_adam)
    n = len(tr)
    for epoch in range(cfg.epochs):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
        for start in range(0, n, cfg.batch_size):
            i = perm[start:start + cfg.batch_size]
            r = model(torch.cat([xc[i], xr[i]]))  # one forward, as the trainer does (same float rounding)
            loss = -torch.nn.functional.logsigmoid(r[: len(i)] - r[len(i):]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    for k, v in model.state_dict().items():
        assert torch.allclose(v, a[k], atol=1e-7, rtol=0), k


def test_constraints_whose_multipliers_stay_zero_train_plain_bt(store):
    """Measured but never binding (DP rates differ by at most 1, so at epsilon 1 every multiplier stays 0): the
    run trains exactly plain BT, weight for weight, while logging its violations. This is what makes an
    epsilon sweep's runs share their prefix with the lambda = 0 trajectory (bench/sweep_prefix.py)."""
    bt = train(FaroConfig(constraints=[], select="last", **FAST), store, progress=False)
    loose = train(FaroConfig(constraints=["dp"], epsilon=1.0, select="last", min_count=10, dual_every=2,
                             strata=["question_polarity"], **FAST), store, progress=False)
    a, b = weights(bt), weights(loose)
    assert all(torch.equal(a[k], b[k]) for k in a)
    hist = loose.history()
    assert len([h for h in hist if "g" in h]) > 3 and max(max(h["g"]) for h in hist if "g" in h) > 0.05
    assert all(h["lambda_max"] == 0.0 for h in hist)


@pytest.mark.parametrize(("kind", "margin"), [("dp", 0.08), ("eo", 0.03), ("cf", 0.03)])
def test_constraint_lowers_violation_and_is_logged(store, kind, margin):
    """Faro at eps=0.05 lowers the violation on the training split well below plain BT's (by the margins
    measured on the demo data: DP 0.257 -> 0.148, EO 0.198 -> 0.154, CF 0.090 -> 0.054), keeps accuracy,
    and logs the multipliers and strict violations: their maxima each step, the full vectors at the first step
    and at every dual step (the only steps where they change)."""
    # the settings the mini demo was measured with (polarity strata, last iterate, pooled DP partners)
    cfg = dict(epochs=60, min_count=10, strata=["question_polarity"], select="last", dp_partner=False)
    bt = train(FaroConfig(data="demo-mini", constraints=[kind], epsilon=math.inf, **cfg), store, progress=False)
    faro = train(FaroConfig(data="demo-mini", constraints=[kind], epsilon=0.05, **cfg), store, progress=False)
    m_bt, m_f = bt.metrics(), faro.metrics()
    hist = faro.history()
    assert len(hist) == m_f["steps"]
    names = faro.read("constraints.json")["names"]
    assert all("lambda_max" in h and kind in h["violation"] for h in hist)
    dual_every = faro.config["dual_every"]
    logged = [h["step"] for h in hist if "lambda" in h]
    assert logged == [1] + [s for s in range(dual_every, len(hist) + 1, dual_every) if s != 1]
    assert all(len(h["lambda"]) == len(names) == len(h["g"]) for h in hist if "lambda" in h)
    assert max(h["lambda_max"] for h in hist) > 0  # the multipliers did bind
    assert m_f["train"]["violation"][kind] <= m_bt["train"]["violation"][kind] - margin
    assert m_f["train"]["accuracy"] >= m_bt["train"]["accuracy"] - 0.03
    if kind == "cf":  # a continuous constraint: met on the training split up to the step granularity
        assert m_f["train"]["violation"]["cf"] <= 0.06


def test_resume_after_interrupt_gives_same_result(store):
    """Interrupted at step 13, resumed from the step-10 checkpoint, which holds moving multipliers (dual step
    every 2 steps): the resumed run continues at step 11 and ends exactly where an uninterrupted one does."""
    cfg = FaroConfig(data="demo-mini", constraints=["dp"], epsilon=0.05, epochs=8, batch_size=128, ckpt_every=5, min_count=5,
                     dual_every=2, strata=["question_polarity"], dp_partner=False)
    ref = train(cfg, store, run_id="ref", progress=False)

    def stop_at(row):
        if row["step"] == 13:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, store, run_id="cut", progress=False, on_step=stop_at)
    cut = store.get("cut")
    assert cut.status == "interrupted"
    state = json.loads((cut.file("checkpoint") / "state.json").read_text())
    saved = load_file(str(cut.file("checkpoint") / state["tensors"]))
    assert state["step"] == 10 and float(saved["gda.lam"].abs().max()) > 0  # the dual state is in it
    seen = []
    done = train(None, store, run_id="cut", resume=True, progress=False, on_step=seen.append)
    assert seen[0]["step"] == 11  # continued from the checkpoint: a retrain from step 0 would end the same
    assert done.status == "done"
    assert done.metrics()["accuracy"] == ref.metrics()["accuracy"]
    assert done.metrics()["violation"] == ref.metrics()["violation"]
    for k, v in weights(ref).items():
        assert torch.equal(v, weights(done)[k]), k
    assert [h["step"] for h in done.history()] == list(range(1, ref.metrics()["steps"] + 1))


def test_run_files_and_scores(store):
    run = train(FaroConfig(constraints=["cf"], **FAST), store, progress=False)
    for f in ("config.json", "status.json", "progress.json", "history.jsonl", "metrics.json", "scores.parquet",
              "model.safetensors", "model.json", "constraints.json", "data.json"):
        assert run.file(f).exists(), f
    assert run.status == "done" and run.progress()["fraction"] == 1.0
    scores = pd.read_parquet(run.file("scores.parquet"))
    assert set(scores["split"]) == {"train", "val", "test"}
    assert {"r_chosen", "r_rejected", "cf_r_chosen", "order", "group", "gold"} <= set(scores.columns)
    # stored rewards are the stored model's rewards
    from faro_core.data import load
    from faro_core.models import load_scorer

    data = load("demo-mini").df.set_index("pair_id")
    head = scores.head(20)
    r = load_scorer(run).score(list(data.loc[head["pair_id"], "prompt"]), list(data.loc[head["pair_id"], "chosen"]))
    np.testing.assert_allclose(r, head["r_chosen"].to_numpy(), atol=1e-5)
    cfg = FaroConfig.from_dict(run.config)
    assert cfg.constraints == ["cf"] and cfg.epochs == FAST["epochs"]


def test_run_store_status_and_ids(store, monkeypatch):
    run = store.create({"name": "x"}, run_id="x1")
    assert run.status == "queued"
    run.set_status("running")
    assert run.status == "running"
    st = run.raw_status()
    st["pid"] = 999_999_999  # a process that does not exist
    run.write("status.json", st)
    assert run.status == "interrupted"
    st["pid"] = 1
    st["heartbeat"] = time.time() - 3600  # alive pid but a stale heartbeat
    run.write("status.json", st)
    assert run.status == "interrupted"
    for bad in ("../etc", "a/b", "", ".hidden", "x" * 200):
        with pytest.raises(RunError):
            validate_run_id(bad)
    with pytest.raises(RunError):
        store.get("nope")
    assert [r["run_id"] for r in store.index()] == ["x1"]


def test_cli_train_json_and_errors(tmp_path, capsys):
    rc = faro_main(["train", "--data", "demo-mini", "--constraint", "dp", "--epsilon", "0.1", "--epochs", "2", "--runs-dir",
                    str(tmp_path), "--quiet", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["status"] == "done" and out["run_id"]
    assert {"accuracy", "gold_accuracy", "violation"} <= set(out["metrics"])
    assert faro_main(["train", "--data", "demo-mini", "--constraint", "xx", "--runs-dir", str(tmp_path), "--quiet"]) == 2
    assert faro_main(["train", "--resume", "../x", "--runs-dir", str(tmp_path), "--quiet"]) == 2
    assert "invalid run id" in capsys.readouterr().err
    assert faro_main(["train", "--data", str(tmp_path / "missing.csv"), "--runs-dir", str(tmp_path)]) == 2


def test_full_mode_hf_export_matches_faro_scoring(store):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run = train(FaroConfig(data="demo-mini", mode="full", groups=["old"], epochs=1, batch_size=32, max_length=64), store,
                progress=False)
    export = run.file("hf_model")
    tok = AutoTokenizer.from_pretrained(export)
    model = AutoModelForSequenceClassification.from_pretrained(export)
    assert model.config.num_labels == 1
    scores = pd.read_parquet(run.file("scores.parquet")).head(16)
    from faro_core.data import load

    data = load("demo-mini", groups=["old"]).df.set_index("pair_id").loc[scores["pair_id"]]
    enc = tok(list(data["prompt"]), list(data["chosen"]), padding=True, truncation="longest_first", max_length=64,
              return_tensors="pt")
    with torch.no_grad():
        r = model(**enc).logits.squeeze(-1).numpy()
    np.testing.assert_allclose(r, scores["r_chosen"].to_numpy(), atol=1e-4)


def test_full_mode_with_constraints_runs_the_buffer_dual(store):
    """Full mode, DP and CF together: the linearized penalty on the batch (twins too) and dual steps from the
    buffer of last-seen rewards; multipliers move and both violations are reported."""
    run = train(FaroConfig(data="demo-mini", mode="full", groups=["old"], constraints=["dp", "cf"], epsilon=0.02, epochs=1,
                           batch_size=16, max_length=48, min_count=5), store, progress=False)
    assert run.status == "done" and run.config["dual_source"] == "auto"
    hist = run.history()
    assert sum("lambda" in h for h in hist) >= 2 and max(h["lambda_max"] for h in hist) > 0
    assert {"dp", "cf"} <= set(run.metrics()["train"]["violation"])


@pytest.mark.slow
def test_two_process_training_matches_single(tmp_path):
    """`accelerate launch` with 2 CPU processes (gloo): group statistics are all-reduced, so the result
    matches one process within 0.03 accuracy and 0.05 violation. Not exactly: each process draws its batches
    from its own shard of the training split, so the batch sequence differs from one process's."""
    # dual step every 2 of the 12 steps, pooled DP over polarity strata: with the defaults the multipliers never
    # moved and every strict DP violation was 0, so the all-reduced statistics went unused
    args = ["train", "--data", "demo-mini", "--constraint", "dp", "--epsilon", "0.05", "--epochs", "6", "--batch-size", "256",
            "--min-count", "5", "--dual-every", "2", "--strata", "question_polarity", "--dp-partner", "pool",
            "--runs-dir", str(tmp_path), "--quiet", "--json"]
    single = subprocess.run([sys.executable, "-m", "faro_core", *args, "--run-id", "one"], capture_output=True,
                            text=True, timeout=600)
    assert single.returncode == 0, single.stderr
    # accelerate's DDP launcher is `--multi_gpu` (torchrun); without a GPU the processes use gloo on the CPU
    # (`--cpu` with several processes would go through mpirun instead).
    multi = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                            "-m", "faro_core", *args, "--run-id", "two"],
                           capture_output=True, text=True, timeout=600)
    assert multi.returncode == 0, multi.stderr[-3000:]
    store = RunStore(tmp_path)
    one, two = store.get("one").metrics(), store.get("two").metrics()
    assert store.get("two").read("status.json")["world_size"] == 2
    assert abs(one["accuracy"] - two["accuracy"]) <= 0.03
    assert abs(one["train"]["violation"]["dp"] - two["train"]["violation"]["dp"]) <= 0.05
    g = {}
    for rid in ("one", "two"):
        hist = store.get(rid).history()
        assert max(h["lambda_max"] for h in hist) > 0, rid  # the constraint bound
        g[rid] = [round(max(h["g"]), 3) for h in hist if "g" in h]
    # the dual steps' strict violations, all-reduced over the two shards: the whole split's, as one process's
    assert max(g["one"]) > 0.1 and np.allclose(g["one"], g["two"], atol=0.02), g


def test_iterate_average_is_a_selection_candidate(store):
    """With ``average`` the exponential moving average of the weights is evaluated on validation each epoch
    and may be the selected iterate; either way the run's scores come from the selected weights."""
    cfg = FaroConfig(data="demo-mini", constraints=["dp"], epsilon=0.05, epochs=6, min_count=10, strata=["question_polarity"],
                     average=0.9)
    run = train(cfg, store, progress=False)
    rows = [h for h in run.history() if "val" in h]
    assert rows and all("val_average" in h and "accuracy" in h["val_average"] for h in rows)
    m = run.metrics()
    best = next(h for h in rows if h["step"] == m["selected_step"])
    chosen = best["val_average"] if m["selected_average"] else best["val"]
    assert chosen["accuracy"] == pytest.approx(m["accuracy"], abs=1e-6)
    # how it was chosen is recorded, and agrees with the logged validation row
    tier = "feasible" if chosen["feasible"] else "chance" if chosen.get("within_chance") else "least_violating"
    assert m["selected_by"] == tier
    # the average is evaluated with its own weights, not the live ones
    assert any(h["val_average"]["loss"] != h["val"]["loss"] for h in rows)


def test_a_selected_average_is_what_the_run_returns(store, monkeypatch):
    """When the averaged weights win the selection (forced here: every candidate beats the one before, and the
    average is the last candidate of each epoch), the run's scores are the averaged weights': its validation
    loss is the average's, not the live iterate's."""
    from faro_core.train.selection import IterateSelector

    def always_newer(self, m, ref):  # the newest candidate wins
        m.pop("_batch", None)
        return True

    monkeypatch.setattr(IterateSelector, "better", always_newer)
    cfg = FaroConfig(data="demo-mini", constraints=["dp"], epsilon=0.05, epochs=4, min_count=10, strata=["question_polarity"],
                     average=0.9)
    run = train(cfg, store, progress=False)
    m = run.metrics()
    last = [h for h in run.history() if "val" in h][-1]
    assert m["selected_average"] and m["selected_step"] == last["step"]
    assert last["val_average"]["loss"] != last["val"]["loss"]
    assert m["loss"] == pytest.approx(last["val_average"]["loss"], abs=1e-6)


def test_dp_scope_default_all_and_errors(store, capsys):
    """BBQ-style data: DP holds in ambiguous contexts by default; --dp-scope all restores every stratum; a
    scope on a column that is not a stratum, or with no matching row, is a clear error (exit 2)."""
    from faro_core.cli import main as faro_main
    from faro_core.train.launch import launch_config

    default = train(FaroConfig(data="demo-mini", constraints=["dp"], epsilon=0.05, epochs=1), store, progress=False)
    names = default.read("constraints.json")["names"]
    assert names and all(",ambig|vs-" in n for n in names)
    everywhere = train(FaroConfig(data="demo-mini", constraints=["dp"], epsilon=0.05, epochs=1, dp_scope="all"), store,
                       progress=False)
    assert any(",disambig|vs-" in n for n in everywhere.read("constraints.json")["names"])
    for scope, msg in (("category=Age", "not a strata column"), ("context_condition=vague", "no row has")):
        code = faro_main(["train", "--data", "demo-mini", "--constraint", "dp", "--epochs", "1", "--dp-scope", scope,
                          "--runs-dir", str(store.root), "--quiet"])
        assert code == 2 and msg in capsys.readouterr().err
    assert launch_config(constraint="dp", dp_scope="context_condition=ambig").dp_scope == "context_condition=ambig"
    assert launch_config(constraint="dp", dp_partner=False).dp_partner is False
    pooled = faro_main(["train", "--data", "demo-mini", "--constraint", "dp", "--epochs", "1", "--dp-partner", "pool",
                        "--runs-dir", str(store.root), "--quiet", "--json"])
    assert pooled == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert not any("|vs-" in n for n in store.get(last["run_id"]).read("constraints.json")["names"])


def test_constraint_with_no_large_enough_cell_warns(store, capsys):
    """DP on the 512-item demo with cells of at least 500 members: nothing can be constrained; the run says so
    on stderr and in constraints.json instead of silently being plain BT."""
    run = train(FaroConfig(data="demo-mini", constraints=["dp"], epsilon=0.05, epochs=1, min_count=500), store, progress=False)
    err = capsys.readouterr().err
    assert "no DP cell has 500 members" in err and "plain Bradley-Terry" in err
    assert run.read("constraints.json")["cells"]["unconstrained_kinds"] == ["dp"]


def test_rows_carry_their_step_end_time_and_reach_on_step_in_order(store):
    """History rows are written in groups (every 10 steps, evaluations, checkpoints, the end), so each carries
    the time its step ended; on_step sees every row once, in step order (bench/vs_trl.py times by it)."""
    seen = []
    run = train(FaroConfig(data="demo-mini", constraints=["cf"], epsilon=0.05, epochs=2, min_count=5), store, progress=False,
                on_step=seen.append)
    hist = run.history()
    assert [r["step"] for r in seen] == [r["step"] for r in hist] == list(range(1, len(hist) + 1))
    times = [r["time"] for r in hist]
    assert times == sorted(times) and times[0] > 0 and len(set(times)) > len(times) // 2


def test_head_dual_pass_scores_each_distinct_response_once(store):
    """The dual step's fresh pass (head mode) scores distinct feature rows once and maps them back: same
    rewards as scoring every pair, twins included."""
    from faro_core.train.backends import HeadBackend, split_rewards
    from faro_core.train.inputs import load_training_data

    cfg = FaroConfig(constraints=["cf"], epsilon=0.05).resolved()
    _, df, _ = load_training_data(cfg)
    backend = HeadBackend(cfg, df, progress=False)
    idx = torch.from_numpy(np.flatnonzero((df["split"] == "train").to_numpy()))
    for twins in (True, False):
        ref = split_rewards(backend, backend.model, idx, with_twins=twins)
        got = backend.unique_rewards(backend.model, idx, with_twins=twins)
        for a, b in zip(got, ref):
            assert torch.allclose(a, b, atol=1e-5, equal_nan=True)
    plan = backend._plans[True]
    assert len(plan[1]) < len(plan[2])  # there were repeated rows to skip


def test_to_device_is_a_no_op_on_the_same_device():
    """The trainer's host-to-device copy has nothing to do on the same device (the CPU loop pays nothing)."""
    from faro_core.train.backends import to_device

    idx = torch.arange(10)
    assert to_device(idx, "cpu") is idx


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_to_device_copies_to_a_gpu_and_round_trips():
    """A pinned asynchronous copy to a GPU that holds the same values (skipped, and reported so, on a CPU)."""
    from faro_core.train.backends import to_device

    idx = torch.arange(10)
    on_gpu = to_device(idx, "cuda")
    assert on_gpu.is_cuda and torch.equal(on_gpu.cpu(), idx)


def test_head_backend_from_features_scores_its_rows():
    """The synthetic-feature backend (bench/scaling.py) scores chosen, rejected and twins from the rows given."""
    from faro_core.models.reward import HeadRewardModel
    from faro_core.train.backends import HeadBackend

    g = torch.Generator().manual_seed(0)
    x = [torch.randn(6, 5, generator=g) for _ in range(4)]
    twin = torch.tensor([True, False, True, True, False, False])
    model = HeadRewardModel(5, 4)
    be = HeadBackend.from_features(*x, twin, model)
    idx = torch.tensor([4, 0, 2])
    with torch.no_grad():
        r_c, r_r, cf_c, cf_r = be.rewards(model, idx)
        assert torch.allclose(r_c, model(x[0][idx])) and torch.allclose(r_r, model(x[1][idx]))
        assert torch.isnan(cf_c[0]) and torch.allclose(cf_c[1:], model(x[2][idx[1:]]))
        assert torch.allclose(cf_r[1:], model(x[3][idx[1:]]))
        no_twins = be.rewards(model, idx, with_twins=False)
        assert torch.equal(no_twins[0], r_c) and torch.isnan(no_twins[2]).all()


def _val(acc: float, feasible: bool = True, excess: float = 0.0, loss: float = 0.5) -> dict:
    return {"accuracy": acc, "loss": loss, "feasible": feasible, "max_excess": excess}


def test_iterate_selector_tiers_and_ties():
    """A higher tier always wins; within a tier the more accurate wins and a tie keeps the earlier; tier 0
    ranks by the largest excess over epsilon."""
    from faro_core.train.selection import IterateSelector

    sel = IterateSelector(FaroConfig(), None, None)
    first = _val(0.80)
    assert sel.better(first, None)
    assert sel.better(_val(0.83), first) and not sel.better(_val(0.80), first)
    infeasible, feasible = _val(0.9, feasible=False, excess=0.1), _val(0.6)
    assert sel.better(feasible, infeasible) and not sel.better(_val(0.95, feasible=False, excess=0.01), feasible)
    assert sel.better(_val(0.7, feasible=False, excess=0.05), infeasible)
    assert not sel.better(_val(0.99, feasible=False, excess=0.2), infeasible)


def test_iterate_selector_by_validation_loss():
    """select_metric="loss": within a tier the lower validation BT loss wins, whatever the accuracy; tiers
    still come first; the validation metrics carry the loss the rule reads."""
    from faro_core.train.selection import IterateSelector

    sel = IterateSelector(FaroConfig(select_metric="loss"), None, None)
    ref = _val(0.85, loss=0.40)
    assert sel.better(_val(0.80, loss=0.39), ref) and not sel.better(_val(0.90, loss=0.41), ref)
    assert not sel.better(_val(0.80, loss=0.40), ref)  # a tie keeps the earlier
    assert not sel.better(_val(0.9, feasible=False, excess=0.1, loss=0.1), ref)
    with pytest.raises(FaroError, match="select_metric"):
        FaroConfig(select_metric="auc")


def test_selection_by_validation_loss_returns_the_lowest_loss_iterate(store):
    """A run with select_metric="loss" logs the validation BT loss each epoch and returns the iterate with the
    lowest one (the first of ties); its metrics.json reports that loss."""
    # a high learning rate, so the validation loss turns up before the end (at the default it falls every
    # epoch and "keep the last iterate" would pass)
    run = train(FaroConfig(data="demo-mini", method="bt", epochs=6, lr=0.1, select_metric="loss"), store, progress=False)
    rows = [h for h in run.history() if "val" in h]
    losses = [h["val"]["loss"] for h in rows]
    assert len(rows) == 6 and all(math.isfinite(v) and v > 0 for v in losses)
    best = rows[int(np.argmin(losses))]
    m = run.metrics()
    assert m["selected_step"] == best["step"] < rows[-1]["step"]
    assert m["loss"] == pytest.approx(best["val"]["loss"], abs=1e-6)


def test_stored_configs_without_new_fields_keep_their_old_rules():
    """A run stored before a config field existed ran with the older behaviour: loading its config (resume)
    gives that, not the new default."""
    old = FaroConfig.from_dict({"constraints": ["dp"], "epsilon": 0.05})
    assert (old.select_chance, old.dp_partner, old.expgrad_base) == (0.0, False, "linear")
    new = FaroConfig.from_dict(FaroConfig(constraints=["dp"]).to_dict())
    assert (new.select_chance, new.dp_partner) == (0.05, True)
