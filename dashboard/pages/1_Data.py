"""Data page: pick a source (demo, path, upload, hub id), map columns, skew, see groups and a preview."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import streamlit as st  # noqa: E402
from common import group_labels, guard, page, render_widget, runs_root  # noqa: E402

from faro_core.train.forms import values_of, widgets  # noqa: E402

page("Data")
st.title("Data")


@st.cache_data(show_spinner="loading data…", max_entries=16)
def _load(source: str, fmt: str | None, group: str | None, strata: tuple[str, ...] | None, skew: float,
          columns: tuple[tuple[str, str], ...], mtime: float) -> tuple[dict, object]:
    from faro_core.data import load
    from faro_core.data.summary import summarize
    from faro_core.errors import FaroError
    from faro_core.train.config import default_split_by

    data = load(source, format=fmt, group=group or None, strata=list(strata) if strata is not None else None,
                skew=skew, columns=dict(columns) or None)
    try:  # clusters per split of the unit a run on this data splits by (template on BBQ-format data)
        return summarize(data, split_by=default_split_by(source, fmt)), data.df.head(200)
    except FaroError:  # too small to split: the summary without it (training says why)
        return summarize(data), data.df.head(200)


def group_names_editor(tags: list[str]) -> None:
    """The group names in use (tag -> words) and an upload of the user's own map (JSON or CSV)."""
    from faro_core.data.labels import parse_label_map, save_label_map

    labels = group_labels()
    with st.expander("Group names (shown everywhere in words; upload your own map)"):
        if tags:
            from faro_core.data.labels import group_label

            st.dataframe({"tag in the data": tags, "shown as": [group_label(t, labels) for t in tags]},
                         hide_index=True, width="stretch")
        up = st.file_uploader("Label map: JSON {\"tag\": \"label\"} or CSV with columns tag,label", type=["json", "csv"],
                              key="label_map_upload")
        if up is not None:
            with guard():
                mapping = parse_label_map(up.name, up.getvalue())
                path = save_label_map(runs_root(), mapping)
                st.success(f"{len(mapping)} group name(s) saved to `{path}`: the dashboard, the report and "
                           "`faro report` use them for this run store.")


with guard():
    shown = widgets("data")  # the FaroConfig fields this page sets (their `show="data"`), in field order
    source_w = next(w for w in shown if w.kind == "source")
    kind = st.radio(source_w.label, ["demo data", "folder or file path", "upload", "hub id"], horizontal=True,
                    help=source_w.help)
    source: str | None = "demo"
    if kind == "folder or file path":
        source = st.text_input("Path (BBQ folder, CSV, JSONL or Parquet)", value="", key="data_path")
    elif kind == "upload":
        up = st.file_uploader("CSV, JSONL or Parquet (≤ 50 MB)", type=["csv", "jsonl", "json", "parquet"])
        source = None
        if up is not None:
            from faro_core.store.uploads import save_upload

            source = str(save_upload(up.name, up.getvalue()))
    elif kind == "hub id":
        source = st.text_input("Hugging Face hub id (needs network)", value="")
    simple = [w for w in shown if w.kind not in ("source", "groups")]
    texts = [w for w in simple if w.kind == "text"]
    cols = st.columns(len(texts) + 1)
    raw = {w.name: render_widget(c, w) for c, w in zip(cols, texts)}
    gold = cols[-1].text_input("Gold-label column (generic tables)", value="", help="maps to `gold`")
    raw.update({w.name: render_widget(st, w) for w in simple if w.kind != "text"})
    # FaroConfig keyword arguments: the Train page builds its configs from them as they are
    choice = {source_w.name: source, **values_of(simple, raw)}
    st.session_state["data_choice"] = choice
    if not source:
        st.info("Choose a file, path or hub id to load.")
    else:
        strata = tuple(choice["strata"]) if choice.get("strata") else None
        columns = (("gold", gold),) if gold else ()
        mtime = Path(source).stat().st_mtime if Path(source).exists() else 0.0
        summary, preview = _load(source, None, choice.get("group"), strata, choice.get("skew") or 0.0, columns,
                                 mtime)
        c1, c2, c3, c4 = st.columns(4)
        c1.metric("pairs", summary.get("pairs", len(preview)))
        c2.metric("items", summary.get("items", "—"))
        c3.metric("groups", len(summary.get("groups") or {}))
        gold_counts = summary.get("gold") or {}
        n_gold = sum(v for k, v in gold_counts.items() if k != "none") if isinstance(gold_counts, dict) else 0
        c4.metric("pairs with a gold label", n_gold)
        c5, c6, c7 = st.columns(3)
        c5.metric("counterfactual twins", summary.get("twins", 0))
        c6.metric("skewed pairs", summary.get("skewed", 0))
        sp = summary.get("splits")
        if sp:
            c7.metric(f"test {sp['unit']}s (held out)", sp["clusters"]["test"],
                      help=f"split by {sp['unit']}: train {sp['clusters']['train']}, validation "
                           f"{sp['clusters']['val']}, test {sp['clusters']['test']} clusters; no cluster is in two "
                           "splits, so held-out numbers cover clusters the model never saw")
        for w in summary.get("warnings") or []:
            st.warning(w)
        groups = summary.get("groups") or {}
        if groups:
            labels = group_labels()
            from faro_core.results.plots import group_sizes_figure

            st.plotly_chart(group_sizes_figure(groups, labels), width="stretch", key="group_sizes")
        group_names_editor(sorted(set(groups) | set(summary.get("response_groups") or {})))
        if groups:
            from faro_core.data.labels import group_label

            st.subheader("What to constrain")
            gcat = summary.get("group_categories") or {}
            c1, c2 = st.columns(2)
            cats = c1.multiselect("Categories (all their groups)", sorted(set(gcat.values()) - {""}), default=[],
                                  key="constrain_categories")
            picked = c2.multiselect("Groups", sorted(groups), default=[], key="constrain_groups",
                                    format_func=lambda g: f"{group_label(g, labels)} ({gcat.get(g, '')})")
            keep = sorted({g for g, c in gcat.items() if c in cats} | set(picked))
            st.session_state["data_choice"]["groups"] = keep or None
            st.caption("Training then uses only the pairs about these groups (`--groups`), so every constraint "
                       "compares them alone; nothing chosen: all groups. Combine constraint types (DP and EO "
                       "together) on the Train page." + (f" Chosen: {', '.join(group_label(g, labels) for g in keep)}."
                                                          if keep else ""))
        with st.expander("Summary (as `faro data summary --json`)"):
            st.json(summary)
        st.subheader("Preview")
        st.dataframe(preview, hide_index=True, width="stretch")
        st.caption("Train on this data from the **Train** page (it uses this source and these settings).")
