"""Plotly figures for per-group views, training curves, the Pareto front and policy results.

Shared by the dashboard and the HTML report (:mod:`faro_core.results.report`). Inputs are the frames of
:mod:`faro_core.results.views`; every function returns a ``plotly.graph_objects.Figure`` and does no I/O.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from faro_core.train import methods

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]
REFERENCE_COLOR = "#333333"  # the reference LM in policy figures (not a method)


def method_color(name: str) -> str:
    """The one colour of a method in every figure and page. ``name``: a family label or family key as the
    registry makes them (:func:`faro_core.train.method_spec.family_colors`: ``BT``, ``Faro-DP+CF``,
    ``fixed_lambda-eo``), optionally followed by `` (run id)`` or `` · run id``. Another name gets a colour fixed
    by its text (the same in every process, unlike ``hash``)."""
    base = str(name).split(" (")[0].split(" · ")[0].strip()
    if base == "reference LM":
        return REFERENCE_COLOR
    known = methods.family_colors().get(base)
    return known or PALETTE[zlib.crc32(str(name).split(" (")[0].strip().encode()) % len(PALETTE)]


def _layout(fig: go.Figure, title: str, height: int = 420, **kw: Any) -> go.Figure:
    fig.update_layout(title=title, height=height, template="plotly_white", margin=dict(l=50, r=20, t=50, b=40),
                      legend=dict(orientation="h", yanchor="top", y=-0.18, x=0), **kw)
    return fig


def empty_figure(message: str) -> go.Figure:
    """A blank figure carrying a message (nothing to plot)."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, "", height=200)


def violin_before_after(rewards: dict[str, pd.DataFrame], title: str = "Reward by group") -> go.Figure:
    """Split violins of standardized rewards per group; ``rewards`` maps a model label to
    :func:`faro_core.results.views.response_rewards` output (first = 'before', second = 'after')."""
    fig = go.Figure()
    sides = ["negative", "positive"]
    for i, (label, df) in enumerate(rewards.items()):
        fig.add_trace(go.Violin(x=df["group"], y=df["reward"], name=label, legendgroup=label,
                                side=sides[i % 2] if len(rewards) == 2 else None, scalegroup=label,
                                line_color=method_color(label), meanline_visible=True, points=False,
                                spanmode="hard"))
    fig.update_layout(violingap=0, violinmode="overlay" if len(rewards) == 2 else "group")
    fig.update_yaxes(title="reward over its pair partner (sd units)")
    fig.update_xaxes(title="group named by the response", tickangle=-30)
    return _layout(fig, title, height=460)


def ecdf_figure(rewards: dict[str, pd.DataFrame], groups: list[str] | None = None,
                title: str = "Reward ECDF by group") -> go.Figure:
    """Empirical CDFs of standardized rewards per group, one line style per model (solid = first)."""
    fig = go.Figure()
    dashes = ["dot", "solid", "dash", "dashdot"]
    all_groups = groups or sorted(set().union(*[set(d["group"]) for d in rewards.values()]))
    for gi, g in enumerate(all_groups):
        color = PALETTE[gi % len(PALETTE)]
        for mi, (label, df) in enumerate(rewards.items()):
            x = np.sort(df.loc[df["group"] == g, "reward"].to_numpy())
            if len(x) == 0:
                continue
            y = np.arange(1, len(x) + 1) / len(x)
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines", line=dict(color=color, dash=dashes[mi % 4]),
                                     name=f"{g} · {label}", legendgroup=str(g), line_shape="hv"))
    fig.update_xaxes(title="reward over its pair partner (sd units)")
    fig.update_yaxes(title="fraction of responses ≤ x", range=[0, 1])
    return _layout(fig, title, height=460)


def group_accuracy_bars(acc: dict[str, pd.DataFrame], by: str = "group", column: str = "accuracy",
                        title: str = "Pairwise accuracy by group") -> go.Figure:
    """Grouped bars of per-group accuracy (±1 s.e.) per model; ``acc`` maps a label to
    :func:`faro_core.results.views.group_accuracy` output."""
    fig = go.Figure()
    for label, df in acc.items():
        fig.add_trace(go.Bar(x=df[by].astype(str), y=df[column], name=label, marker_color=method_color(label),
                             error_y=dict(type="data", array=df["se"], visible=True),
                             customdata=df["n"], hovertemplate="%{x}: %{y:.3f} (n=%{customdata})"))
    fig.update_layout(barmode="group")
    fig.update_yaxes(title=column.replace("_", " "), range=[0, 1])
    fig.update_xaxes(tickangle=-30)
    return _layout(fig, title)


def reliability_figure(tables: dict[str, pd.DataFrame], title: str = "Reliability diagram") -> go.Figure:
    """Observed preference rate vs predicted σ(r₁−r₂) per bin; one line per (model, group): the model's
    colour, one dash per group."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color="#bbb", dash="dash"),
                             name="perfectly calibrated"))
    dashes = ["solid", "dot", "dash", "dashdot", "longdash"]
    for label, df in tables.items():
        for i, (g, gd) in enumerate(df.groupby("group")):
            name = f"{label} · {g} (ECE {gd['ece'].iloc[0]:.3f})" if g != "all" else \
                f"{label} (ECE {gd['ece'].iloc[0]:.3f})"
            fig.add_trace(go.Scatter(x=gd["predicted"], y=gd["observed"], mode="lines+markers", name=name,
                                     marker=dict(size=np.clip(np.sqrt(gd["n"]) * 2, 4, 18)),
                                     line=dict(color=method_color(label), dash=dashes[i % len(dashes)]),
                                     customdata=gd["n"],
                                     hovertemplate="pred %{x:.2f} → obs %{y:.2f} (n=%{customdata})"))
    fig.update_xaxes(title="predicted P(first response preferred)", range=[0, 1])
    fig.update_yaxes(title="observed rate", range=[0, 1])
    return _layout(fig, title, height=460)


def curves_figure(hist: pd.DataFrame, multipliers: pd.DataFrame | None = None, epsilon: float | None = None,
                  title: str = "Training curves") -> go.Figure:
    """Batch violations (strict) per kind and multipliers (λ) against step, on two y-axes."""
    fig = go.Figure()
    if hist.empty:
        return empty_figure("no history yet")
    for i, col in enumerate([c for c in hist.columns if c.startswith("viol_")]):
        fig.add_trace(go.Scatter(x=hist["step"], y=hist[col], name=f"violation {col[5:].upper()}",
                                 mode="lines", line=dict(color=PALETTE[i])))
    if epsilon is not None and np.isfinite(epsilon):
        fig.add_hline(y=epsilon, line_dash="dash", line_color="#999", annotation_text=f"ε = {epsilon:g}")
    if multipliers is not None and not multipliers.empty:
        for j, (name, g) in enumerate(multipliers.groupby("constraint", sort=False)):
            fig.add_trace(go.Scatter(x=g["step"], y=g["lambda"], name=f"λ {name}", yaxis="y2", mode="lines",
                                     line=dict(dash="dot", color=PALETTE[(j + 3) % len(PALETTE)])))
    elif "lambda_max" in hist and hist["lambda_max"].notna().any():
        fig.add_trace(go.Scatter(x=hist["step"], y=hist["lambda_max"], name="max λ", yaxis="y2", mode="lines",
                                 line=dict(dash="dot", color="#444")))
    fig.update_layout(yaxis2=dict(title="multiplier λ", overlaying="y", side="right", showgrid=False))
    fig.update_yaxes(title="violation (batch)")
    fig.update_xaxes(title="step")
    return _layout(fig, title)


def loss_figure(hist: pd.DataFrame, title: str = "Loss") -> go.Figure:
    """Lagrangian and Bradley–Terry loss against step."""
    if hist.empty:
        return empty_figure("no history yet")
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=hist["step"], y=hist["loss"], name="Lagrangian loss", mode="lines"))
    fig.add_trace(go.Scatter(x=hist["step"], y=hist["bt_loss"], name="BT loss", mode="lines"))
    fig.update_xaxes(title="step")
    return _layout(fig, title, height=320)


def pareto_figure(points: pd.DataFrame, kind: str, title: str | None = None, highlight: str | None = None,
                  split: str = "test", accuracy_title: str = "pairwise accuracy (test)") -> go.Figure:
    """Accuracy vs violation per family with error bars over seeds, ε labels, the frontier and
    certified badges (★). ``points``: :func:`faro_core.results.pareto.pareto_points` (runs of a store) or
    :func:`~faro_core.results.pareto.sweep_points` (a sweep table); ``customdata`` holds the first run id of
    each point so selection events can open it."""
    if points.empty:
        return empty_figure(f"no finished runs with a {kind.upper()} violation yet")
    fig = go.Figure()
    for fam, g in points.groupby("family", sort=False):
        color = method_color(fam)
        g = g.sort_values("violation")
        labels = [("BT" if fam == "BT" else f"ε={e:g}" if np.isfinite(e) else "ε=∞") for e in g["epsilon"]]
        symbols = ["star" if c is True else "circle" for c in g["certified"]]
        fig.add_trace(go.Scatter(
            x=g["violation"], y=g["accuracy"], mode="markers+text", name=fam, text=labels,
            textposition="top center", marker=dict(color=color, size=12, symbol=symbols,
                                                   line=dict(width=1, color="#333")),
            error_x=dict(type="data", array=g["violation_sd"], visible=bool(g["n_seeds"].gt(1).any())),
            error_y=dict(type="data", array=g["accuracy_sd"], visible=bool(g["n_seeds"].gt(1).any())),
            customdata=np.array([[r[0] if len(r) else "", n, "certified" if c is True else "not certified" if c is False else
                                  "no certificate"] for r, n, c in zip(g["run_ids"], g["n_seeds"], g["certified"])],
                                dtype=object),
            hovertemplate="%{customdata[0]}<br>violation %{x:.3f}<br>accuracy %{y:.3f}<br>"
                          "seeds %{customdata[1]} · %{customdata[2]}<extra></extra>"))
    front = points[points["on_front"]].sort_values("violation")
    fig.add_trace(go.Scatter(x=front["violation"], y=front["accuracy"], mode="lines", name="Pareto front",
                             line=dict(color="#444", dash="dash", shape="hv"), hoverinfo="skip"))
    if highlight is not None:
        h = points[points["run_ids"].map(lambda ids: highlight in ids)]
        if not h.empty:
            fig.add_trace(go.Scatter(x=h["violation"], y=h["accuracy"], mode="markers", name="selected",
                                     marker=dict(size=22, color="rgba(0,0,0,0)", line=dict(width=3, color="#f0a"))))
    fig.update_xaxes(title=f"{kind.upper()} violation on the {split} split (lower is fairer)")
    fig.update_yaxes(title=accuracy_title)
    return _layout(fig, title or f"Accuracy vs {kind.upper()} violation  (★ = certified)", height=480)


def policy_figure(frame: pd.DataFrame, metric: str = "s_amb", beta: float | None = None,
                  title: str | None = None, colors: dict[str, str] | None = None) -> go.Figure:
    """A policy metric (``s_amb``, ``s_dis``, ``accuracy``, ``kl``) against β per model (log x); ``colors``
    maps a model (run id) to its method's colour (:func:`method_color` of its family)."""
    if frame.empty:
        return empty_figure("no policy results")
    fig = go.Figure()
    f = frame[np.isfinite(frame["beta"])]
    used: dict[str, int] = {}
    dashes = ["solid", "dot", "dashdot", "longdash", "longdashdot"]
    for model, g in f.groupby("model", sort=False):
        color = (colors or {}).get(model) or method_color(model)
        k = used[color] = used.get(color, -1) + 1  # runs of one method: its colour, one dash each
        fig.add_trace(go.Scatter(x=g["beta"], y=g[metric], mode="lines+markers", name=model,
                                 line=dict(color=color, dash="dash" if model == "reference LM" else
                                           dashes[k % len(dashes)])))
    if beta is not None:
        fig.add_vline(x=beta, line_dash="dot", line_color="#f0a")
    fig.update_xaxes(type="log", title="β (reward sd units; small β = follow the reward)")
    fig.update_yaxes(title=metric)
    return _layout(fig, title or f"{metric} of the policy π_β", height=380)


def figure_html(fig: go.Figure, include_plotlyjs: bool | str = False, div_id: str | None = None) -> str:
    """A figure as an HTML fragment (``include_plotlyjs=True`` embeds plotly.js inline: no CDN)."""
    return fig.to_html(full_html=False, include_plotlyjs=include_plotlyjs, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


def fronts_figure(fronts: pd.DataFrame, title: str | None = None, highlight: str | None = None) -> go.Figure:
    """DP, EO and CF fronts side by side: small multiples sharing one accuracy axis, each with its own
    violation axis. Markers: one colour per method (:func:`method_color`), ★ where every seed is certified,
    error bars ±1 sd over seeds; the hover also shows the run's violation of the other kinds. ``customdata[0]``
    of every point is its first run id (a selection opens it). ``fronts``: :func:`faro_core.results.pareto.constraint_fronts`."""
    from plotly.subplots import make_subplots

    if fronts.empty:
        return empty_figure("no finished runs with a violation yet")
    kinds = [k for k in ("dp", "eo", "cf") if (fronts["kind"] == k).any()]
    names = {"dp": "demographic parity", "eo": "equalized odds", "cf": "counterfactual"}
    fig = make_subplots(rows=1, cols=len(kinds), shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=[f"{names[k]} ({k.upper()})" for k in kinds])
    seen: set[str] = set()
    for c, kind in enumerate(kinds, start=1):
        sub = fronts[fronts["kind"] == kind]
        for fam, g in sub.groupby("family", sort=False):
            g = g.sort_values("violation")
            others = [o for o in ("dp", "eo", "cf") if o != kind]
            cd = np.array([[ids[0], n, "certified" if cert is True else "not certified" if cert is False
                            else "no certificate", *[f"{row[f'other_{o}']:.3f}" if row[f"other_{o}"] == row[f"other_{o}"]
                                                    else "—" for o in others]]
                           for ids, n, cert, (_, row) in zip(g["run_ids"], g["n_seeds"], g["certified"], g.iterrows())],
                          dtype=object)
            labels = ["" if fam == "BT" else f"ε={e:g}" if np.isfinite(e) else "" for e in g["epsilon"]]
            fig.add_trace(go.Scatter(
                x=g["violation"], y=g["accuracy"], mode="markers+text", name=fam, legendgroup=fam,
                showlegend=fam not in seen, text=labels, textposition="top center", textfont=dict(size=10),
                marker=dict(color=method_color(fam), size=16 if not fam.startswith("Faro-") else 11,
                            line=dict(width=2 if not fam.startswith("Faro-") else 1, color="#333"),
                            symbol=["star" if x is True else "circle" if fam.startswith("Faro-") else
                                    "diamond-open" for x in g["certified"]]),
                error_x=dict(type="data", array=g["violation_sd"], visible=bool(g["n_seeds"].gt(1).any()),
                             thickness=1),
                error_y=dict(type="data", array=g["accuracy_sd"], visible=bool(g["n_seeds"].gt(1).any()),
                             thickness=1),
                customdata=cd,
                hovertemplate=(f"{fam}<br>%{{customdata[0]}}<br>{kind.upper()} violation %{{x:.3f}}<br>"
                               "accuracy %{y:.3f}<br>seeds %{customdata[1]} · %{customdata[2]}<br>"
                               f"{others[0].upper()} %{{customdata[3]}} · {others[1].upper()} %{{customdata[4]}}"
                               "<extra></extra>")), row=1, col=c)
            seen.add(fam)
        front = sub[sub["on_front"]].sort_values("violation")
        if len(front) > 1:
            fig.add_trace(go.Scatter(x=front["violation"], y=front["accuracy"], mode="lines", showlegend=False,
                                     line=dict(color="#999", dash="dash", shape="hv"), hoverinfo="skip"), row=1, col=c)
        if highlight is not None:
            h = sub[sub["run_ids"].map(lambda ids: highlight in ids)]
            if not h.empty:
                fig.add_trace(go.Scatter(x=h["violation"], y=h["accuracy"], mode="markers", showlegend=False,
                                         hoverinfo="skip", marker=dict(size=22, color="rgba(0,0,0,0)",
                                                                        line=dict(width=3, color="#f0a"))),
                              row=1, col=c)
        split = sub["split"].iloc[0]
        fig.update_xaxes(title_text=f"{kind.upper()} violation ({split}; lower is fairer)", row=1, col=c,
                         rangemode="tozero")
    fig.update_yaxes(title_text="pairwise accuracy", row=1, col=1)
    return _layout(fig, title or "Constraint types side by side (★ = certified, bars ±1 sd over seeds)", height=460)


def story_figure(story: dict[str, Any]) -> go.Figure:
    """The Overview's before/after chart from :func:`faro_core.results.story.build_story`: left, how often each
    reward prefers the stereotyped answer between the two people (ambiguous held-out items; 95% exact
    intervals; 50% = no preference, the band = 50% ± ε allowed, the ▼ marker = Faro's certified upper limit);
    right, gold accuracy with 95% intervals (the cost)."""
    from plotly.subplots import make_subplots

    eps = float(story["epsilon"])
    names = ["BT", story.get("faro_family") or "Faro-DP"]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.14,
                        subplot_titles=["prefers the stereotyped answer (ambiguous questions)",
                                        "accuracy where there is a right answer"])
    for col, key, n_key in ((1, "rate", "questions"), (2, "accuracy", "pairs")):
        vals = [story[key]["bt"], story[key]["faro"]]
        fig.add_trace(go.Bar(
            x=names, y=[100 * v["value"] for v in vals], marker_color=[method_color(n) for n in names],
            text=[f"{100 * v['value']:.0f}%" for v in vals], textposition="inside",
            insidetextanchor="start" if col == 1 else "end",
            textfont=dict(color="white", size=14), showlegend=False,
            error_y=dict(type="data", symmetric=False, array=[100 * (v["hi"] - v["value"]) for v in vals],
                         arrayminus=[100 * (v["value"] - v["lo"]) for v in vals], color="#333"),
            customdata=[[v["n"], 100 * v["lo"], 100 * v["hi"]] for v in vals],
            hovertemplate=f"%{{x}}: %{{y:.1f}}% (95%: %{{customdata[1]:.1f}}–%{{customdata[2]:.1f}}%, "
                          f"n=%{{customdata[0]}} {n_key})<extra></extra>"), row=1, col=col)
    fig.add_hrect(y0=100 * (0.5 - eps), y1=100 * (0.5 + eps), fillcolor="#2ca02c", opacity=0.12, line_width=0,
                  row=1, col=1)
    fig.add_hline(y=50, line_dash="dash", line_color="#222", row=1, col=1, annotation_text="50% = no preference",
                  annotation_position="top left", annotation_font=dict(color="#222", size=11),
                  annotation_bgcolor="rgba(255,255,255,0.85)")
    up = story["certificate"]["faro"].get("upper")
    if up is not None:
        certified = bool(story["certificate"]["faro"].get("certified"))
        fig.add_trace(go.Scatter(
            x=[names[1]], y=[100 * (0.5 + up)], mode="markers+text", showlegend=False,
            marker=dict(symbol="triangle-down", size=14, color="#2ca02c" if certified else "#d62728"),
            text=[f"certified ≤ {100 * (0.5 + up):.0f}%" if certified else
                  f"upper bound {100 * (0.5 + up):.0f}% (not certified at ε = {story['epsilon']:g})"],
            textposition="top center", hovertemplate="95% upper bound of the rate: %{y:.1f}%<extra></extra>"),
            row=1, col=1)
    top = max(100 * story["rate"]["bt"]["hi"], 100 * (0.5 + (up or 0)), 60) + 8
    fig.update_yaxes(title_text="% of questions", range=[0, top], row=1, col=1)
    lo = min(100 * story["accuracy"]["bt"]["lo"], 100 * story["accuracy"]["faro"]["lo"])
    fig.update_yaxes(title_text="gold accuracy (%)", range=[max(0, lo - 15), 100], row=1, col=2)
    fig = _layout(fig, f"Before (BT) and after (Faro, ε = {eps:g}) on {story['rate']['bt']['n']} held-out "
                       f"ambiguous questions; green band: 50% ± ε", height=440)
    fig.update_layout(margin=dict(l=50, r=20, t=90, b=40))
    return fig


ROLE_NAMES = {"biased": "stereotyped answer", "counter": "the other person's answer", "unknown": "“can't tell”"}


def role_violin(rewards: dict[str, pd.DataFrame], title: str = "Reward by stereotype role") -> go.Figure:
    """Split violins of each answer's within-item reward by its role, one side per model (the first is
    'before'); ``rewards``: model label -> :func:`faro_core.results.views.role_rewards`. Tick labels carry n (answers)."""
    fig = go.Figure()
    first = next(iter(rewards.values()))
    counts = first["role"].value_counts().to_dict()
    ticks = {r: f"{ROLE_NAMES[r]} (n={counts.get(r, 0)})" for r in ROLE_NAMES}
    for i, (label, df) in enumerate(rewards.items()):
        fig.add_trace(go.Violin(x=df["role"].map(ticks), y=df["reward"], name=label, legendgroup=label,
                                side=["negative", "positive"][i % 2] if len(rewards) == 2 else None,
                                line_color=method_color(label), meanline_visible=True, points=False, spanmode="hard"))
    fig.update_layout(violingap=0, violinmode="overlay" if len(rewards) == 2 else "group")
    fig.update_yaxes(title="reward within the question (sd units)")
    fig.update_xaxes(categoryorder="array", categoryarray=list(ticks.values()))
    return _layout(fig, title, height=440)


def margin_histogram(margins: dict[str, pd.DataFrame], title: str | None = None) -> go.Figure:
    """Histograms of the within-item margin r_biased − r_counter per model (``margins``: label ->
    :func:`faro_core.results.views.role_margins`), a line at 0 (no preference); the legend gives n and the share > 0."""
    fig = go.Figure()
    for label, df in margins.items():
        m = df["margin"].to_numpy(dtype=float)
        share = float(np.mean(m > 0) + 0.5 * np.mean(m == 0)) if len(m) else float("nan")
        fig.add_trace(go.Histogram(x=m, name=f"{label}: n={len(m)}, {100 * share:.0f}% > 0", opacity=0.55,
                                   marker_color=method_color(label), nbinsx=40))
    fig.add_vline(x=0, line_dash="dash", line_color="#222", annotation_text="no preference")
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title="r(stereotyped answer) − r(other person's answer), sd units (> 0: prefers the stereotype)")
    fig.update_yaxes(title="questions")
    return _layout(fig, title or "Within-question margin, stereotyped vs other person", height=420)


def group_sizes_figure(groups: dict[str, int], labels: dict[str, str] | None = None, small: int | None = None,
                       title: str = "Pairs per group") -> go.Figure:
    """Horizontal bars of each group's pairs, named in words (:func:`faro_core.data.labels.group_label`), largest
    first; groups under ``small`` (default :data:`faro_core.data.labels.SMALL_GROUP_N`) in orange, flagged."""
    from faro_core.data.labels import SMALL_GROUP_N, group_label

    small = SMALL_GROUP_N if small is None else small
    items = sorted(groups.items(), key=lambda kv: kv[1])
    names = [f"{group_label(g, labels)} ({g})" for g, _ in items]
    n = [int(v) for _, v in items]
    fig = go.Figure(go.Bar(x=n, y=names, orientation="h", text=[f"{v}{' · small' if v < small else ''}" for v in n],
                           textposition="outside", marker_color=["#ff7f0e" if v < small else "#1f77b4" for v in n],
                           hovertemplate="%{y}: %{x} pairs<extra></extra>"))
    fig.update_xaxes(title="pairs", range=[0, max(n + [1]) * 1.15])
    fig.update_yaxes(automargin=True)
    return _layout(fig, title + (f" (orange: fewer than {small}, kept but noisy)" if any(v < small for v in n) else ""),
                   height=max(260, 26 * len(n) + 90))


def story_svg(story: dict[str, Any], width: int = 960, height: int = 330) -> str:
    """The same before/after chart as :func:`story_figure`, as a self-contained SVG string (no JavaScript):
    the dashboard's first screen draws it at once, where a plotly chart would first load plotly.js. Hovering a
    bar shows its value, interval and n (SVG ``<title>``)."""
    import html as _h

    eps = float(story["epsilon"])
    names = ["BT", story.get("faro_family") or "Faro-DP"]
    colors = [method_color(n) for n in names]
    rate = [story["rate"]["bt"], story["rate"]["faro"]]
    acc = [story["accuracy"]["bt"], story["accuracy"]["faro"]]
    up = story["certificate"]["faro"].get("upper")
    certified = bool(story["certificate"]["faro"].get("certified"))
    out = [f"<svg class='faro-story' xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}' width='100%' "
           f"style='max-width:{width}px;font-family:sans-serif' role='img' aria-label='{_h.escape(story.get('headline', ''))}'>"]

    def panel(x0: float, w: float, vals: list[dict[str, Any]], lo: float, hi: float, title: str, unit: str,
              extra: Callable[[Callable[[float], float]], list[str]] | None = None) -> None:
        top, bottom = 40.0, height - 40.0
        y = lambda v: bottom - (100 * v - lo) / (hi - lo) * (bottom - top)  # noqa: E731
        out.append(f"<text x='{x0 + w / 2}' y='18' text-anchor='middle' font-size='14' fill='#333'>{_h.escape(title)}</text>")
        for t in range(int(math.ceil(lo / 10) * 10), int(hi) + 1, 10):
            yy = bottom - (t - lo) / (hi - lo) * (bottom - top)
            out.append(f"<line x1='{x0 + 40}' x2='{x0 + w}' y1='{yy:.1f}' y2='{yy:.1f}' stroke='#eee'/>"
                       f"<text x='{x0 + 34}' y='{yy + 4:.1f}' text-anchor='end' font-size='11' fill='#777'>{t}%</text>")
        bw = (w - 40) / 4
        for i, (v, name, col) in enumerate(zip(vals, names, colors)):
            bx = x0 + 40 + bw * (0.5 + 1.5 * i)
            yv, ylo, yhi = y(v["value"]), y(v["lo"]), y(v["hi"])
            over = f" from {v['clusters']} templates" if v.get("clusters") and v["clusters"] != v["n"] else ""
            tip = (f"{name}: {100 * v['value']:.1f}% (95% interval {100 * v['lo']:.1f}–{100 * v['hi']:.1f}%, "
                   f"n={v['n']} {unit}{over})")
            out.append(f"<g><title>{_h.escape(tip)}</title>"
                       f"<rect x='{bx:.1f}' y='{yv:.1f}' width='{bw:.1f}' height='{bottom - yv:.1f}' fill='{col}'/>"
                       f"<line x1='{bx + bw / 2:.1f}' x2='{bx + bw / 2:.1f}' y1='{ylo:.1f}' y2='{yhi:.1f}' "
                       f"stroke='#222' stroke-width='1.5'/>"
                       f"<line x1='{bx + bw / 2 - 6:.1f}' x2='{bx + bw / 2 + 6:.1f}' y1='{yhi:.1f}' y2='{yhi:.1f}' "
                       f"stroke='#222' stroke-width='1.5'/>"
                       f"<line x1='{bx + bw / 2 - 6:.1f}' x2='{bx + bw / 2 + 6:.1f}' y1='{ylo:.1f}' y2='{ylo:.1f}' "
                       f"stroke='#222' stroke-width='1.5'/>"
                       f"<text x='{bx + bw / 2:.1f}' y='{bottom - 8:.1f}' text-anchor='middle' font-size='15' "
                       f"font-weight='bold' fill='white'>{100 * v['value']:.0f}%</text></g>"
                       f"<text x='{bx + bw / 2:.1f}' y='{bottom + 18:.1f}' text-anchor='middle' font-size='13' "
                       f"fill='#333'>{_h.escape(name)}</text>")
        if extra:  # drawn over the bars
            out.extend(extra(y))

    def rate_extra(y: Callable[[float], float]) -> list[str]:
        x0, x1 = 40, 560
        band = (f"<rect x='{x0}' y='{y(0.5 + eps):.1f}' width='{x1 - x0}' height='{y(0.5 - eps) - y(0.5 + eps):.1f}' "
                f"fill='#2ca02c' opacity='0.13'><title>allowed: 50% ± ε = {eps:g}</title></rect>")
        half = (f"<line x1='{x0}' x2='{x1}' y1='{y(0.5):.1f}' y2='{y(0.5):.1f}' stroke='#222' stroke-dasharray='6 4'/>"
                f"<text x='{x1 - 2}' y='{y(0.5) - 5:.1f}' text-anchor='end' font-size='11' fill='#222'>50% = no "
                f"preference</text><text x='{x1 - 2}' y='{y(0.5 + eps) - 4:.1f}' text-anchor='end' font-size='10' "
                f"fill='#2ca02c'>± ε allowed</text>")
        return [band, half]

    top_rate = max(100 * rate[0]["hi"], 100 * rate[1]["hi"], 100 * (0.5 + (up or 0)), 60) + 8
    panel(0, 560, rate, 0, top_rate, "prefers the stereotyped answer (ambiguous questions)", "questions", rate_extra)
    if up is not None:
        top, bottom = 40.0, height - 40.0
        yy = bottom - (100 * (0.5 + up)) / top_rate * (bottom - top)
        bx = 40 + (560 - 40) / 4 * (0.5 + 1.5) + (560 - 40) / 8
        col = "#2ca02c" if certified else "#d62728"
        label = f"certified ≤ {100 * (0.5 + up):.0f}%" if certified else \
            f"upper bound {100 * (0.5 + up):.0f}% (not certified at ε = {story['epsilon']:g})"
        out.append(f"<g><title>95% upper bound of Faro's rate ({story['certificate']['faro'].get('bound')}, "
                   f"δ = {story['certificate']['faro'].get('delta')})</title>"
                   f"<path d='M{bx - 7:.1f},{yy - 12:.1f} L{bx + 7:.1f},{yy - 12:.1f} L{bx:.1f},{yy:.1f} Z' fill='{col}'/>"
                   f"<text x='{bx + 10:.1f}' y='{yy - 2:.1f}' font-size='11' fill='{col}'>{_h.escape(label)}</text></g>")
    lo_acc = max(0.0, min(100 * acc[0]["lo"], 100 * acc[1]["lo"]) - 15)
    panel(600, 340, acc, math.floor(lo_acc / 10) * 10, 100, "accuracy where there is a right answer", "pairs")
    out.append("</svg>")
    return "".join(out)


def save_figure(fig: go.Figure, path: str | Path) -> list[Path]:
    """Write ``fig`` as ``<path>.html`` and, when kaleido can render, ``<path>.png``; returns what was written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = [path.with_suffix(".html")]
    fig.write_html(out[0], include_plotlyjs="cdn")
    try:
        fig.write_image(path.with_suffix(".png"), scale=2)
        out.append(path.with_suffix(".png"))
    except Exception:  # kaleido missing or no browser: the HTML is still there
        pass
    return out
