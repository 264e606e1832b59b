"""(Maintainers) rebuild the caches shipped with the demo data: ``faro_core/assets/demo_bbq/cache/``.

    python tools/make_demo_cache.py [--runs-dir DIR]

1. Features of every (prompt, answer) text of the demo items and their counterfactual twins under the
   embedded encoder (max_length 256, head mode's), stored as float32 safetensors keyed like the on-disk
   feature cache (:mod:`faro_core.models.features`).
2. The reference LM's log-likelihoods of the answers of the items the demo's policy stage evaluates (the demo
   runs' test split, capped by ``faro_core.studies.demo.DEMO_POLICY_ITEMS``), as Parquet keyed like
   :mod:`faro_core.policy.reference`'s cache. Needs the demo runs to exist in ``--runs-dir`` (build them with
   ``faro demo --no-policy`` first); skipped with a message otherwise.

Both are listed with their SHA-256 in ``manifest.json`` and verified on load (:mod:`faro_core.models.shipped`).
Computed through the same caches a run uses, so a second call reads instead of encoding.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from faro_core.data import load  # noqa: E402
from faro_core.io import write_parquet, write_safetensors  # noqa: E402
from faro_core.models.features import FeatureCache, backbone_key, text_key  # noqa: E402
from faro_core.models.shipped import MANIFEST, write_manifest  # noqa: E402
from faro_core.paths import DEMO_DATA_DIR  # noqa: E402

OUT = DEMO_DATA_DIR / "cache"
MAX_LENGTH = 256


def demo_texts() -> list[tuple[str, str]]:
    """Every distinct (prompt, response) the demo's head-mode runs encode, sorted."""
    df = load("demo").df
    pairs = set(zip(df["prompt"], df["chosen"])) | set(zip(df["prompt"], df["rejected"]))
    tw = df["cf_prompt"].notna()
    pairs |= set(zip(df.loc[tw, "cf_prompt"], df.loc[tw, "cf_chosen"]))
    pairs |= set(zip(df.loc[tw, "cf_prompt"], df.loc[tw, "cf_rejected"]))
    return sorted(pairs)


def build_features() -> dict:
    cache = FeatureCache(None, max_length=MAX_LENGTH)
    texts = demo_texts()
    feats = cache.encode([p for p, _ in texts], [r for _, r in texts])
    keys = np.frombuffer(b"".join(text_key(p, r, MAX_LENGTH) for p, r in texts), dtype=np.uint8)
    key = backbone_key(cache.backbone)
    name = f"features-{key}-L{MAX_LENGTH}.safetensors"
    write_safetensors(OUT / name, {"keys": torch.from_numpy(keys.reshape(len(texts), 20).copy()),
                                   "features": torch.from_numpy(feats.astype(np.float32))},
                      metadata={"backbone_key": key, "max_length": str(MAX_LENGTH)})
    return {"file": name, "kind": "features", "key": key, "max_length": MAX_LENGTH, "rows": len(texts),
            "dtype": "float32"}


def build_pi_ref(runs_dir: Path) -> dict | None:
    from faro_core.policy.evaluate import load_items, select_items
    from faro_core.policy.reference import _cache_root, _key, _read_cache, bbq_user_text, reference_logprobs
    from faro_core.store.runs import RunStore
    from faro_core.studies.demo import DEMO_POLICY_ITEMS, demo_specs

    store = RunStore(runs_dir)
    runs = [store.get(s.run_id) for s in demo_specs() if store.has(s.run_id)]
    if not runs:
        print(f"no demo runs in {runs_dir}: pi_ref scores not rebuilt (run `faro demo --no-policy` first)")
        return None
    items = select_items(load_items("demo"), runs, split="test", seed=0, limit=DEMO_POLICY_ITEMS)
    reference_logprobs(items)  # fills the local cache
    root = _cache_root(None)
    wanted = {_key(bbq_user_text(c, q), [str(a) for a in ans])
              for c, q, ans in zip(items["context"], items["question"], items["answers"])}
    cached = _read_cache(root)
    rows = cached[cached["key"].isin(wanted)].sort_values("key").reset_index(drop=True)
    name = f"pi_ref-{root.name}.parquet"
    write_parquet(OUT / name, pd.DataFrame({"key": rows["key"], "logp": rows["logp"], "ntok": rows["ntok"]}))
    return {"file": name, "kind": "pi_ref", "key": root.name, "rows": len(rows)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-dir", type=Path, default=Path("runs"))
    ap.add_argument("--no-pi-ref", action="store_true")
    ap.add_argument("--no-features", action="store_true",
                    help="keep the shipped features as they are (rebuild only the pi_ref scores, e.g. after the "
                         "demo's test items changed)")
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    old_entries = json.loads((OUT / MANIFEST).read_text())["files"] if (OUT / MANIFEST).exists() else []
    if args.no_features:
        entries = [{k: v for k, v in e.items() if k not in ("sha256", "bytes")} for e in old_entries
                   if e["kind"] == "features" and (OUT / e["file"]).exists()]
    else:
        entries = [build_features()]
    pi = None if args.no_pi_ref else build_pi_ref(args.runs_dir)
    if pi is None and old_entries:  # keep the scores already shipped
        pi = next(({k: v for k, v in e.items() if k not in ("sha256", "bytes")} for e in old_entries
                   if e["kind"] == "pi_ref" and (OUT / e["file"]).exists()), None)
    if pi:
        entries.append(pi)
    # other shipped files (the policy replies, made by `faro policy generate --ship`) stay listed as they are
    entries += [{k: v for k, v in e.items() if k not in ("sha256", "bytes")} for e in old_entries
                if e["kind"] not in ("features", "pi_ref") and (OUT / e["file"]).exists()]
    print(write_manifest(OUT, entries).read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
