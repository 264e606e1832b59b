"""The model card (``README.md``) of an exported run, with the Hugging Face hub's YAML metadata.

Metadata (``huggingface_hub.ModelCardData``): ``base_model``, ``datasets``, ``library_name``, ``tags``,
``model-index`` (held-out metrics as the hub's eval results) and a ``faro`` block: method, mode, constraints,
epsilon, every held-out metric with its 95% interval (item-level bootstrap, :mod:`faro_core.evaluate.metrics`)
and the fairness certificate with its bound type per constraint kind (:mod:`faro_core.evaluate.certify`). A run
without ``eval.json`` or ``certificate.json`` is evaluated / certified first (both are written into the run).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

# What each bound certify.py names is (its docstring and faro_core.evaluate.bounds have the formulas).
BOUND_NAMES = {
    "clopper-pearson": "exact binomial (Clopper-Pearson) bounds per rate, the two rates combined",
    "bernstein": "empirical Bernstein bound on a difference of two rates",
    "hoeffding": "Hoeffding bound on a difference of two rates",
    "empirical-bernstein": "empirical Bernstein bound on the mean clipped |r - r_twin|",
}
UNION = "; union bound over the one-sided constraints (delta' = delta / m)"


def bound_types(cert: dict[str, Any]) -> dict[str, str]:
    """{kind: the bound its certificate rows use, in words} (a kind whose rows use several lists them all)."""
    used: dict[str, list[str]] = {}
    for r in cert.get("bounds") or []:
        name = str(r.get("bound") or cert.get("bound") or "")
        if name and name not in used.setdefault(r["kind"], []):
            used[r["kind"]].append(name)
    return {k: " + ".join(BOUND_NAMES.get(n, n) for n in names) + UNION for k, names in used.items()}
TAGS = ["reward-model", "bradley-terry", "fairness", "faro"]


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def card_inputs(run: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(eval.json's held-out result, certificate.json, data.json) of a run, computing the first two if missing."""
    from faro_core.evaluate.certify import certify_run
    from faro_core.evaluate.metrics import evaluate_run

    ev = run.read("eval.json")
    if not ev or "metrics" not in ev:
        ev = evaluate_run(run)
    cert = run.read("certificate.json") or certify_run(run)
    return ev, cert, run.read("data.json") or {}


def card_metadata(run: Any, record: dict[str, Any]) -> dict[str, Any]:
    """The YAML metadata of the card as a plain dict (what :func:`write_model_card` writes)."""
    from huggingface_hub import EvalResult, ModelCardData

    ev, cert, data = card_inputs(run)
    cfg = run.config
    dataset = str(data.get("name") or cfg.get("data") or "faro-demo-bbq")
    metrics = {k: {"value": _num(v.get("value")), "lo": _num(v.get("lo")), "hi": _num(v.get("hi")),
                   **({"why": v["why"]} if v.get("why") else {})}
               for k, v in (ev.get("metrics") or {}).items() if _num(v.get("value")) is not None}
    boot = ev.get("bootstrap") or {}
    results = [EvalResult(task_type="text-classification", task_name="Reward modeling (pairwise preference)",
                          dataset_type=dataset, dataset_name=dataset, dataset_split=ev.get("split", "test"),
                          metric_type=name, metric_name=name.replace("_", " "), metric_value=m["value"])
               for name, m in metrics.items() if m["value"] is not None]
    certificate = {"certified": bool(cert.get("certified")), "epsilon": _num(cert.get("epsilon")),
                   "delta": _num(cert.get("delta")), "one_sided_constraints": cert.get("m"),
                   "max_upper_bound": _num(cert.get("max_upper")), "binding": cert.get("binding"),
                   "split": cert.get("split", "test"),
                   "bound": cert.get("bound"), "bound_type": bound_types(cert),
                   "unit": cert.get("unit", "item"), "split_by": cert.get("split_by", cfg.get("split_by") or "item"),
                   "estimand": cert.get("estimand") or "held-out items drawn like these",
                   "why_not": cert.get("why_not"),
                   "by_kind": {k: {"certified": bool(v.get("certified")),
                                   "max_empirical": _num(v.get("max_empirical")),
                                   "max_upper_bound": _num(v.get("max_upper"))}
                               for k, v in (cert.get("by_kind") or {}).items()}}
    eps = _num(cfg.get("epsilon"))
    base = record.get("base_model")
    data_card = ModelCardData(
        base_model=base or None, datasets=[dataset], library_name=(
            "sentence-transformers" if record["format"] == "sentence-transformers" else "transformers"),
        pipeline_tag="text-classification" if record["format"] == "transformers" else None,
        license="apache-2.0" if base == "sentence-transformers/all-MiniLM-L6-v2" else None,
        tags=[*TAGS, record["format"]], model_name=f"faro-{run.run_id}", eval_results=results or None,
        faro={"run_id": run.run_id, "method": cfg.get("method", "faro"), "mode": record["mode"],
              "constraints": list(cfg.get("constraints") or []), "epsilon": eps,
              "attribute": cfg.get("group") or "group", "strata": data.get("strata") or cfg.get("strata"),
              "metrics": metrics, "interval": {"level": boot.get("level", 0.95), "unit": boot.get("unit", "item"),
                                               "resamples": boot.get("n"), "method": boot.get("method")},
              "pairs": ev.get("pairs"), "items": ev.get("items"), "certificate": certificate,
              "posthoc_shifts_not_applied": record.get("posthoc_shifts_not_applied", False)},
    )
    return data_card.to_dict()


def _fmt(m: dict[str, Any]) -> str:
    if m.get("value") is None:
        return "n/a"
    if m.get("lo") is None or m.get("hi") is None:
        return f"{m['value']:.4f}"
    return f"{m['value']:.4f} [{m['lo']:.4f}, {m['hi']:.4f}]" + (f" ({m['why']})" if m.get("why") else "")


def card_text(run: Any, record: dict[str, Any]) -> str:
    """The whole README.md: YAML front matter and a short body."""
    import yaml

    meta = card_metadata(run, record)
    faro = meta["faro"]
    cons = ", ".join(c.upper() for c in faro["constraints"]) or "none"
    lines = [f"# Faro reward model `{run.run_id}`", "",
             f"A Bradley-Terry reward model trained with Faro (method `{faro['method']}`, {faro['mode']} mode) "
             f"under fairness constraints: {cons}" + (f", slack eps = {faro['epsilon']:g}." if faro["epsilon"]
                                                      is not None and faro["constraints"] else "."), ""]
    if record["format"] == "sentence-transformers":
        lines += ["```python", "from sentence_transformers import SentenceTransformer",
                  "model = SentenceTransformer(\"PATH\")",
                  "reward = model.encode([(prompt, response)])[:, 0]  # one float per (prompt, response) pair",
                  "```", ""]
    else:
        lines += ["```python", "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
                  "tok = AutoTokenizer.from_pretrained(\"PATH\")",
                  "model = AutoModelForSequenceClassification.from_pretrained(\"PATH\")  # num_labels=1",
                  "reward = model(**tok(prompt, response, truncation=True, return_tensors=\"pt\")).logits[0, 0]",
                  "```", "", "The input is the sentence pair (prompt, response), as in training.", ""]
    level = faro["interval"]["level"]
    lines += [f"## Held-out metrics ({faro['pairs']} pairs, {faro['items']} items; {level:.0%} bootstrap "
              f"intervals by {faro['interval']['unit']})", "", "| metric | value [interval] |", "|---|---|"]
    lines += [f"| {k} | {_fmt(m)} |" for k, m in faro["metrics"].items()]
    c = faro["certificate"]
    lines += ["", "## Fairness certificate", "",
              f"{'Certified' if c['certified'] else 'Not certified'} at eps = {c['epsilon']} with failure "
              f"probability delta = {c['delta']} over {c['one_sided_constraints']} one-sided constraints "
              f"({c['split']} split); largest upper bound {c['max_upper_bound']} ({c['binding']}).", "",
              f"What it covers: {c['estimand']} (independent draws: {c['unit']}s of the {c['split_by']} split)."
              + (f" No certificate: {c['why_not']}." if c.get("why_not") else ""), ""]
    lines += [f"- {k.upper()}: {v}" for k, v in c["bound_type"].items()]
    if faro["posthoc_shifts_not_applied"]:
        lines += ["", "**Note:** this run is the post-processing baseline. Its per-(group, stratum) shifts need the "
                  "group each response names, which the model's input does not carry; the exported model is the "
                  "unshifted one (the shifts are in `faro_config.json`'s run and the run's `model.json`)."]
    lines += ["", "The run's configuration is in `faro_config.json`; `faro_export.json` records the export and "
              "its check against the run's own scores."]
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    return f"---\n{front}---\n\n" + "\n".join(lines) + "\n"


def write_model_card(run: Any, path: str | Path, record: dict[str, Any]) -> Path:
    """Write ``README.md`` into ``path``; returns its path."""
    out = Path(path) / "README.md"
    out.write_text(card_text(run, record), encoding="utf-8")
    return out
