"""Plotly figures in a self-contained HTML file, with plotly.js loaded once and small.

The full plotly.js is 4.8 MB; a report only draws cartesian traces (scatter, bar, violin, box), so it embeds
plotly.js's official *cartesian* partial bundle (v4.1.1, MIT licence, ``assets/LICENSE-plotly.js``), stored
gzip-compressed (``assets/plotly-cartesian-4.1.1.min.js.gz``, 0.5 MB; 1.5 MB unpacked) and inlined once as
base64 (0.66 MB). The browser unpacks it with ``DecompressionStream('gzip')`` (every current browser) and then
draws each figure from its JSON: no CDN, no network, works offline and inside an ``iframe``
(the dashboard's preview).

Usage: ``figure_block(fig)`` for each figure (a ``<div>`` and its JSON), then :func:`plotly_loader` once at
the end of ``<body>``.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
from functools import lru_cache
from pathlib import Path
from typing import Any

ASSET = Path(__file__).resolve().parent / "assets" / "plotly-cartesian-4.1.1.min.js.gz"
# SHA-256 of the unpacked bundle as published on npm (plotly.js-cartesian-dist-min@4.1.1)
ASSET_SHA256 = "79542150855a52c567260e3137095dbe2b744e6d702a5cabe67da246942fba7a"
_ids = itertools.count()


@lru_cache(maxsize=1)
def _bundle_base64() -> str:
    import gzip

    from faro_core.errors import FaroError

    try:
        packed = ASSET.read_bytes()
    except OSError as exc:
        raise FaroError(f"the report's plotly.js bundle is missing ({ASSET}): reinstall faro") from exc
    if hashlib.sha256(gzip.decompress(packed)).hexdigest() != ASSET_SHA256:
        raise FaroError(f"{ASSET} does not match the published plotly.js cartesian bundle; reinstall faro")
    return base64.b64encode(packed).decode("ascii")


def figure_block(fig: Any, height: int | None = None) -> str:
    """One figure as ``<div>`` + ``<script type="application/json">`` (drawn by :func:`plotly_loader`)."""
    import plotly.io as pio

    div = f"faro-fig-{next(_ids)}"
    spec = pio.to_json(fig, validate=False, pretty=False).replace("</", "<\\/")  # no early </script>
    h = height or (fig.layout.height if fig.layout.height else 450)
    return (f"<div id='{div}' class='faro-fig' style='min-height:{int(h)}px'>"
            "<p class='muted'>loading figure…</p></div>"
            f"<script type='application/json' class='faro-fig-spec' data-target='{div}'>{spec}</script>")


def plotly_loader() -> str:
    """The compressed plotly.js bundle and the script that unpacks it and draws every figure block."""
    return (f"<script type='application/octet-stream' id='faro-plotly-gz'>{_bundle_base64()}</script>"
            "<script>(async function(){"
            "const b=atob(document.getElementById('faro-plotly-gz').textContent.trim());"
            "const u=new Uint8Array(b.length);for(let i=0;i<b.length;i++)u[i]=b.charCodeAt(i);"
            "const s=new Blob([u]).stream().pipeThrough(new DecompressionStream('gzip'));"
            "const code=await new Response(s).text();(0,eval)(code);"
            "for(const el of document.querySelectorAll('script.faro-fig-spec')){"
            "const f=JSON.parse(el.textContent);const d=document.getElementById(el.dataset.target);d.innerHTML='';"
            "await Plotly.newPlot(d,f.data,f.layout||{},{displaylogo:false,responsive:true});}"
            "})().catch(function(e){for(const d of document.querySelectorAll('.faro-fig'))"
            "d.textContent='This browser could not draw the figures ('+e+'); open the report in a current "
            "browser.';});</script>")
