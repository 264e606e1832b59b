"""The stakeholder report: one self-contained HTML file (plotly.js inline once and compressed, no CDN, no network:
:mod:`faro_core.results.embed`).

``build_report(store, run_ids)`` covers the data and groups, what was trained, the accuracy–fairness
front, certificates, per-group plots (BT vs the chosen Faro run), example generations, and a plain-language
summary a non-expert can follow. Shared by the dashboard's Report page and ``faro report``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
from markupsafe import Markup

from faro_core.errors import FaroError
from faro_core.fairness.kinds import KIND_LABEL
from faro_core.results import pareto, views
from faro_core.results import plots as pg
from faro_core.results import table as tables
from faro_core.store.runs import RunStore

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;color:#222;
line-height:1.5;padding:0 1em}h1{margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.9em;margin:1em 0}td,th{border:1px solid #ddd;padding:.3em .6em;text-align:right}
th{background:#f5f5f5}td:first-child,th:first-child{text-align:left}.summary{background:#f4f8fb;border-left:4px solid
#1f77b4;padding:.8em 1.2em}.muted{color:#777;font-size:.9em}.badge{padding:.1em .5em;border-radius:.4em}
.ok{background:#d9f2d9}.no{background:#f8d7da}.changed{background:#fff3b0}
"""


# Every tag and static sentence of the report lives in templates/ (package data); autoescape is on, so run
# names, group names, prompts and every other value from a run store or a dataset are text, never markup.
_ENV = jinja2.Environment(loader=jinja2.PackageLoader("faro_core.results", "templates"), autoescape=True,
                          trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)


def _fmt(x: Any, nd: int = 3) -> str:
    """A table cell's text: ``—`` for a missing value, a float to ``nd`` places (``∞``), else ``str``."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, float):
        return "∞" if math.isinf(x) else f"{x:.{nd}f}"
    return str(x)


_ENV.filters["fmt"] = _fmt


def plain_summary(table: pd.DataFrame) -> list[str]:
    """Sentences a non-expert can follow: what the numbers say about bias before and after (HTML: markup with
    every inserted value escaped)."""
    out = [Markup("A <b>reward model</b> scores answers; a chatbot trained on it learns to give high-scoring "
                  "answers. If the scores favour answers about some groups of people over others, the chatbot "
                  "inherits that bias.")]
    heads = pareto.headline(table)
    names = {"dp": "how often answers about each group get a high score",
             "eo": "how often the model picks the right answer, group by group",
             "cf": "how much the score changes when only the group named in an answer is swapped"}
    for kind, h in heads.items():
        drop = h["bt_violation"] - h["faro_violation"]
        rel = drop / h["bt_violation"] if h["bt_violation"] > 0 else 0.0
        acc = h["faro_accuracy"] - h["bt_accuracy"]
        out.append(Markup(
            "<b>{kind}</b> ({name}): the standard model's largest gap between a group and everyone was "
            "<b>{bt:.3f}</b>; with Faro (ε = {eps:g}) it is <b>{faro:.3f}</b> ({rel:.0%} {direction}), while "
            "accuracy changed by {acc:+.1f} percentage points ({bt_acc:.1%} → {faro_acc:.1%}) on the {split} "
            "split.").format(kind=KIND_LABEL[kind].capitalize(), name=names[kind], bt=h["bt_violation"],
                             eps=h["faro_epsilon"], faro=h["faro_violation"], rel=rel,
                             direction="smaller" if drop >= 0 else "larger", acc=acc * 100,
                             bt_acc=h["bt_accuracy"], faro_acc=h["faro_accuracy"], split=h["split"]))
    if len(heads) == 0:
        out.append(Markup("No unconstrained baseline and constrained run finished on the same data yet, so no "
                          "before/after comparison can be made."))
    out.append(Markup("ε is the largest gap we allow; a smaller ε asks for more fairness and usually costs some "
                      "accuracy. A <b>certificate</b> means the gap stays below ε on held-out data with 95% "
                      "confidence."))
    return out


EXAMPLE_KINDS = {"bt_stereotyped_faro_correct": "where Faro corrects BT",
                 "bt_leans_faro_not": "where BT leans to the stereotyped person and Faro does not",
                 "both_stereotyped": "where both are wrong (shown for honesty)"}


def build_report(store: RunStore, run_ids: list[str], title: str = "Faro fairness report",
                 before: str | None = None, after: str | None = None) -> str:
    """The HTML report for ``run_ids`` (a string: write it to a ``.html`` file)."""
    if not run_ids:
        raise FaroError("choose at least one run for the report")
    runs = [store.get(r) for r in dict.fromkeys(run_ids)]  # RunError on unknown ids
    full = tables.run_table(store)
    table = full[full["run_id"].isin([r.run_id for r in runs])].reset_index(drop=True)
    done = table[table["status"] == "done"]
    if done.empty:
        raise FaroError("none of the chosen runs has finished; wait for them or pick finished runs")
    from faro_core.data.labels import SMALL_GROUP_N, group_label, label_map
    from faro_core.results.embed import figure_block, plotly_loader

    labels = label_map(store.root)

    def fig(f: Any) -> Markup:
        return Markup(figure_block(f))  # drawn by plotly_loader(): plotly.js inline once, compressed, no CDN

    ctx: dict[str, Any] = {"title": title, "css": Markup(CSS), "generated": time.strftime("%Y-%m-%d %H:%M"),
                           "store_root": store.root, "n_runs": len(runs)}
    story = report_story(store, table)
    ctx["story"] = None
    if story is not None:
        from faro_core.results.story import example_caption, example_table

        ctx["story"] = {"headline": story["headline"], "sentence": story["sentence"],
                        "figure": fig(pg.story_figure(story)), "note": story.get("note"),
                        "examples": [{"category": ex["category"], "what": EXAMPLE_KINDS[ex["kind"]],
                                      "prompt": ex["prompt"], "table": example_table(ex),
                                      "caption": example_caption(ex)} for ex in story["examples"]]}
    ctx["summary"] = plain_summary(table)

    # chance levels (from `faro eval`): is a held-out gap more than noise on cells of this size?
    ctx["chance"] = [(r.run_id, line) for r in runs for line in views.chance_lines(r)]

    # data and groups
    data_info = runs[0].read("data.json") or {}
    ctx["data"] = None
    if data_info:
        pairs = data_info.get("pairs") or {}
        groups = data_info.get("groups") or {}
        ctx["data"] = {
            "name": data_info.get("name"), "pairs": pairs, "n_pairs": sum(pairs.values()),
            "strata": data_info.get("strata") or [], "small_n": SMALL_GROUP_N,
            "any_small": any(n < SMALL_GROUP_N for n in groups.values()),
            "groups": pd.DataFrame({"group": [group_label(g, labels) for g in groups], "tag": list(groups),
                                    "pairs": list(groups.values()),
                                    "": ["small" if n < SMALL_GROUP_N else "" for n in groups.values()]})
            if groups else None}

    # what was trained
    cols = ["run_id", "status", "family", "epsilon", "seed", "epochs", "accuracy", "gold_accuracy",
            "violation_dp", "violation_eo", "violation_cf", "certified"]
    ctx["runs_table"] = table[cols]

    # front
    ctx["fronts_figure"] = fig(pg.fronts_figure(pareto.constraint_fronts(done)))
    ctx["cross_violations"] = tables.cross_violations(done)

    # certificates
    rows = []
    for r in runs:
        c = tables.certificate_summary(r)
        raw = {} if c is None else c["raw"]
        rows.append({"run": r.run_id, "certificate": "not computed (run `faro certify`)" if c is None else
                     ("certified" if c["certified"] else "not certified" if c["certified"] is False else "—"),
                     "epsilon": None if c is None else c.get("epsilon"), "delta": None if c is None else c.get("delta"),
                     "covers": raw.get("estimand") or ("—" if c is None else "held-out items drawn like these"),
                     "why not": raw.get("why_not") or ""})
    ctx["certificates"] = pd.DataFrame(rows)
    ctx["run_details"] = Markup(run_details(runs))

    # per-group plots
    bt_ids = list(done.loc[done["family"] == "BT", "run_id"])
    faro_ids = list(done.loc[done["family"] != "BT", "run_id"])
    before = before or (bt_ids[0] if bt_ids else None)
    after = after or (faro_ids[0] if faro_ids else None)
    ctx["per_group"] = None
    if before and after:
        sb, sa = views.load_scores(store.get(before)), views.load_scores(store.get(after))
        fam = dict(zip(table["run_id"], table["family"]))
        name_b, name_a = f"{fam.get(before, 'BT')} ({before})", f"{fam.get(after, 'Faro')} ({after})"
        rb, ra = views.response_rewards(sb), views.response_rewards(sa)
        sizes = rb["group"].value_counts().to_dict()
        rw = {name_b: views.with_group_captions(rb, labels, counts=sizes),
              name_a: views.with_group_captions(ra, labels, counts=sizes)}
        roles = {name_b: views.role_rewards(sb), name_a: views.role_rewards(sa)}
        role_figures = []
        if not roles[name_b].empty:
            amb = {k: v[v["context_condition"] == "ambig"] for k, v in roles.items()}
            margins = {k: m[m["context_condition"] == "ambig"]
                       for k, m in ((name_b, views.role_margins(sb)), (name_a, views.role_margins(sa)))}
            role_figures = [fig(pg.role_violin(amb)), fig(pg.margin_histogram(margins))]
        acc = {}
        for name, sc in ((name_b, sb), (name_a, sa)):
            a = views.group_accuracy(sc, "category")
            acc[name] = a.assign(category=[f"{c} (n={n})" for c, n in zip(a["category"], a["n"])])
        ctx["per_group"] = {
            "role_figures": role_figures, "gap_before": views.bias_gap(sb), "gap_after": views.bias_gap(sa),
            "figures": [fig(pg.violin_before_after(rw)), fig(pg.group_accuracy_bars(acc, "category")),
                        fig(pg.reliability_figure({fam.get(before, "BT"): views.reliability(sb),
                                                   fam.get(after, "Faro"): views.reliability(sa)}))]}

    # policy and generations
    pol_runs = [r for r in runs if r.file("policy.json").exists()]
    ctx["policy"] = None
    if pol_runs:
        frames = [views.policy_frame(r) for r in pol_runs]
        ref = frames[0][frames[0]["model"] == "reference LM"]
        frame = pd.concat([ref] + [f[f["model"] != "reference LM"] for f in frames], ignore_index=True)
        colors = {r: pg.method_color(f) for r, f in zip(table["run_id"], table["family"])}
        policy: dict[str, Any] = {
            "figure": fig(pg.policy_figure(frame, "s_amb", colors=colors)),
            "sentence": reward_induced_text(pol_runs, table, story.get("faro_run") if story else None),
            "generations": []}
        gen_runs = [r for r in pol_runs if r.file("policy_generations.parquet").exists()][:3]
        if gen_runs:
            gen = views.generations_side_by_side(gen_runs, n_prompts=3)
            for _pidx, g in gen.groupby("prompt_idx"):
                show = g[["text"] + [c for c in g.columns if c.startswith(("reward:", "best:"))]]
                picks = [[c for c in show.columns if c.startswith("best:") and bool(row[c])]
                         for _, row in show.iterrows()]
                policy["generations"].append({
                    "prompt": g["user_text"].iloc[0], "columns": list(show.columns),
                    # highlighted: a sample picked as best by only some of the rewards
                    "rows": [(bool(p) and len(p) < len(gen_runs), list(row))
                             for p, row in zip(picks, show.itertuples(index=False))]})
        ctx["policy"] = policy

    ctx["loader"] = Markup(plotly_loader())
    return _ENV.get_template("report.html.j2").render(ctx)


def reward_induced_text(runs: list[Any], table: pd.DataFrame, faro_run: str | None = None) -> str | None:
    """The reward-induced bias sentence (:func:`faro_core.policy.evaluate.reward_induced_sentence`) for
    ``faro_run`` (the story's; else the first Faro run with policy results), None without one."""
    from faro_core.policy.evaluate import reward_induced_sentence

    for run in runs:
        ri = (run.read("policy.json") or {}).get("reward_induced")
        if not ri or not ri.get("models"):
            continue
        faro = [r for r in ri["models"] if r != ri.get("baseline")]
        target = faro_run if faro_run in ri["models"] else (faro[0] if faro else None)
        if target is None:
            continue
        fam = dict(zip(table["run_id"], table["family"]))
        eps = dict(zip(table["run_id"], table["epsilon"]))
        labels = {r: (fam[r] if fam[r] == "BT" or not isinstance(eps.get(r), int | float) or eps[r] != eps[r]
                      else f"{fam[r]} ε = {eps[r]:g}") for r in ri["models"] if r in fam}
        return reward_induced_sentence(ri, target, labels)
    return None


def report_story(store: RunStore, table: pd.DataFrame) -> dict[str, Any] | None:
    """The Overview's story (:mod:`faro_core.results.story`) when its two runs are among the report's runs, else
    one built from the report's own BT and Faro-DP runs; None when there is none to tell (no such runs, or
    data without BBQ's ambiguous items)."""
    from faro_core.results.story import build_story, load_story

    ids = set(table["run_id"])
    try:
        story = load_story(store)
        if {story["bt_run"], story["faro_run"]} <= ids:
            return story
        done = table[table["status"] == "done"]
        bt = done.loc[done["family"] == "BT", "run_id"]
        faro = done.loc[done["family"].str.startswith("Faro-") & done["constraints"].str.contains("dp"), "run_id"]
        if bt.empty or faro.empty:
            return None
        return build_story(store, bt=bt.iloc[0], faro=faro.iloc[0])
    except FaroError:
        return None


def run_details(runs: list[Any]) -> str:
    """Per run: its config, its certificate (bound type, every row's empirical value and bounds) and its
    held-out metrics with intervals (``eval.json``), as collapsible HTML sections."""
    details = []
    for r in runs:
        cert = r.read("certificate.json") or {}
        ev = (r.read("eval.json") or {}).get("metrics") or {}
        d: dict[str, Any] = {"run_id": r.run_id, "status": r.status, "cert": None, "intervals": None,
                             "config_json": json.dumps(r.config, indent=1, sort_keys=True, default=str)}
        if cert:
            rows = pd.DataFrame(cert.get("bounds") or [])
            keep = [c for c in ("name", "kind", "bound", "empirical", "lower", "upper", "slack", "n_group",
                                "n_anchor", "clusters", "n_eff", "n_to_certify", "epsilon") if c in rows]
            d["cert"] = {"bound": cert.get("bound") or "hoeffding (the only bound before variance-adaptive ones)",
                         "delta": cert.get("delta"), "epsilon": cert.get("epsilon"),
                         "certified": cert.get("certified"), "has_above": "above_epsilon" in cert,
                         "above_epsilon": cert.get("above_epsilon"), "max_upper": cert.get("max_upper"),
                         "estimand": cert.get("estimand") or "held-out items drawn like these",
                         "why_not": cert.get("why_not"), "bounds": None if rows.empty else rows[keep]}
        if ev:
            d["intervals"] = pd.DataFrame([{"metric": k, "value": v.get("value"), "95% interval": (
                f"[{_fmt(v.get('lo'))}, {_fmt(v.get('hi'))}]" if v.get("lo") is not None else "—")}
                for k, v in ev.items() if isinstance(v, dict)])
        details.append(d)
    return _ENV.get_template("run_details.html.j2").render(details=details)


def pareto_figure_for(points: pd.DataFrame, kind: str) -> Any:
    """The Pareto figure (kept as a hook so the report can switch to faro_core.results.plots when it has one)."""
    return pg.pareto_figure(points, kind)


def write_report(store: RunStore, run_ids: list[str], out: str | Path, **kw: Any) -> Path:
    """Build the report and write it to ``out``; return the path."""
    text = build_report(store, run_ids, **kw)
    path = Path(out)
    if path.parent and not path.parent.exists():
        raise FaroError(f"{path.parent}: directory does not exist")
    path.write_text(text, encoding="utf-8")
    return path
