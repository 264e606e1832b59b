"""Does another checkout train the same models as this one? Weight hashes on identical inputs.

    python bench/trainer_equivalence.py --other /path/to/old/checkout [--data ../shared/data/bbq] [--epochs 8]

Each side runs in its own process, with the encoder replaced by a fixed function of the text (a normal vector
seeded by the SHA-256 of prompt and response), so that a difference in the printed weight hashes is the
trainer's, never the feature cache's (two cache versions encode a text in different batches, which moves
features by ~2e-7 and, over 50 epochs, the weights). Trains BT and Faro-DP/EO/CF at ε = 0.05 on BBQ with the
named-group attribute (skew 0.3, seed 0) and prints one table: per model, each side's weight hash, selected
step and test violations, and whether the weights are bit-identical. Used for issue #16's re-layout (the
other side: the commit before it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from faro_core.paths import SHARED_DATA  # noqa: E402

WORKER = r'''
import dataclasses, hashlib, json, sys, tempfile
import numpy as np
root, data, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.path.insert(0, root)
import faro_core.models.features as F

def fixed_features(self, prompts, responses, *a, **k):
    out = np.empty((len(prompts), 384), np.float32)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        seed = int.from_bytes(hashlib.sha256((p + "\x00" + r).encode()).digest()[:8], "little")
        out[i] = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    return out

F.FeatureCache.encode = fixed_features
from safetensors.torch import load_file
from faro_core.train import FaroConfig, train
try:
    from faro_core.store.runs import RunStore
except ImportError:  # before the re-layout
    from faro_core.runs import RunStore
store = RunStore(tempfile.mkdtemp())
fields = {f.name for f in dataclasses.fields(FaroConfig)}
for kinds in ([], ["dp"], ["eo"], ["cf"]):
    kw = dict(data=data, skew=0.3, constraints=kinds, epsilon=0.05, seed=0, epochs=epochs)
    if "attribute" in fields:
        kw["attribute"] = "group"
    run = train(FaroConfig(**kw), store, progress=False)
    w = load_file(str(run.file("model.safetensors")))
    digest = hashlib.sha256(b"".join(w[k].numpy().tobytes() for k in sorted(w))).hexdigest()[:16]
    m = run.metrics()
    print(json.dumps({"model": "+".join(kinds) or "bt", "weights": digest, "selected_step": m["selected_step"],
                      "test_violation": m["test"]["violation"], "file": __import__("faro_core").__file__}), flush=True)
'''


def side(root: Path, data: str, epochs: int) -> list[dict]:
    out = subprocess.run([sys.executable, "-c", WORKER, str(root), data, str(epochs)], capture_output=True,
                         text=True, cwd="/", check=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--other", required=True, help="the other checkout's root (e.g. a git worktree)")
    ap.add_argument("--data", default=str(SHARED_DATA / "bbq"))
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "trainer_equivalence.md"),
                    help="the table as Markdown ('' to skip)")
    args = ap.parse_args(argv)
    if not Path(args.data).exists():
        print(f"skipped: {args.data} is absent", file=sys.stderr)
        return 0
    other_root = Path(args.other).resolve()
    this, other = side(ROOT, args.data, args.epochs), side(other_root, args.data, args.epochs)
    for root, rows in ((ROOT, this), (other_root, other)):  # each side imported its own faro_core
        assert all(r["file"].startswith(str(root)) for r in rows), (root, rows[0]["file"])
    rev = subprocess.run(["git", "-C", str(other_root), "log", "-1", "--format=%h %s"], capture_output=True,
                         text=True).stdout.strip()[:90]
    lines = [f"`python bench/trainer_equivalence.py --other OTHER --epochs {args.epochs}` — this checkout against "
             f"OTHER = `{rev or other_root}`; data `{Path(args.data).name}`, skew 0.3, seed 0, named-group "
             "attribute, features a fixed function of the text on both sides.", "",
             "| model | weights (this) | weights (other) | bit-identical | selected step (this / other) | "
             "test DP / EO / CF (this) | (other) |", "|---|---|---|---|---|---|---|"]
    same = True
    for a, b in zip(this, other):
        va, vb = (" / ".join(f"{r['test_violation'][k]:.6f}" for k in ("dp", "eo", "cf")) for r in (a, b))
        same &= a["weights"] == b["weights"]
        lines.append(f"| {a['model']} | {a['weights']} | {b['weights']} | "
                     f"{'yes' if a['weights'] == b['weights'] else 'NO'} | {a['selected_step']} / {b['selected_step']} "
                     f"| {va} | {vb} |")
    text = "# Trainer equivalence: this checkout against another\n\n" + "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
