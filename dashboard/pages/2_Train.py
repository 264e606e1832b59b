"""Train page: launch runs in the background through `faro train`, watch the queue live, cancel."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import streamlit as st  # noqa: E402
from common import guard, history, page, store  # noqa: E402

from faro_core import launch  # noqa: E402
from faro_core.errors import FaroError  # noqa: E402
from faro_core.plots_groups import curves_figure  # noqa: E402
from faro_core.runs import new_run_id  # noqa: E402

page("Train")
st.title("Train")
st.caption("Each run is a background `python -m faro_core train … --runs-dir … --run-id …` process writing "
           "to the run store: it keeps going if you close the page.")


def _eps_grid(text: str) -> list[float]:
    try:
        vals = [float(x) for x in text.replace(";", ",").split(",") if x.strip()]
    except ValueError:
        raise FaroError(f"ε: expected numbers separated by commas (e.g. 0.02, 0.05, 0.1), got {text!r}") from None
    if not vals or any(v < 0 for v in vals):
        raise FaroError("ε: give one or more values ≥ 0 (inf for unconstrained)")
    return vals


with guard():
    data = st.session_state.get("data_choice") or {"source": "demo"}
    with st.form("launch"):
        st.write(f"Data: **{data.get('source') or 'demo'}** (change it on the Data page)")
        c1, c2 = st.columns(2)
        kinds = c1.multiselect("Constraint type(s)", ["BT (none)", "dp", "eo", "cf"], default=["BT (none)", "dp"],
                               help="one run per constraint type (BT = unconstrained baseline)")
        eps_text = c2.text_input("ε (one value or a grid)", value="0.05")
        c3, c4, c5, c6 = st.columns(4)
        mode = c3.selectbox("Mode", ["head", "full"], help="head: frozen backbone, cached features (CPU, seconds)")
        backbone = c4.text_input("Backbone", value="", placeholder="embedded all-MiniLM-L6-v2")
        epochs = c5.number_input("Epochs", min_value=1, max_value=500, value=10)
        seeds = c6.number_input("Seeds", min_value=1, max_value=10, value=1)
        submitted = st.form_submit_button("Launch", type="primary")
    if submitted:
        if not kinds:
            raise FaroError("choose at least one constraint type")
        grid = _eps_grid(eps_text)
        faro_kinds = [k for k in kinds if k != "BT (none)"]
        n_runs = (len(faro_kinds) * len(grid) + ("BT (none)" in kinds)) * int(seeds)
        common = dict(mode=mode, epochs=int(epochs), backbone=backbone or None, data=data.get("source"),
                      group=data.get("group"), strata=data["strata"].split(",") if data.get("strata") else None,
                      skew=float(data.get("skew") or 0.0), dp_scope=data.get("dp_scope"),
                      dp_partner=bool(data.get("dp_partner", True)))
        if mode == "head" and n_runs > 1:
            # a grid: one batched `faro sweep` process trains every member (each still its own run)
            argv = launch.sweep_argv(str(store().root), new_run_id("ui"), faro_kinds, grid, seeds=int(seeds),
                                     bt="BT (none)" in kinds, **common)
            launched = launch.launch_sweep(store(), argv)
            st.success(f"launched a grid of {len(launched)} runs, trained as one batch: "
                       + ", ".join(f"`{r}`" for r in launched))
        else:
            launched = []
            for k in kinds:
                for eps in ([float("inf")] if k == "BT (none)" else grid):
                    for seed in range(int(seeds)):
                        launched.append(launch.launch_train(
                            store(), constraint=None if k == "BT (none)" else k, epsilon=eps,
                            method="bt" if k == "BT (none)" else "faro", seed=seed, **common))
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
