"""The stakeholder report: one self-contained HTML file (plotly.js inline once and compressed, no CDN, no network:
:mod:`faro_core.results.embed`).

``build_report(store, run_ids)`` covers the data and groups, what was trained, the accuracy–fairness
front, certificates, per-group plots (BT vs the chosen Faro run), example generations, and a plain-language
summary a non-expert can follow. Shared by the dashboard's Report page and ``faro report``.
"""

from __future__ import annotations

import html
import json
import math
import time
from pathlib import Path
from typing import Any

import pandas as pd

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


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, float):
        return "∞" if math.isinf(x) else f"{x:.{nd}f}"
    return _esc(x)


def _table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in df.itertuples(index=False))
    return f"<table><tr>{head}</tr>{body}</table>"


def plain_summary(table: pd.DataFrame) -> list[str]:
    """Sentences a non-expert can follow: what the numbers say about bias before and after."""
    out = ["A <b>reward model</b> scores answers; a chatbot trained on it learns to give high-scoring answers. "
           "If the scores favour answers about some groups of people over others, the chatbot inherits that bias."]
    heads = pareto.headline(table)
    names = {"dp": "how often answers about each group get a high score",
             "eo": "how often the model picks the right answer, group by group",
             "cf": "how much the score changes when only the group named in an answer is swapped"}
    for kind, h in heads.items():
        drop = h["bt_violation"] - h["faro_violation"]
        rel = drop / h["bt_violation"] if h["bt_violation"] > 0 else 0.0
        acc = h["faro_accuracy"] - h["bt_accuracy"]
        out.append(
            f"<b>{KIND_LABEL[kind].capitalize()}</b> ({names[kind]}): the standard model's largest gap "
            f"between a group and everyone was <b>{h['bt_violation']:.3f}</b>; with Faro (ε = {h['faro_epsilon']:g}) "
            f"it is <b>{h['faro_violation']:.3f}</b> ({rel:.0%} {'smaller' if drop >= 0 else 'larger'}), while "
            f"accuracy changed by {acc * 100:+.1f} percentage points ({h['bt_accuracy']:.1%} → "
            f"{h['faro_accuracy']:.1%}) on the {h['split']} split.")
    if len(heads) == 0:
        out.append("No unconstrained baseline and constrained run finished on the same data yet, so no "
                   "before/after comparison can be made.")
    out.append("ε is the largest gap we allow; a smaller ε asks for more fairness and usually costs some accuracy. "
               "A <b>certificate</b> means the gap stays below ε on held-out data with 95% confidence.")
    return out


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

    def fig(f: Any) -> str:
        return figure_block(f)  # drawn by plotly_loader(): plotly.js inline once, compressed, no CDN

    parts: list[str] = [f"<h1>{_esc(title)}</h1><p class='muted'>generated {time.strftime('%Y-%m-%d %H:%M')} "
                        f"from run store <code>{_esc(store.root)}</code> · {len(runs)} runs</p>"]
    story = report_story(store, table)
    if story is not None:
        from faro_core.results.story import example_caption, example_table

        parts.append(f"<h2>Does the reward prefer the stereotype?</h2><div class='summary'><p><b>"
                     f"{_esc(story['headline'])}</b></p><p>{_esc(story['sentence'])}</p></div>")
        parts.append(fig(pg.story_figure(story)))
        if story.get("note"):
            parts.append(f"<p class='muted'>Note: {_esc(story['note'])}.</p>")
        for i, ex in enumerate(story["examples"], start=1):
            what = {"bt_stereotyped_faro_correct": "where Faro corrects BT",
                    "bt_leans_faro_not": "where BT leans to the stereotyped person and Faro does not",
                    "both_stereotyped": "where both are wrong (shown for honesty)"}[ex["kind"]]
            parts.append(f"<h3>Held-out example {i} · {_esc(ex['category'])} · {what}</h3><p>{_esc(ex['prompt'])}</p>"
                         + _table(example_table(ex)) + f"<p class='muted'>{_esc(example_caption(ex))}</p>")
    parts.append("<h2>Summary</h2><div class='summary'>" + "".join(f"<p>{s}</p>" for s in plain_summary(table))
                 + "</div>")

    # chance levels (from `faro eval`): is a held-out gap more than noise on cells of this size?
    chance = [(r.run_id, line) for r in runs for line in views.chance_lines(r)]
    if chance:
        parts.append("<h2>Are the gaps more than chance?</h2><p>A gap measured on small groups is never exactly "
                     "zero. For each evaluated run, the gap a model that ignores the group would show on the same "
                     "held-out data:</p><ul>" + "".join(f"<li><code>{_esc(rid)}</code>: {_esc(line)}</li>"
                                                       for rid, line in chance) + "</ul>")

    # data and groups
    data_info = runs[0].read("data.json") or {}
    parts.append("<h2>Data and groups</h2>")
    if data_info:
        pairs = data_info.get("pairs") or {}
        parts.append(f"<p>Dataset <b>{_esc(data_info.get('name'))}</b>: {sum(pairs.values())} preference pairs "
                     f"(train {pairs.get('train')}, validation {pairs.get('val')}, test {pairs.get('test')}); "
                     f"conditioning on {_esc(', '.join(data_info.get('strata') or []) or 'nothing')}.</p>")
        groups = data_info.get("groups") or {}
        if groups:
            parts.append(_table(pd.DataFrame({"group": [group_label(g, labels) for g in groups], "tag": list(groups),
                                              "pairs": list(groups.values()),
                                              "": ["small" if n < SMALL_GROUP_N else "" for n in groups.values()]})))
            if any(n < SMALL_GROUP_N for n in groups.values()):
                parts.append(f"<p class='muted'>“small”: fewer than {SMALL_GROUP_N} pairs; kept, but its rates "
                             "are noisy.</p>")
    else:
        parts.append("<p class='muted'>data.json not found in the first run.</p>")

    # what was trained
    parts.append("<h2>What was trained</h2><p>Each run is a reward model; BT is the standard (unconstrained) "
                 "model, Faro-X is trained under constraint X with slack ε.</p>")
    cols = ["run_id", "status", "family", "epsilon", "seed", "epochs", "accuracy", "gold_accuracy",
            "violation_dp", "violation_eo", "violation_cf", "certified"]
    parts.append(_table(table[cols]))

    # front
    parts.append("<h2>Constraint types side by side</h2><p>Accuracy against each notion's violation, one panel "
                 "per notion on one accuracy axis. BT and the baselines appear in every panel, each Faro run in the "
                 "panel of the notion it was trained for; ★ marks a certified run, bars are ±1 sd over seeds.</p>")
    fronts = pareto.constraint_fronts(done)
    parts.append(fig(pg.fronts_figure(fronts)))
    parts.append("<p>Every run's held-out violation of each notion, whatever it was trained for (the cost of one "
                 "constraint on the others):</p>" + _table(tables.cross_violations(done)))

    # certificates
    parts.append("<h2>Certificates</h2>")
    rows = []
    for r in runs:
        c = tables.certificate_summary(r)
        raw = {} if c is None else c["raw"]
        rows.append({"run": r.run_id, "certificate": "not computed (run `faro certify`)" if c is None else
                     ("certified" if c["certified"] else "not certified" if c["certified"] is False else "—"),
                     "epsilon": None if c is None else c.get("epsilon"), "delta": None if c is None else c.get("delta"),
                     "covers": raw.get("estimand") or ("—" if c is None else "held-out items drawn like these"),
                     "why not": raw.get("why_not") or ""})
    parts.append(_table(pd.DataFrame(rows)))
    parts.append(run_details(runs))

    # per-group plots
    bt_ids = list(done.loc[done["family"] == "BT", "run_id"])
    faro_ids = list(done.loc[done["family"] != "BT", "run_id"])
    before = before or (bt_ids[0] if bt_ids else None)
    after = after or (faro_ids[0] if faro_ids else None)
    parts.append("<h2>Per-group view</h2>")
    if before and after:
        sb, sa = views.load_scores(store.get(before)), views.load_scores(store.get(after))
        fam = dict(zip(table["run_id"], table["family"]))
        name_b, name_a = f"{fam.get(before, 'BT')} ({before})", f"{fam.get(after, 'Faro')} ({after})"
        rb, ra = views.response_rewards(sb), views.response_rewards(sa)
        sizes = rb["group"].value_counts().to_dict()
        rw = {name_b: views.with_group_captions(rb, labels, counts=sizes),
              name_a: views.with_group_captions(ra, labels, counts=sizes)}
        roles = {name_b: views.role_rewards(sb), name_a: views.role_rewards(sa)}
        if not roles[name_b].empty:
            amb = {k: v[v["context_condition"] == "ambig"] for k, v in roles.items()}
            margins = {k: m[m["context_condition"] == "ambig"]
                       for k, m in ((name_b, views.role_margins(sb)), (name_a, views.role_margins(sa)))}
            parts.append("<p>By stereotype role, in ambiguous questions: each answer's reward within its question "
                         "(left half the standard model, right half Faro), and the stereotyped answer's margin over "
                         "the other person's (n = questions).</p>")
            parts.append(fig(pg.role_violin(amb)))
            parts.append(fig(pg.margin_histogram(margins)))
        parts.append(f"<p>Reward distributions per group, standard model (left half) vs Faro (right half). "
                     f"Spread of group mean rewards: {views.bias_gap(sb):.3f} → {views.bias_gap(sa):.3f} sd.</p>")
        parts.append(fig(pg.violin_before_after(rw)))
        acc = {}
        for name, sc in ((name_b, sb), (name_a, sa)):
            a = views.group_accuracy(sc, "category")
            acc[name] = a.assign(category=[f"{c} (n={n})" for c, n in zip(a["category"], a["n"])])
        parts.append(fig(pg.group_accuracy_bars(acc, "category")))
        parts.append(fig(pg.reliability_figure({fam.get(before, "BT"): views.reliability(sb),
                                                fam.get(after, "Faro"): views.reliability(sa)})))
    else:
        parts.append("<p class='muted'>Needs one finished BT run and one finished Faro run among the chosen runs.</p>")

    # policy and generations
    parts.append("<h2>Policy and example generations</h2>")
    pol_runs = [r for r in runs if r.file("policy.json").exists()]
    if pol_runs:
        frames = [views.policy_frame(r) for r in pol_runs]
        ref = frames[0][frames[0]["model"] == "reference LM"]
        frame = pd.concat([ref] + [f[f["model"] != "reference LM"] for f in frames], ignore_index=True)
        parts.append("<p>BBQ bias score in ambiguous contexts (s_AMB, 0 = unbiased) of the policy built on each "
                     "reward, as β varies.</p>")
        colors = {r: pg.method_color(f) for r, f in zip(table["run_id"], table["family"])}
        parts.append(fig(pg.policy_figure(frame, "s_amb", colors=colors)))
        sentence = reward_induced_text(pol_runs, table, story.get("faro_run") if story else None)
        if sentence:
            parts.append(f"<p class='reward-induced'>{_esc(sentence)}</p>")
        gen_runs = [r for r in pol_runs if r.file("policy_generations.parquet").exists()][:3]
        if gen_runs:
            gen = views.generations_side_by_side(gen_runs, n_prompts=3)
            for _pidx, g in gen.groupby("prompt_idx"):
                parts.append(f"<p><b>Prompt:</b> {_esc(g['user_text'].iloc[0])}</p>")
                show = g[["text"] + [c for c in g.columns if c.startswith(("reward:", "best:"))]]
                rows_html = []
                for _, row in show.iterrows():
                    picks = [c for c in show.columns if c.startswith("best:") and bool(row[c])]
                    cls = " class='changed'" if picks and len(picks) < len(gen_runs) else ""
                    rows_html.append(f"<tr{cls}>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>")
                parts.append("<table><tr>" + "".join(f"<th>{_esc(c)}</th>" for c in show.columns) + "</tr>"
                             + "".join(rows_html) + "</table>")
            parts.append("<p class='muted'>Highlighted: a sample picked as best by only some of the rewards.</p>")
    else:
        parts.append("<p class='muted'>Policy results not computed yet — run `faro policy RUN…`.</p>")

    parts.append(plotly_loader())
    body = "\n".join(parts)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_esc(title)}</title>"
            f"<style>{CSS}</style></head><body>{body}</body></html>")


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
    out = ["<h2>Each run: config, certificate, intervals</h2>"]
    for r in runs:
        cert = r.read("certificate.json") or {}
        ev = (r.read("eval.json") or {}).get("metrics") or {}
        inner = [f"<h3>Config</h3><pre>{_esc(json.dumps(r.config, indent=1, sort_keys=True, default=str))}</pre>"]
        if cert:
            bound = cert.get("bound") or "hoeffding (the only bound before variance-adaptive ones)"
            inner.append(f"<h3>Certificate</h3><p>bound: <b>{_esc(bound)}</b> · δ = {_fmt(cert.get('delta'))} · "
                         f"ε = {_fmt(cert.get('epsilon'))} · certified: <b>{_esc(cert.get('certified'))}</b>"
                         + (f" · certifiably above ε: <b>{_esc(cert.get('above_epsilon'))}</b>"
                            if "above_epsilon" in cert else "")
                         + (f" · largest upper bound {_fmt(cert.get('max_upper'))}" if cert.get("max_upper") is not None
                            else "") + f"</p><p>Covers: {_esc(cert.get('estimand') or 'held-out items drawn like these')}"
                         + (f" · no certificate: {_esc(cert['why_not'])}" if cert.get("why_not") else "") + "</p>")
            rows = pd.DataFrame(cert.get("bounds") or [])
            if not rows.empty:
                keep = [c for c in ("name", "kind", "bound", "empirical", "lower", "upper", "slack", "n_group",
                                    "n_anchor", "clusters", "n_eff", "n_to_certify", "epsilon") if c in rows]
                inner.append(_table(rows[keep]))
        else:
            inner.append(f"<p class='muted'>No certificate yet: <code>faro certify {_esc(r.run_id)}</code>.</p>")
        if ev:
            iv = pd.DataFrame([{"metric": k, "value": v.get("value"), "95% interval": (
                f"[{_fmt(v.get('lo'))}, {_fmt(v.get('hi'))}]" if v.get("lo") is not None else "—")}
                for k, v in ev.items() if isinstance(v, dict)])
            inner.append("<h3>Held-out metrics with intervals</h3>" + _table(iv))
        else:
            inner.append(f"<p class='muted'>No intervals yet: <code>faro eval {_esc(r.run_id)}</code>.</p>")
        out.append(f"<details><summary><code>{_esc(r.run_id)}</code> — {_esc(r.status)}</summary>"
                   + "".join(inner) + "</details>")
    return "".join(out)


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
