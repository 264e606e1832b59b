"""Plotly figures of the policy stage (used by the dashboard and the benches; no Streamlit here).

- :func:`transfer_figure` — does fairness transfer? Left: the policy's bias score (s_AMB by default) against
  KL(π‖π_ref) as β sweeps, one curve per reward (the reference LM is the point at KL = 0). Right: the
  policy-level group disparity against the reward-level one — one marker per (reward, BBQ category): x =
  the reward's bias rate on that category (share of items where r(biased) > r(counter-biased); 0.5 =
  unbiased), y = the policy's bias score on that category at a fixed β.
- :func:`accuracy_kl_figure` — accuracy against KL, the cost side of the trade-off.

Both take the JSON of ``faro policy`` (``policy.json``): β = ``null`` there means ∞.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from faro_core.train.method_spec import PRIMARY


def _betas(m: Mapping[str, Any]) -> list[float]:
    return [math.inf if b is None else float(b) for b in m["betas"]]


def _fmt_beta(b: float) -> str:
    return "∞" if math.isinf(b) else f"{b:g}"


def _label(name: str, m: Mapping[str, Any]) -> str:
    if name == "reference":
        return "reference LM"
    cons = m.get("constraints") or []
    meth = m.get("method") or ""
    if meth == PRIMARY and cons:  # the primary method's run names its kinds and epsilon
        eps = m.get("epsilon")
        return f"Faro-{'/'.join(c.upper() for c in cons)} (ε={eps}) · {name}" if eps is not None else name
    return f"{meth.upper() or 'run'} · {name}" if meth else name


def _finite(xs: Sequence[Any]) -> np.ndarray:
    return np.array([np.nan if x is None else float(x) for x in xs], dtype=float)


def transfer_figure(result: Mapping[str, Any], metric: str = "s_amb", beta: float = 1.0,
                    title: str | None = None) -> Any:
    """Policy bias vs KL per reward (left) and policy- vs reward-level group disparity at ``beta`` (right).

    ``metric``: ``s_amb`` (default), ``s_dis`` or ``accuracy``. ``beta`` (reward-sd units) picks the
    policy for the right panel; the nearest β in the sweep is used.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    models = result["models"]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12, subplot_titles=(
        f"policy {metric} vs KL(π‖π_ref) as β sweeps",
        f"group disparity: policy {metric} (β≈{_fmt_beta(beta)}) vs reward bias rate"))
    palette = ["#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692", "#B6E880"]
    for ci, (name, m) in enumerate(models.items()):
        color = "#444" if name == "reference" else palette[ci % len(palette)]
        bs = _betas(m)
        kl, y = _finite(m["kl"]), _finite(m[metric])
        if name == "reference":
            fig.add_trace(go.Scatter(x=[0.0], y=[y[-1]], mode="markers", name=_label(name, m),
                                     marker={"symbol": "star", "size": 14, "color": color},
                                     hovertemplate=f"reference LM<br>{metric}=%{{y:.3f}}<extra></extra>"),
                          row=1, col=1)
            continue
        fig.add_trace(go.Scatter(x=kl, y=y, mode="lines+markers", name=_label(name, m), line={"color": color},
                                 text=[f"β={_fmt_beta(b)}" for b in bs],
                                 hovertemplate="%{text}<br>KL=%{x:.4f} nats<br>" + metric
                                               + "=%{y:.3f}<extra>" + name + "</extra>"),
                      row=1, col=1)
        finite = [i for i, b in enumerate(bs) if math.isfinite(b)]
        if not finite or "by_group" not in m:
            continue
        bi = min(finite, key=lambda i: abs(math.log(bs[i] + 1e-12) - math.log(beta + 1e-12)))
        rb = m.get("reward_bias_by_group") or {}
        xs, ys, names = [], [], []
        for g, gm in m["by_group"].items():
            key = "bias_rate_amb" if metric == "s_amb" else "bias_rate_dis" if metric == "s_dis" else "bias_rate"
            if g in rb and rb[g].get(key) is not None:
                xs.append(rb[g][key])
                ys.append(gm[metric][bi])
                names.append(g)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers+text", text=names, textposition="top center",
                                 marker={"color": color, "size": 10}, showlegend=False,
                                 hovertemplate="%{text}<br>reward bias rate=%{x:.3f}<br>policy " + metric
                                               + "=%{y:.3f}<extra>" + name + f" β={_fmt_beta(bs[bi])}</extra>"),
                      row=1, col=2)
    fig.add_hline(y=0, line={"dash": "dot", "color": "#999"}, row=1, col=1)
    fig.add_hline(y=0, line={"dash": "dot", "color": "#999"}, row=1, col=2)
    fig.add_vline(x=0.5, line={"dash": "dot", "color": "#999"}, row=1, col=2)
    fig.update_xaxes(title_text="KL(π‖π_ref) (nats per item)", row=1, col=1)
    fig.update_yaxes(title_text=f"{metric} (0 = unbiased)", row=1, col=1)
    fig.update_xaxes(title_text="reward-level bias rate (0.5 = unbiased)", row=1, col=2)
    fig.update_yaxes(title_text=f"policy-level {metric}", row=1, col=2)
    fig.update_layout(title=title or f"Does fairness transfer? BBQ, {result.get('n_items', '?')} items, "
                                     f"LM {result.get('lm', '?')}",
                      height=480, legend={"orientation": "h", "y": -0.2}, template="plotly_white")
    return fig


def accuracy_kl_figure(result: Mapping[str, Any]) -> Any:
    """BBQ accuracy of π_β against KL(π‖π_ref) per reward (expected values under π)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, m in result["models"].items():
        bs = _betas(m)
        kl, acc = _finite(m["kl"]), _finite(m["accuracy"])
        if name == "reference":
            fig.add_trace(go.Scatter(x=[0.0], y=[acc[-1]], mode="markers", name="reference LM",
                                     marker={"symbol": "star", "size": 14, "color": "#444"}))
            continue
        fig.add_trace(go.Scatter(x=kl, y=acc, mode="lines+markers", name=_label(name, m),
                                 text=[f"β={_fmt_beta(b)}" for b in bs],
                                 hovertemplate="%{text}<br>KL=%{x:.4f}<br>accuracy=%{y:.3f}<extra></extra>"))
    fig.update_layout(xaxis_title="KL(π‖π_ref) (nats per item)", yaxis_title="BBQ accuracy",
                      template="plotly_white", height=420, title="accuracy vs KL")
    return fig


def role_counts_figure(rc: Mapping[str, Any], labels: Mapping[str, str] | None = None,
                       colors: Mapping[str, str] | None = None) -> Any:
    """Share of each reward's best-of-n choices in each class (in words), with the cluster-robust 95 %
    intervals of :func:`faro_core.policy.choices.role_counts` as error bars; one bar group per class."""
    import plotly.graph_objects as go

    from faro_core.policy.mentions import CLASS_WORDS

    fig = go.Figure()
    classes = list(rc["classes"])
    x = [CLASS_WORDS[c] for c in classes]
    for model, e in rc["models"].items():
        v = [e["shares"][c]["value"] for c in classes]
        lo = [e["shares"][c]["lo"] for c in classes]
        hi = [e["shares"][c]["hi"] for c in classes]
        fig.add_trace(go.Bar(
            x=x, y=v, name=(labels or {}).get(model, model),
            marker_color=(colors or {}).get(model),
            error_y=dict(type="data", symmetric=False,
                         array=[h - a if np.isfinite(h) else 0 for h, a in zip(hi, v)],
                         arrayminus=[a - lw if np.isfinite(lw) else 0 for lw, a in zip(lo, v)])))
    fig.update_layout(barmode="group", height=360, margin=dict(l=40, r=10, t=40, b=40),
                      title=f"What each reward's best-of-n reply names ({rc['n_prompts']} prompts)",
                      yaxis_title="share of prompts", legend_title_text="reward")
    return fig
