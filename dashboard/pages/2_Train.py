"""Train page: launch runs in the background through `faro train`, watch the queue live, cancel."""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import streamlit as st  # noqa: E402
from common import guard, history, page, store  # noqa: E402

from faro_core.errors import FaroError  # noqa: E402
from faro_core.results.plots import curves_figure  # noqa: E402
from faro_core.train import launch  # noqa: E402
from faro_core.train.config import MODES, FaroConfig, default_of, parse_values, setting_of  # noqa: E402

page("Train")
st.title("Train")
st.caption("Each run is a background `python -m faro_core train --config … --runs-dir … --run-id …` process "
           "writing to the run store: it keeps going if you close the page.")


def _form_configs(data: dict, kinds: list[str], eps_text: str, seeds: int, **settings: object) -> list[FaroConfig]:
    """The form's grid (constraint types x ε x seeds) as validated configs: one bad value launches nothing."""
    if not kinds:
        raise FaroError("choose at least one constraint type")
    grid = parse_values("epsilon", eps_text)
    base = dict(data=data.get("source"), group=data.get("group"), strata=data.get("strata") or None,
                skew=float(data.get("skew") or 0.0), dp_scope=data.get("dp_scope"),
                dp_partner=bool(data.get("dp_partner", default_of("dp_partner"))), **settings)
    return [FaroConfig(**base, constraints=[] if k == BT else [k], epsilon=eps, method="bt" if k == BT else "faro",
                       seed=seed)
            for k in kinds for eps in ([math.inf] if k == BT else grid) for seed in range(int(seeds))]


BT = "BT (none)"
with guard():
    data = st.session_state.get("data_choice") or {"source": "demo"}
    epochs_range = setting_of("epochs").metadata["range"]
    with st.form("launch"):
        st.write(f"Data: **{data.get('source') or 'demo'}** (change it on the Data page)")
        c1, c2 = st.columns(2)
        kinds = c1.multiselect("Constraint type(s)", [BT, "dp", "eo", "cf"], default=[BT, "dp"],
                               help="one run per constraint type (BT = unconstrained baseline)")
        eps_text = c2.text_input("ε (one value or a grid)", value=f"{default_of('epsilon'):g}",
                                 help=setting_of("epsilon").metadata["help"])
        c3, c4, c5, c6 = st.columns(4)
        mode = c3.selectbox("Mode", list(MODES), index=MODES.index(default_of("mode")),
                            help="head: frozen backbone, cached features (CPU, seconds)")
        backbone = c4.text_input("Backbone", value="", placeholder="embedded all-MiniLM-L6-v2")
        epochs = c5.number_input("Epochs", min_value=int(epochs_range.lo), max_value=500,
                                 value=default_of("epochs", "head"),
                                 help="passes over the training split (full mode defaults to "
                                      f"{default_of('epochs', 'full')})")
        seeds = c6.number_input("Seeds", min_value=1, max_value=10, value=1)
        submitted = st.form_submit_button("Launch", type="primary")
    if submitted:
        configs = _form_configs(data, kinds, eps_text, int(seeds), mode=mode, epochs=int(epochs),
                                backbone=backbone or None)
        launched = [launch.launch_train(store(), config=c) for c in configs]
        st.success(f"launched {len(launched)} run(s): " + ", ".join(f"`{r}`" for r in launched))
        st.session_state["watch"] = launched[0]

    @st.fragment(run_every=2.0)
    def live_queue() -> None:
        """The queue with progress bars, cancel buttons and the live curves of one run (every 2 s)."""
        with guard():
            rows = launch.queue(store())
            if not rows:
                st.info("No runs launched from here yet.")
                return
            st.subheader("Queue")
            for r in rows[:20]:
                c1, c2, c3 = st.columns([3, 4, 1])
                c1.write(f"`{r['run_id']}` — **{r['status']}**")
                c2.progress(min(max(r["fraction"], 0.0), 1.0), text=f"step {r['step']}/{r['total_steps']}")
                if r["status"] in ("starting", "queued", "running") and r["alive"]:
                    if c3.button("Cancel", key=f"cancel-{r['run_id']}"):
                        st.toast(f"{r['run_id']}: {launch.cancel(store(), r['run_id'])}")
                if r["status"] == "failed":
                    st.error(f"{r['run_id']} failed: {r['error'] or 'see launch.log in its run directory'}")
            ids = [r["run_id"] for r in rows]
            watch = st.session_state.get("watch")
            pick = st.selectbox("Live curves of", ids, index=ids.index(watch) if watch in ids else 0,
                                key="watch_pick")
            if store().has(pick):
                hist, mult = history(pick)
                cfg = store().get(pick).config
                st.plotly_chart(curves_figure(hist, mult, cfg.get("epsilon"), title=f"{pick}: violations and λ"),
                                width="stretch", key="curves")
            else:
                st.caption("starting: loading the data and features…")

    live_queue()
