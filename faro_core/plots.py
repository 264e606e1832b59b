"""Plotly figures shared by the dashboard and the reports. Each function takes plain tables and returns a
``plotly.graph_objects.Figure``; none of them computes metrics (that is :mod:`faro_core.sweep` /
:mod:`faro_core.evaluate`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from faro_core.sweep import CONSTRAINED_METHODS


def _color(family: str) -> str:
    """The method's colour (one per method everywhere: :func:`faro_core.plots_groups.method_color`)."""
    from faro_core.plots_groups import method_color

    return method_color(family)


def pareto_figure(sweep_table: pd.DataFrame, kind: str = "dp", accuracy: str = "gold_accuracy",
                  title: str | None = None):
    """Accuracy vs ``violation_<kind>`` (test split), one marker per configuration (seed mean, 95% CI bars),
    each family's Pareto front as a line. ``sweep_table`` is a sweep table (one row per run)."""
    import plotly.graph_objects as go

    from faro_core.sweep import aggregate, pareto_front

    agg = aggregate(sweep_table)
    vcol = f"violation_{kind}"
    fig = go.Figure()
    for fam, g in agg.groupby("family", sort=False):
        if g["method"].iloc[0] in CONSTRAINED_METHODS and g["constraint"].iloc[0] != kind:
            continue
        g = g.dropna(subset=[accuracy, vcol])
        if g.empty:
            continue
        label = [f"λ={x:g}" if m == "fixed_lambda" else (f"ε={e:g}" if e == e and e != float("inf") else "")
                 for m, e, x in zip(g["method"], g["epsilon"], g["fixed_lambda"])]
        fig.add_trace(go.Scatter(
            x=g[vcol], y=g[accuracy], mode="markers+text", name=fam, text=label, textposition="top center",
            marker={"color": _color(fam), "size": 10, "symbol": "circle" if fam.startswith("faro") else "diamond"},
            error_x={"type": "data", "array": g.get(f"{vcol}_ci"), "visible": True, "thickness": 1},
            error_y={"type": "data", "array": g.get(f"{accuracy}_ci"), "visible": True, "thickness": 1},
        ))
        idx = pareto_front(g[accuracy].to_numpy(), g[vcol].to_numpy())
        if len(idx) > 1:
            fig.add_trace(go.Scatter(x=g[vcol].iloc[idx], y=g[accuracy].iloc[idx], mode="lines",
                                     line={"color": _color(fam), "dash": "dot", "shape": "hv"},
                                     showlegend=False, hoverinfo="skip"))
    fig.update_layout(title=title or f"Accuracy–fairness trade-off ({kind.upper()})",
                      xaxis_title=f"{kind.upper()} violation (test, max one-sided)",
                      yaxis_title=accuracy.replace("_", " "), template="plotly_white", width=900, height=560)
    return fig


def save_figure(fig, path: str | Path) -> list[Path]:
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
