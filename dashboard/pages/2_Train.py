"""Train page: the compute on offer (CPU, CUDA devices, a Ray cluster); launch runs where the user chooses, in the
background through `faro train`; watch the queue live, cancel."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import streamlit as st  # noqa: E402
from common import guard, history, page, store  # noqa: E402

from faro_core.cli.sweep_cmd import sweep_run_ids  # noqa: E402
from faro_core.results.plots import curves_figure  # noqa: E402
from faro_core.store.runs import new_run_id  # noqa: E402
from faro_core.train import launch  # noqa: E402
from faro_core.train.config import MODES, default_of, parse_values, setting_of  # noqa: E402
from faro_core.train.method_spec import REFERENCE, SPECS  # noqa: E402

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
    data = st.session_state.get("data_choice") or {"source": "demo"}
    res = show_compute()
    targets = ["local-cpu", "local-gpu", "ray"]
    missing = ([] if res["cuda"] else ["no local GPU here"]) + ([] if res["ray"] else ["no Ray cluster (set RAY_ADDRESS)"])
    with st.form("launch"):
        groups_txt = f" · groups: {', '.join(data['groups'])}" if data.get("groups") else ""
        attr_txt = f" · attribute: {data['attribute']}" if data.get("attribute") else ""
        st.write(f"Data: **{data.get('source') or 'demo'}**{groups_txt}{attr_txt} (change it on the Data page)")
        c1, c2, c3 = st.columns([2, 1, 1])
        kinds = c1.multiselect("Constraint type(s)", [REFERENCE, "dp", "eo", "cf"], default=[REFERENCE, "dp"],
                               format_func=lambda k: f"{SPECS[k].label} (none)" if k == REFERENCE else k.upper(),
                               help="one run per constraint type (BT = unconstrained baseline)")
        eps_text = c2.text_input("ε (one value or a grid)", value=f"{default_of('epsilon'):g}",
                                 help=setting_of("epsilon").metadata["help"])
        combine = c3.checkbox("Combine in one run", value=False,
                              help="e.g. DP and EO together: one run constrained by every chosen type")
        c3, c4, c5, c6 = st.columns(4)
        target = c3.radio("Where", targets, format_func=lambda t: TARGET_LABEL[t],
                          help="local GPU: full mode (the backbone is fine-tuned, bf16); Ray: one CPU per run, "
                               "and one GPU for full-mode runs.")
        if missing:
            c3.caption("; ".join(missing) + ": launching there says why it cannot")
        mode = c4.selectbox("Mode", list(MODES), index=MODES.index(default_of("mode")), help="head: frozen backbone, cached features (CPU, seconds); "
                                                           "full: fine-tune the backbone (GPU)")
        backbone = c4.text_input("Backbone", value="", placeholder="embedded all-MiniLM-L6-v2")
        epochs = c5.number_input("Epochs", min_value=int(setting_of("epochs").metadata["range"].lo), max_value=500,
                                 value=default_of("epochs", "head"), help="passes over the training split")
        seeds = c6.number_input("Seeds", min_value=1, max_value=10, value=1)
        submitted = st.form_submit_button("Launch", type="primary")
    if submitted:
        grid = parse_values("epsilon", eps_text) if [k for k in kinds if k != REFERENCE] else []
        plan = launch.plan_runs(kinds, grid, int(seeds), combine)
        common = dict(epochs=int(epochs), backbone=backbone or None, data=data.get("source"),
                      group=data.get("group"), strata=data["strata"].split(",") if data.get("strata") else None,
                      skew=float(data.get("skew") or 0.0), dp_scope=data.get("dp_scope"),
                      dp_partner=bool(data.get("dp_partner", default_of("dp_partner"))), groups=data.get("groups"),
                      attribute=data.get("attribute"))
        # every run's config is built and validated first: one value out of range launches nothing
        configs = [launch.launch_config(mode="full" if target == "local-gpu" else mode, **common, **p) for p in plan]
        one_kind_each = all("," not in (p["constraint"] or "") for p in plan)
        if target == "local-cpu" and mode == "head" and len(plan) > 1 and one_kind_each:
            # a grid: one batched `faro sweep` process trains every member (each still its own run)
            argv = launch.sweep_argv(str(store().root), new_run_id("ui"), [k for k in kinds if k != REFERENCE], grid,
                                     seeds=int(seeds), bt=REFERENCE in kinds, mode=mode, **common)
            launched = launch.launch_sweep(store(), argv, sweep_run_ids(argv))
            st.success(f"launched a grid of {len(launched)} runs on {TARGET_LABEL[target]}, trained as one "
                       "batch: " + ", ".join(f"`{r}`" for r in launched))
        else:
            launched = [launch.launch_train(store(), config=c, target=target) for c in configs]
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
