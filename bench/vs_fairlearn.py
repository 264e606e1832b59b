"""Faro head-mode sweep vs fairlearn ExponentiatedGradient: wall time and fronts (goal: ratio <= 0.1 at full length,
issue #24 (an earlier goal was 0.05), Faro's
front not dominated under its own selection and under fairlearn's, the last iterate).

    python bench/vs_fairlearn.py [--quick] [--epochs N] [--json]

Both sides train on the same cached MiniLM features of the same BBQ pairs through the same run-store path
(:func:`faro_core.studies.inprocess.train_inprocess`: data, split and feature shards loaded once per process and
shared by every run of either side). Faro: head mode (trainer defaults: MLP head, batch 128, linearized
penalty on the BT batch, dual step every 20 steps; 10 epochs, as the quick BBQ study on one category) for 3
constraints (DP, EO, CF) x 10 epsilons = 30 runs. fairlearn: ``ExponentiatedGradient`` (EO on pairs,
:mod:`faro_core.train.expgrad`) for the same 10 epsilons, twice: fitting the same MLP head as Faro's each round
(``expgrad_base="head"``, same epochs, batch and learning rate: the like-for-like comparison, and the headline
``time_ratio``) and fitting logistic regression on feature differences (``expgrad_base="linear"``: cheaper, but
~0.63 gold accuracy against ~0.82, reported as ``time_ratio_linear``). Groups are not conditioned on strata (``strata=[]``), as fairlearn's EO is not, and cells are
estimated from 10 members (``min_count=10``; one category's test split is small). Faro's sweep is timed as
``faro sweep`` trains it (the default batched engine: the 30 runs as one batch, :mod:`faro_core.train.batched`),
once with Faro's iterate selection (``time_ratio``) and once with fairlearn's rule, the last iterate
(``time_ratio_last_iterate``), between the two halves of fairlearn's runs, after one untimed round of each
side; the same sweep one run after another is timed for reference (``time_ratio_serial``). Ratios are total
over total (sweep time over sweep time). Each side's time covers training, scoring every pair and writing the runs;
the one shared data/feature load is done before timing. Points: test-split gold accuracy vs EO violation.
Writes bench/results/vs_fairlearn.{md,html,png}; with --json the last stdout line is
``{"time_ratio": ..., "time_ratio_last_iterate": ..., "time_ratio_serial": ..., "time_ratio_linear": ...,
"faro_front_dominated": ...,
"faro_front_dominated_last_iterate": ..., "faro_s_per_run": ..., "bt_head_fit_s": ...,
"fairlearn_s_per_fit": ..., "fairlearn_linear_s_per_fit": ...}`` (``faro_front_dominated``: by the points of
either fairlearn side).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from typing import Any

import numpy as np
import pandas as pd
from _common import RESULTS, Benchmark, bbq_source, finish, fmt_spread, machine_line, md_table

EPSILONS = [0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5]
WARMUP_EPSILON = 0.04  # not in either grid
QUICK_EPSILONS = [0.05, 0.2]
FARO_SIDE = "faro"  # the side column of the comparison: Faro's runs (not a method name: fairlearn is the other side)


def dominated(front: pd.DataFrame, others: pd.DataFrame, acc: str = "gold_accuracy",
              viol: str = "violation_eo") -> bool:
    """True when every point of ``front`` is dominated by some point of ``others`` (accuracy >= and violation
    <=, one strictly)."""
    for _, p in front.iterrows():
        a, v = others[acc].to_numpy(), others[viol].to_numpy()
        if not np.any((a >= p[acc]) & (v <= p[viol]) & ((a > p[acc]) | (v < p[viol]))):
            return False
    return True


def figure(faro: pd.DataFrame, fl: pd.DataFrame, fl_lin: pd.DataFrame, title: str,
           faro_last: pd.DataFrame | None = None) -> Any:
    """The fronts (gold accuracy vs EO violation) in one plotly figure, every point shown, fronts as lines."""
    import plotly.graph_objects as go

    from faro_core.results.pareto import pareto_front

    fig = go.Figure()
    styles = {"Faro (EO)": ("#1f77b4", "circle"), "Faro (EO), last iterate": ("#2ca02c", "square"),
              "Faro (DP, CF)": ("#9ecae1", "circle-open"),
              "fairlearn ExponentiatedGradient, same MLP head (EO)": ("#d62728", "diamond"),
              "fairlearn ExponentiatedGradient, logistic regression (EO)": ("#ff9896", "diamond-open")}
    groups = {"Faro (EO)": faro[faro["constraint"] == "eo"],
              "Faro (EO), last iterate": faro_last if faro_last is not None else faro.iloc[:0],
              "Faro (DP, CF)": faro[faro["constraint"] != "eo"],
              "fairlearn ExponentiatedGradient, same MLP head (EO)": fl,
              "fairlearn ExponentiatedGradient, logistic regression (EO)": fl_lin}
    for name, g in groups.items():
        color, symbol = styles[name]
        fig.add_trace(go.Scatter(x=g["violation_eo"], y=g["gold_accuracy"], mode="markers", name=name,
                                 marker={"color": color, "symbol": symbol, "size": 9},
                                 text=[f"{r.constraint} ε={r.epsilon:g}" for r in g.itertuples()],
                                 hovertemplate="%{text}<br>EO violation %{x:.3f}<br>gold acc %{y:.3f}"))
        if name != "Faro (DP, CF)" and len(g):
            idx = pareto_front(g["gold_accuracy"].to_numpy(), g["violation_eo"].to_numpy())
            f = g.iloc[idx]
            fig.add_trace(go.Scatter(x=f["violation_eo"], y=f["gold_accuracy"], mode="lines", showlegend=False,
                                     line={"color": color, "shape": "hv"}, hoverinfo="skip"))
    fig.update_layout(title=title, xaxis_title="EO violation (test split, max one-sided)",
                      yaxis_title="gold accuracy (test split)", template="plotly_white", width=900, height=560,
                      legend={"orientation": "h", "y": -0.18})
    return fig


CHECK_EPSILONS = (0.02, 0.1)


def bare_head_fits(config: Any, epochs: int, n: int) -> list[float]:
    """Seconds of ``n`` plain Bradley-Terry fits of the MLP head on the training pairs
    (:class:`~faro_core.train.expgrad.PairHeadClassifier`, what fairlearn's reduction calls each round, with
    Faro's epochs, batch and learning rate): a fit with no constraint, validation or files, the floor under
    a Faro run of the same epochs."""
    from faro_core.train import FaroConfig
    from faro_core.train.backends import HeadBackend
    from faro_core.train.expgrad import PairHeadClassifier
    from faro_core.train.inputs import load_training_data

    cfg = FaroConfig(**{**config.to_dict(), "epochs": epochs}).resolved()
    _, df, _ = load_training_data(cfg)
    be = HeadBackend(cfg, df, progress=False)
    tr = np.flatnonzero((df["split"] == "train").to_numpy())
    X = np.hstack([be.x_c[tr].numpy(), be.x_r[tr].numpy()])
    y = np.ones(len(tr), dtype=int)
    y[::2] = 0  # both classes, as the reduction's relabelled pairs have
    X[::2] = np.hstack([be.x_r[tr[::2]].numpy(), be.x_c[tr[::2]].numpy()])
    est = PairHeadClassifier(hidden=cfg.head_hidden, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        est.fit(X, y)
        out.append(time.perf_counter() - t0)
    return out


def seed_check(base: dict[str, Any], epochs: int, n_seeds: int, store: Any, train_one: Any) -> pd.DataFrame:
    """Test-split gold accuracy and EO violation of BT, Faro-EO and fairlearn fitting the MLP head, for training
    seeds 1..``n_seeds`` at ``CHECK_EPSILONS``: one seed's front says little when the sides differ by a point."""
    from faro_core.train import FaroConfig

    out = []
    for seed in range(1, n_seeds + 1):
        kw = {**base, "seed": seed, "epochs": epochs}
        # "last iterate": Faro returns the iterate most accurate on validation, fairlearn's heads their last one
        sides = [("BT", FaroConfig(**kw, method="bt")), ("BT, last iterate", FaroConfig(**kw, method="bt", select="last"))]
        for eps in CHECK_EPSILONS:
            sides += [(f"Faro-EO ε={eps:g}", FaroConfig(**kw, constraints=["eo"], epsilon=eps)),
                      (f"fairlearn EO, MLP head, ε={eps:g}",
                       FaroConfig(**kw, method="expgrad", expgrad_base="head", constraints=["eo"], epsilon=eps))]
        for name, cfg in sides:
            r = train_one(cfg, store)
            out.append({"model": name, "seed": seed, "gold_accuracy": r["gold_accuracy"],
                        "violation_eo": r["violation_eo"]})
    return pd.DataFrame(out, columns=["model", "seed", "gold_accuracy", "violation_eo"])


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    from faro_core.results.pareto import pareto_front
    from faro_core.results.plots import save_figure
    from faro_core.store.runs import RunStore
    from faro_core.studies.inprocess import SharedInputs, train_inprocess
    from faro_core.studies.sweep import run_batch_job
    from faro_core.train import FaroConfig
    from faro_core.train.backends import HeadBackend

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="under a minute: 2 epsilons, 2 epochs")
    ap.add_argument("--epochs", type=int, default=None, help="Faro head epochs (default 10; --quick 2)")
    ap.add_argument("--seed-check", type=int, default=None,
                    help="seeds 1..N of BT, Faro-EO and fairlearn with the MLP head at ε 0.02 and 0.1, after the "
                         "timed sweep, so the fronts are compared on seed means (default 3; --quick 0)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    eps_list = QUICK_EPSILONS if args.quick else EPSILONS
    epochs = args.epochs or (2 if args.quick else 10)
    data, fmt, label = bbq_source()
    base: dict[str, Any] = dict(data=data, format=fmt, mode="head", seed=0, strata=[], min_count=10)
    root = tempfile.mkdtemp(prefix="faro-bench-vsfl-")
    store = RunStore(root)
    faro_t: list[float] = []  # Faro's batched sweep (default selection)
    faro_last_t: list[float] = []  # the same with the last iterate selected
    faro_serial_t: list[float] = []  # the same sweep trained one run after another
    fl_t: list[float] = []  # fairlearn fitting Faro's MLP head
    fl_lin_t: list[float] = []  # fairlearn fitting logistic regression
    rows: list[dict[str, Any]] = []
    try:
        inputs = SharedInputs()
        warm = FaroConfig(**base).resolved()  # the shared load, not timed (both sides use it)
        HeadBackend(warm, inputs.load(warm)[1], progress=False, feature_cache=inputs.feature_cache)

        def faro_sweep(eps_grid: list[float], side: str, times: list[float] | None, **kw: Any) -> None:
            """Faro's sweep (3 constraints x the epsilons) as `faro sweep` trains it by default: one batch."""
            cfgs = [FaroConfig(**base, constraints=[k], epsilon=e, epochs=epochs, **kw).to_dict()
                    for k in ("dp", "eo", "cf") for e in eps_grid]
            t0 = time.perf_counter()
            out = run_batch_job(cfgs, str(store.root), evaluate=False, inputs=inputs)
            if times is not None:
                times.append(time.perf_counter() - t0)
                rows.extend({**r, "side": side} for r in out)

        def faro_serial(eps_grid: list[float]) -> None:
            t0 = time.perf_counter()
            for e in eps_grid:
                for kind in ("dp", "eo", "cf"):
                    train_inprocess(FaroConfig(**{**base, "seed": 7}, constraints=[kind], epsilon=e, epochs=epochs),
                                    store, inputs)
            faro_serial_t.append(time.perf_counter() - t0)

        def fairlearn_side(eps: float, record: bool = True) -> None:
            for side, fl_base, times in (("fairlearn", "head", fl_t), ("fairlearn_linear", "linear", fl_lin_t)):
                t0 = time.perf_counter()
                cfg = FaroConfig(**base, method="expgrad", constraints=["eo"], epsilon=eps, epochs=epochs,
                                 expgrad_base=fl_base)
                row = train_inprocess(cfg, store, inputs)
                if record:
                    rows.append({**row, "side": side})
                    times.append(time.perf_counter() - t0)

        # one untimed round at an epsilon outside the grid: the first run of a code path in a process pays
        # its one-off costs (measured: the first Faro triple 1.77 s, the next ones 0.57 s)
        faro_sweep([WARMUP_EPSILON], "warm", None)
        fairlearn_side(WARMUP_EPSILON, record=False)
        # Faro's sweeps sit between the two halves of fairlearn's runs, so drifting load hits both sides
        half = len(eps_list) // 2
        for eps in eps_list[:half]:
            fairlearn_side(eps)
        faro_sweep(eps_list, "faro", faro_t)
        faro_sweep(eps_list, "faro_last", faro_last_t, select="last")  # fairlearn's rule: the last iterate
        faro_serial(eps_list)  # the same sweep one run after another (seed 7: not the batch's runs)
        for eps in eps_list[half:]:
            fairlearn_side(eps)
        bt_fits = bare_head_fits(warm, epochs, 3)
        n_check = args.seed_check if args.seed_check is not None else (0 if args.quick else 3)
        checks = seed_check(base, epochs, n_check, store, lambda c, s: train_inprocess(c, s, inputs))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    table = pd.DataFrame(rows)
    faro, fl = table[table["side"] == FARO_SIDE], table[table["side"] == "fairlearn"]
    fl_lin = table[table["side"] == "fairlearn_linear"]
    faro_eo = faro[faro["constraint"] == "eo"]
    front = faro_eo.iloc[pareto_front(faro_eo["gold_accuracy"].to_numpy(), faro_eo["violation_eo"].to_numpy())]
    is_dom = dominated(front, pd.concat([fl, fl_lin]))
    faro_last = table[(table["side"] == "faro_last") & (table["constraint"] == "eo")]
    front_last = faro_last.iloc[pareto_front(faro_last["gold_accuracy"].to_numpy(),
                                             faro_last["violation_eo"].to_numpy())]
    is_dom_last = dominated(front_last, pd.concat([fl, fl_lin]))
    ratio = sum(faro_t) / sum(fl_t)
    ratio_last = sum(faro_last_t) / sum(fl_t)
    ratio_serial = sum(faro_serial_t) / sum(fl_t)
    ratio_lin = sum(faro_t) / sum(fl_lin_t)
    RESULTS.mkdir(parents=True, exist_ok=True)
    save_figure(figure(faro, fl, fl_lin, f"{label}: Faro head mode vs fairlearn ExponentiatedGradient",
                       faro_last=faro_last), RESULTS / "vs_fairlearn")
    n_faro = len(faro)
    per_run = sum(faro_t) / n_faro
    timing = [[f"Faro sweep, batched (3 constraints × {len(eps_list)} ε = {n_faro} runs, one batch)",
               f"{sum(faro_t):.1f}", f"{per_run:.3f}"],
              ["Faro sweep, batched, last iterate selected", f"{sum(faro_last_t):.1f}",
               f"{sum(faro_last_t) / n_faro:.3f}"],
              ["Faro sweep, one run after another (reference)", f"{sum(faro_serial_t):.1f}",
               f"{sum(faro_serial_t) / n_faro:.3f}"],
              [f"fairlearn ExponentiatedGradient, Faro's MLP head ({len(eps_list)} ε, EO)", f"{sum(fl_t):.1f}",
               fmt_spread(fl_t, 1.0, 2)],
              [f"fairlearn ExponentiatedGradient, logistic regression ({len(eps_list)} ε, EO)",
               f"{sum(fl_lin_t):.1f}", fmt_spread(fl_lin_t, 1.0, 2)],
              ["**Faro batched / fairlearn (same MLP head)**", f"**{ratio:.3f}**", ""],
              ["Faro batched, last iterate / fairlearn (same MLP head)", f"{ratio_last:.3f}", ""],
              ["Faro one run after another / fairlearn (same MLP head)", f"{ratio_serial:.3f}", ""],
              ["Faro batched / fairlearn (logistic regression)", f"{ratio_lin:.3f}", ""],
              ["one plain BT fit of the same head (no constraint, validation or files; not in the ratios)",
               f"{sum(bt_fits):.1f}", fmt_spread(bt_fits, 1.0, 2)]]
    pts = []
    for eps in eps_list:
        r = {k: table[(table["side"] == s) & (table["constraint"] == c) & np.isclose(table["epsilon"], eps)]
             for k, s, c in (("eo", "faro", "eo"), ("last", "faro_last", "eo"), ("fl", "fairlearn", "eo"),
                             ("lin", "fairlearn_linear", "eo"))}
        cell = {k: (f"{v['gold_accuracy'].iloc[0]:.3f} / {v['violation_eo'].iloc[0]:.3f}" if len(v) else "–")
                for k, v in r.items()}
        pts.append([f"{eps:g}", cell["eo"], cell["last"], cell["fl"], cell["lin"]])
    check_text, check_json = "", {}
    if len(checks):
        agg = checks.groupby("model", sort=False).agg(gold=("gold_accuracy", "mean"), eo=("violation_eo", "mean"),
                                                      golds=("gold_accuracy", list))
        check_json = {m: {"gold_accuracy": round(float(r.gold), 4), "violation_eo": round(float(r.eo), 4)}
                      for m, r in agg.iterrows()}
        check_text = (f"Seed check (not timed): training seeds 1–{checks['seed'].max()}, test split, means over "
                      "seeds (gold accuracy per seed in brackets):\n\n"
                      + md_table(["model", "gold accuracy", "EO violation", "per seed"],
                                 [[m, f"{r.gold:.3f}", f"{r.eo:.3f}", ", ".join(f"{g:.3f}" for g in r.golds)]
                                  for m, r in agg.iterrows()]) + "\n\n")
    cfg_r = FaroConfig(**base, epochs=epochs).resolved()
    body = (f"Data: {label}, cached all-MiniLM-L6-v2 features (max length 256). Faro: head mode, MLP head "
            f"({cfg_r.head_hidden} hidden), batch {cfg_r.batch_size}, constraint batch {cfg_r.constraint_batch_size}, "
            f"{cfg_r.epochs} epochs, one process. fairlearn: ExponentiatedGradient, EO on pairs, max_iter 30, "
            f"fitting each round either the same MLP head (same epochs, batch and learning rate; its mixture of "
            f"heads is kept as one wider head) or LogisticRegression on feature differences. Groups unconditioned (no strata), cells of ≥ 10 pairs. Faro's sweeps (batched as `faro sweep` trains them: the 30 runs as one batch, once with Faro's selection and once with the last iterate; and, for reference, one run after another) are timed between the two halves of fairlearn's runs, after one untimed round of each; seconds: total and per run (fairlearn: median [IQR]); the headline ratio is total over total. "
            f"{machine_line()}.\n\n"
            + md_table(["side", "total s", "s per run"], timing)
            + "\n\nTest split, gold accuracy / EO violation:\n\n"
            + md_table(["ε", "Faro-EO", "Faro-EO, last iterate", "fairlearn EO, MLP head",
                        "fairlearn EO, logistic regression"], pts)
            + f"\n\nGoal ≤ 0.1 (at full length; an earlier goal was 0.05): "
            f"**{'met' if ratio <= 0.1 else 'not met'}** against fairlearn fitting the same "
            f"MLP head ({ratio:.3f} under Faro's selection, {ratio_last:.3f} with the last iterate; "
            f"≤ 0.05: {'met' if ratio <= 0.05 else 'not met'}); "
            f"**{'met' if ratio_lin <= 0.1 else 'not met'}** against fairlearn fitting "
            f"logistic regression ({ratio_lin:.3f}), whose models are much less accurate. Faro's EO front "
            f"({len(front)} points) is **{'dominated' if is_dom else 'not dominated'}** by fairlearn's points "
            "(either side). With the same selection as fairlearn's (the last iterate, `select=\"last\"`) "
            f"its front ({len(front_last)} points) is **{'dominated' if is_dom_last else 'not dominated'}**"
            ": Faro returns the iterate most accurate on validation, which over 10 epochs is often an earlier "
            "one (the seed check below). "
            "Figure: `bench/results/vs_fairlearn.html` (and `.png`).\n\n"
            + check_text
            + "Produced by `python bench/vs_fairlearn.py" + (" --quick" if args.quick else "") + "`.")
    finish("vs_fairlearn", "Faro sweep vs fairlearn ExponentiatedGradient", body,
           {"time_ratio": round(ratio, 4), "time_ratio_last_iterate": round(ratio_last, 4),
            "time_ratio_serial": round(ratio_serial, 4), "time_ratio_linear": round(ratio_lin, 4),
            "quick": bool(args.quick), "engine": "batched",
            "faro_front_dominated": bool(is_dom), "faro_front_dominated_last_iterate": bool(is_dom_last),
            "faro_s_per_run": round(per_run, 3),
            "bt_head_fit_s": round(float(np.median(bt_fits)), 3),
            "fairlearn_s_per_fit": round(float(np.median(fl_t)), 3),
            "fairlearn_linear_s_per_fit": round(float(np.median(fl_lin_t)), 3), "seed_check": check_json},
           args.json)
    return 0


BENCH = Benchmark("vs_fairlearn", "speed", "Faro's head-mode sweep against fairlearn's ExponentiatedGradient",
                  run=main)

if __name__ == "__main__":
    raise SystemExit(BENCH.run())
