"""Report page: choose runs, preview the self-contained HTML report inline, download it (same as `faro report`)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import streamlit as st  # noqa: E402
import streamlit.components.v1 as components  # noqa: E402
from common import guard, no_runs_message, page, run_label, run_table, runs_root, store  # noqa: E402

page("Report")
st.title("Stakeholder report")
st.caption("One HTML file that opens offline (plotly.js inside it, once): the story in plain words, data and "
           "groups, what was trained, the constraint types side by side, each run's config, certificate and "
           "intervals, per-group plots and example generations. Previewed below, as it will be downloaded.")


@st.cache_data(show_spinner="building the report…", max_entries=8)
def _report(root: str, run_ids: tuple[str, ...], title: str, sig: tuple) -> str:
    from faro_core.results.report import build_report
    from faro_core.store.runs import RunStore

    return build_report(RunStore(root), list(run_ids), title=title)


with guard():
    table = run_table()
    if table.empty:
        no_runs_message()
        st.stop()
    done = list(table.loc[table["status"] == "done", "run_id"])
    chosen = st.multiselect("Runs", list(table["run_id"]), default=done,
                            format_func=lambda r: run_label(table, r))
    title = st.text_input("Title", value="Faro fairness report")
    if not chosen:
        st.info("Choose at least one run.")
        st.stop()
    from common import store_signature

    text = _report(runs_root(), tuple(chosen), title, store_signature(runs_root()))
    c1, c2 = st.columns([1, 3])
    c1.download_button("Download report.html", data=text, file_name="faro-report.html", mime="text/html",
                       type="primary")
    c2.caption(f"{len(text) / 1e6:.2f} MB · the same file as `faro report {' '.join(chosen[:3])}"
               f"{' …' if len(chosen) > 3 else ''} --runs-dir {store().root} --out report.html`")
    st.subheader("Preview")
    components.html(text, height=900, scrolling=True)
