"""Streamlit glue shared by the dashboard pages: run store, cached readers, error guard.

No math here: every number comes from :mod:`faro_core.results.views`, every figure from
:mod:`faro_core.results.plots`. Cached readers are keyed on the run store root, run ids and file mtimes,
so switching pages recomputes nothing and a running run's files are re-read when they change.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `streamlit run dashboard/app.py` from anywhere
    sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from faro_core import results  # noqa: E402
from faro_core.errors import FaroError  # noqa: E402
from faro_core.store.runs import RunStore  # noqa: E402

WATCHED = ("status.json", "metrics.json", "progress.json", "certificate.json", "eval.json", "policy.json",
           "scores.parquet", "history.jsonl", "policy_generations.parquet")


def page(title: str, icon: str = "⚖️") -> None:
    """Page config + the sidebar's run-store picker."""
    try:
        st.set_page_config(page_title=f"Faro · {title}", page_icon=icon, layout="wide")
    except Exception:  # set twice (AppTest, navigation): harmless
        pass
    default = os.environ.get("FARO_RUNS_DIR", "runs")
    if "runs_dir" not in st.session_state:
        st.session_state["runs_dir"] = default
    st.sidebar.text_input("Run store (--runs-dir)", key="runs_dir",
                          help="the same directory the `faro` CLI writes to")


def runs_root() -> str:
    """The run store directory chosen in the sidebar."""
    return str(st.session_state.get("runs_dir") or os.environ.get("FARO_RUNS_DIR", "runs"))


def store() -> RunStore:
    """The run store chosen in the sidebar."""
    return RunStore(runs_root())


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


def store_signature(root: str) -> tuple[tuple[str, tuple[float, ...]], ...]:
    """(run id, mtimes of watched files) for every run dir: the cache key of anything store-wide."""
    r = Path(root)
    if not r.exists():
        return ()
    out = []
    for p in sorted(r.iterdir()):
        if p.is_dir():
            out.append((p.name, tuple(_mtime(p / f) for f in WATCHED)))
    return tuple(out)


def run_signature(root: str, run_id: str) -> tuple[float, ...]:
    """mtimes of one run's watched files."""
    p = Path(root) / run_id
    return tuple(_mtime(p / f) for f in WATCHED)


@st.cache_data(show_spinner=False, max_entries=64)
def _run_table(root: str, sig: tuple[Any, ...]) -> pd.DataFrame:
    return results.run_table(RunStore(root))


def run_table() -> pd.DataFrame:
    """The run table (cached on the store signature)."""
    root = runs_root()
    return _run_table(root, store_signature(root))


@st.cache_data(show_spinner=False, max_entries=256)
def _scores(root: str, run_id: str, split: str, sig: tuple[float, ...]) -> pd.DataFrame:
    return results.load_scores(RunStore(root).get(run_id), split)


def scores(run_id: str, split: str = "test") -> pd.DataFrame:
    """``scores.parquet`` of a run (one split), cached on run id + mtimes."""
    root = runs_root()
    return _scores(root, run_id, split, run_signature(root, run_id))


@st.cache_data(show_spinner=False, max_entries=256)
def _history(root: str, run_id: str, sig: tuple[float, ...]) -> tuple[pd.DataFrame, pd.DataFrame]:
    run = RunStore(root).get(run_id)
    return results.history_frame(run), results.top_multipliers(run)


def history(run_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-step history, top multipliers) of a run, cached on run id + mtimes."""
    root = runs_root()
    return _history(root, run_id, run_signature(root, run_id))


@st.cache_data(show_spinner=False, max_entries=256)
def _policy(root: str, run_id: str, sig: tuple[float, ...]) -> pd.DataFrame:
    return results.policy_frame(RunStore(root).get(run_id))


def policy(run_id: str) -> pd.DataFrame:
    """``policy.json`` of a run as a long frame (cached)."""
    root = runs_root()
    return _policy(root, run_id, run_signature(root, run_id))


@st.cache_data(show_spinner=False, max_entries=16)
def _group_labels(root: str, mtime: float) -> dict[str, str]:
    from faro_core.data.labels import label_map

    return label_map(root)


def group_labels() -> dict[str, str]:
    """Group tag -> words: the shipped BBQ map, overridden by the run store's ``group_labels.json``."""
    from faro_core.data.labels import LABELS_FILE

    root = runs_root()
    return _group_labels(root, _mtime(Path(root) / LABELS_FILE))


def run_label(table: pd.DataFrame, run_id: str) -> str:
    """``run-id — Faro-DP ε=0.05 seed 0 (done)``."""
    row = table[table["run_id"] == run_id]
    if row.empty:
        return run_id
    r = row.iloc[0]
    eps = "" if r["family"] == "BT" else f" ε={r['epsilon']:g}"
    return f"{run_id} — {r['family']}{eps} seed {r['seed']} ({r['status']})"


def open_selected(key: str) -> None:
    """Selection callback of a front chart (``st.plotly_chart(..., on_select=open_selected, args=(key,))``):
    the picked point's run becomes the open run of the Pareto, Groups and Policy pages."""
    picked = results.selected_run(st.session_state.get(key))
    if picked:
        st.session_state["open_run"] = st.session_state["open_run_pick"] = picked


def no_runs_message() -> None:
    """What to do when the store is empty."""
    st.info(f"No runs in `{runs_root()}` yet — run `faro demo --runs-dir {runs_root()}` for the demo sweep, "
            "or launch runs on the **Train** page.")


@contextmanager
def guard() -> Iterator[None]:
    """Run a page body: a :class:`FaroError` becomes ``st.error`` with its message; any other exception
    becomes a one-line ``st.error`` (never a traceback). Streamlit's own control flow passes through."""
    try:
        yield
    except FaroError as exc:
        st.error(str(exc))
    except Exception as exc:  # a bug: say so in one line
        st.error(f"Something went wrong: {type(exc).__name__}: {exc}. Check the run store path in the "
                 "sidebar; if it persists, report it with the steps that led here.")


def _finished(root: str) -> tuple[str, ...]:
    r = Path(root)
    return tuple(sorted(p.name for p in r.iterdir() if (p / "metrics.json").exists())) if r.exists() else ()


def refresh_as_runs_finish(table: pd.DataFrame, every_s: float = 3.0) -> None:
    """While runs of ``table`` are training (e.g. the members of a launched grid), rerun the page whenever
    one of them finishes, so its point joins the front; says so under the page."""
    training = int((table["status"] == "running").sum()) if "status" in table else 0
    if not training:
        return
    st.caption(f"{training} run(s) training: the front updates as each one finishes.")
    root, seen = runs_root(), _finished(runs_root())

    @st.fragment(run_every=every_s)
    def watch() -> None:
        if _finished(root) != seen:
            st.rerun()

    watch()


def render_widget(container: Any, w: Any, key: str | None = None) -> Any:
    """Render a :class:`faro_core.train.forms.Widget` in ``container`` (``st``, a column, a form); returns the
    widget's raw value (:func:`faro_core.train.forms.value_of` turns it into the field's value). Keyed
    ``w-NAME`` unless ``key`` is given."""
    key = key or f"w-{w.name}"
    if w.kind == "text":
        return container.text_input(w.label, value=w.initial, help=w.help, placeholder=w.placeholder, key=key)
    if w.kind in ("number", "count"):
        return container.number_input(w.label, min_value=w.min, max_value=w.max, value=w.initial, step=w.step,
                                      help=w.help, key=key)
    if w.kind == "slider":
        return container.slider(w.label, w.min, w.max, w.initial, w.step, help=w.help, key=key)
    if w.kind in ("select", "radio"):
        fn = container.selectbox if w.kind == "select" else container.radio
        extra = {"horizontal": True} if w.kind == "radio" else {}
        return fn(w.label, list(w.options), index=w.options.index(w.initial), format_func=w.label_of, help=w.help,
                  key=key, **extra)
    if w.kind == "multiselect":
        return container.multiselect(w.label, list(w.options), default=w.initial, format_func=w.label_of,
                                     help=w.help, key=key)
    if w.kind == "checkbox":
        return container.checkbox(w.label, value=w.initial, help=w.help, key=key)
    raise ValueError(f"widget {w.name}: the page builds kind {w.kind!r} itself")
