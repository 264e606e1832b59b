"""``faro runs list|show|rm``: look into the run store and tidy it."""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import socket
import sys
import time
from typing import Any

from faro_core.fairness.kinds import KINDS
from faro_core.io import to_json

ACTIVE = ("queued", "running")


def _num(x: Any, fmt: str = ".3f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(float(x), fmt)


def _eps(x: Any) -> str:
    return "inf" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{float(x):g}"


def run_row(run) -> dict[str, Any]:
    """One run's line: status, method, kinds, eps, seed and its test-split metrics (val when no test)."""
    from faro_core.results.table import family_label

    s = run.summary()
    cfg = run.read("config.json", {}) or {}
    m = s["metrics"] or {}
    split = m.get("test") or m
    viol = split.get("violation") or {}
    cert = run.read("certificate.json")
    return {"run_id": s["run_id"], "status": s["status"], "method": family_label(cfg) if cfg.get("method") else "-",
            "kind": ",".join(s["constraints"] or []) or "-", "epsilon": s["epsilon"], "seed": s["seed"],
            "mode": s["mode"], "sweep": s["sweep"], "progress": s["progress"],
            "split": "test" if m.get("test") else ("val" if m else None),
            "accuracy": split.get("accuracy"), "gold_accuracy": split.get("gold_accuracy"),
            **{f"violation_{k}": viol.get(k) for k in KINDS},
            "certified": None if cert is None else bool(cert.get("certified"))}


def _table(rows: list[dict[str, Any]]) -> str:
    cols = [("run_id", "run"), ("status", "status"), ("method", "method"), ("kind", "kind"),
            ("epsilon", "eps"), ("seed", "seed"), ("gold_accuracy", "gold acc"), ("violation_dp", "viol dp"),
            ("violation_eo", "viol eo"), ("violation_cf", "viol cf"), ("certified", "certified")]

    def cell(r: dict[str, Any], k: str) -> str:
        v = r[k]
        if k == "epsilon":
            return _eps(v) if r["kind"] != "-" else "-"
        if k in ("gold_accuracy",) or k.startswith("violation_"):
            return _num(v)
        if k == "certified":
            return "-" if v is None else ("yes" if v else "no")
        if k == "status" and v == "running":
            return f"running {100 * (r['progress'] or 0):.0f}%"
        return "-" if v is None else str(v)

    body = [[cell(r, k) for k, _ in cols] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, (_, h) in enumerate(cols)]
    lines = ["  ".join(h.ljust(w) for (_, h), w in zip(cols, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(line.rstrip() for line in lines)


def cmd_list(args: argparse.Namespace) -> int:
    from faro_core.store.runs import RunStore

    store = RunStore(args.runs_dir)
    runs = store.list()
    rows = [run_row(r) for r in runs]
    if args.sweep:
        rows = [r for r in rows if r["sweep"] == args.sweep]
    if args.status:
        rows = [r for r in rows if r["status"] == args.status]
    if args.json:
        print(to_json(rows))
    elif not rows:
        print(f"no runs in {store.root}" + (" matching the filter" if runs else ""))
    else:
        print(_table(rows))
        print(f"\n{len(rows)} run(s) in {store.root}; metrics on the test split (val where a run has no test "
              f"metrics); `faro runs show RUN` for one run")
    return 0


def show(run) -> dict[str, Any]:
    """Everything ``faro runs show`` prints: row, config, metrics and certificate summaries, files."""
    cert = run.read("certificate.json")
    cert_summary = None if cert is None else {
        k: cert.get(k) for k in ("certified", "epsilon", "delta", "kinds", "max_upper", "min_slack", "binding",
                                 "by_kind")}
    st = run.raw_status()
    return {"run": run_row(run), "path": str(run.path), "config": run.config, "metrics": run.metrics(),
            "certificate": cert_summary, "error": st.get("error") if run.status == "failed" else None,
            "files": sorted(p.name for p in run.path.iterdir() if not p.name.startswith("."))}


def cmd_show(args: argparse.Namespace) -> int:
    from faro_core.store.runs import RunStore

    run = RunStore(args.runs_dir).get(args.run)
    out = show(run)
    if args.json:
        print(to_json(out))
        return 0
    r = out["run"]
    print(f"run {r['run_id']}: {r['status']}  ({out['path']})")
    if out["error"]:
        print(f"  error: {out['error']}")
    print(f"  method {r['method']}, kind {r['kind']}, eps {_eps(r['epsilon']) if r['kind'] != '-' else '-'}, "
          f"seed {r['seed']}, mode {r['mode']}" + (f", sweep {r['sweep']}" if r["sweep"] else ""))
    print("config:")
    for k, v in out["config"].items():
        print(f"  {k}: {v}")
    m = out["metrics"]
    if m:
        print("metrics:")
        for split in ("val", "test", "train"):
            d = m if split == "val" else (m.get(split) or {})
            if not d:
                continue
            viol = ", ".join(f"{k} {_num(v)}" for k, v in (d.get("violation") or {}).items())
            print(f"  {split}: accuracy {_num(d.get('accuracy'))}, gold accuracy {_num(d.get('gold_accuracy'))}, "
                  f"violation {viol or '-'}, feasible {d.get('feasible')}, pairs {d.get('pairs')}")
        if m.get("selected_by"):
            print(f"  selected step {m.get('selected_step')} of {m.get('steps')} (by {m['selected_by']})")
    c = out["certificate"]
    if c:
        verdict = "certified" if c["certified"] else "not certified"
        print(f"certificate: {verdict} at eps {_eps(c['epsilon'])}, delta {c['delta']} (largest upper bound "
              f"{_num(c['max_upper'])}, binding {c['binding']})")
    else:
        print(f"certificate: none (`faro certify {r['run_id']}`)")
    print("files: " + ", ".join(out["files"]))
    return 0


def _stop(run, wait_s: float = 10.0) -> None:
    """SIGTERM the process that runs ``run`` (its process group when the launcher started it)."""
    from faro_core.store.runs import _pid_alive

    info = run.read("launch.json") or {}
    st = run.raw_status()
    pid = st.get("pid") if st.get("host") == socket.gethostname() else None
    pid = pid if isinstance(pid, int) else info.get("pid")
    if not isinstance(pid, int) or not _pid_alive(pid):
        return
    try:
        if info.get("pgid"):
            os.killpg(int(info["pgid"]), signal.SIGTERM)
        else:
            os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.time() + wait_s
    while time.time() < deadline and _pid_alive(pid):
        time.sleep(0.1)


def cmd_rm(args: argparse.Namespace) -> int:
    from faro_core.errors import RunError
    from faro_core.store.runs import RunStore

    store = RunStore(args.runs_dir)
    runs = [store.get(r) for r in args.runs]  # every id valid and known before anything is removed
    busy = [r.run_id for r in runs if r.status in ACTIVE]
    if busy and not args.force:
        raise RunError(f"run {busy[0]!r} is {store.get(busy[0]).status}; wait for it, cancel it, or pass --force "
                       f"to stop and remove it")
    for run in runs:
        if run.status in ACTIVE:
            _stop(run)
        path = store.path(run.run_id)  # re-checked: a real directory inside the store, not a link
        shutil.rmtree(path)
        print(f"removed {run.run_id}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(to_json({"removed": [r.run_id for r in runs]}))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list, show or remove runs in the run store",
                       description="Look into the run store: list runs, show one, remove runs.")
    rs = p.add_subparsers(dest="runs_command", metavar="ACTION", parser_class=type(p))
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--runs-dir", default=None, help="run store directory (default ./runs or $FARO_RUNS_DIR)")
        q.add_argument("--json", action="store_true", help="print one JSON value")

    q = rs.add_parser("list", help="every run: status, method, kind, eps, seed, test metrics")
    common(q)
    q.add_argument("--sweep", default=None, help="only runs of this sweep")
    q.add_argument("--status", default=None, choices=["queued", "running", "done", "failed", "interrupted"])
    q.set_defaults(func=cmd_list)
    q = rs.add_parser("show", help="one run: config, metrics, certificate summary, files")
    common(q)
    q.add_argument("run", metavar="RUN")
    q.set_defaults(func=cmd_show)
    q = rs.add_parser("rm", help="remove runs (refuses a queued or running one unless --force)")
    common(q)
    q.add_argument("runs", metavar="RUN", nargs="+")
    q.add_argument("--force", action="store_true", help="stop a queued or running run first, then remove it")
    q.set_defaults(func=cmd_rm)
