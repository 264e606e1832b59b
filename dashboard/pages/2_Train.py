"""Train page: the compute on offer (CPU, CUDA devices, a Ray cluster); launch runs where the user chooses, in the
background through `faro train`; watch the queue live, cancel."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import streamlit as st  # noqa: E402
from common import guard, history, page, render_widget, store  # noqa: E402

from faro_core.errors import FaroError  # noqa: E402
from faro_core.results.plots import curves_figure  # noqa: E402
from faro_core.store.runs import new_run_id  # noqa: E402
from faro_core.studies.grid import SweepSpec, grid  # noqa: E402
from faro_core.studies.sweep import launch_spec  # noqa: E402
from faro_core.train import launch  # noqa: E402
from faro_core.train.config import FaroConfig  # noqa: E402
from faro_core.train.forms import values_of, widgets  # noqa: E402

page("Train")
st.title("Train")
st.caption("Each run is a background `python -m faro_core train --config … --runs-dir … --run-id …` process "
           "writing to the run store: it keeps going if you close the page.")


TARGET_LABEL = {"local-cpu": "this machine's CPU", "local-gpu": "this machine's GPU (full mode, bf16)",
                "ray": "the Ray cluster (RAY_ADDRESS)"}


@st.cache_data(show_spinner="looking for CPUs, GPUs and a Ray cluster…", ttl=30)
def _compute(ray_address: str | None) -> dict:
    return launch.compute_resources(ray_address)


def show_compute() -> dict:
    """CPU cores, each CUDA device with its memory, and the Ray cluster when RAY_ADDRESS is set."""
    res = _compute(os.environ.get("RAY_ADDRESS"))
    st.subheader("Compute")
    cols = st.columns(3)
    cols[0].metric("CPU cores", res["cpu_cores"])
    if res["cuda"]:
        cols[1].metric("CUDA devices", len(res["cuda"]))
        for d in res["cuda"]:
            cols[1].caption(f"GPU {d['index']}: {d['name']}, {d['memory_gb']:g} GB"
                            f"{', bf16' if d.get('bf16') else ''}")
    else:
        cols[1].metric("CUDA devices", 0)
        cols[1].caption("no CUDA device here: full-mode runs go to a Ray cluster with GPUs")
    if res["ray"]:
        r = res["ray"]
        cols[2].metric("Ray cluster", f"{r['nodes']} node(s)")
        cols[2].caption(f"`{r['address']}`: {r['CPU']:g} CPUs, {r['GPU']:g} GPUs, {r['memory_gb']:g} GB")
    elif res["ray_error"]:
        cols[2].metric("Ray cluster", "unreachable")
        st.error(res["ray_error"])
    else:
        cols[2].metric("Ray cluster", "none")
        cols[2].caption("set RAY_ADDRESS before starting the dashboard to send runs to a cluster")
    return res


with guard():
    data = st.session_state.get("data_choice") or {}  # FaroConfig settings chosen on the Data page
    res = show_compute()
    targets = ["local-cpu", "local-gpu", "ray"]
    missing = ([] if res["cuda"] else ["no local GPU here"]) + ([] if res["ray"] else ["no Ray cluster (set RAY_ADDRESS)"])
    grid_ws = widgets("train", SweepSpec)  # the grid: SweepSpec's fields shown here
    config_ws = widgets("train")  # the FaroConfig fields shown here
    with st.form("launch"):
        groups_txt = f" · groups: {', '.join(data['groups'])}" if data.get("groups") else ""
        attr_txt = f" · attribute: {data['attribute']}" if data.get("attribute") else ""
        st.write(f"Data: **{data.get('data') or 'demo'}**{groups_txt}{attr_txt} (change it on the Data page)")
        raw = {w.name: render_widget(c, w) for c, w in zip(st.columns(len(grid_ws)), grid_ws)}
        cols = st.columns(1 + len(config_ws))
        target = cols[0].radio("Where", targets, format_func=lambda t: TARGET_LABEL[t],
                               help="local GPU: full mode (the backbone is fine-tuned, bf16); Ray: one CPU per run, "
                                    "and one GPU for full-mode runs.")
        if missing:
            cols[0].caption("; ".join(missing) + ": launching there says why it cannot")
        raw.update({w.name: render_widget(c, w) for c, w in zip(cols[1:], config_ws)})
        submitted = st.form_submit_button("Launch", type="primary")
    if submitted:
        settings = {**data, **values_of(config_ws, raw)}
        if target == "local-gpu":
            settings["mode"] = "full"
        # every run's config is built and validated first: one value out of range launches nothing
        spec = SweepSpec(base=launch.launch_config(**settings), name=new_run_id("ui"), **values_of(grid_ws, raw))
        configs = grid(spec)
        if not configs:
            raise FaroError("choose at least one constraint type or baseline")
        if target == "local-cpu" and spec.base.mode == "head" and len(configs) > 1 and not (
                spec.combine and len(spec.kinds) > 1):
            # a grid: one batched `faro sweep` process trains every member (each still its own run)
            launched = launch_spec(store(), spec)
            st.success(f"launched a grid of {len(launched)} runs on {TARGET_LABEL[target]}, trained as one "
                       "batch: " + ", ".join(f"`{r}`" for r in launched))
        else:
            launched = [launch.launch_train(store(), config=FaroConfig(**{**c.to_dict(), "sweep": None}),
                                            target=target) for c in configs]
            st.success(f"launched {len(launched)} run(s) on {TARGET_LABEL[target]}: "
                       + ", ".join(f"`{r}`" for r in launched))
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
                where = TARGET_LABEL.get(r["target"], r["target"])
                if r.get("placement") and r["placement"].get("gpu_ids"):
                    where += f", GPU {', '.join(r['placement']['gpu_ids'])}"
                c1.write(f"`{r['run_id']}` — **{r['status']}** · {where}")
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
