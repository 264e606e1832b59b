"""Generation settings for a 135M LM on BBQ prompts: replies under 2-3 settings, for hand labels.

    python tools/policy_settings.py [--max-seconds 240] [--out /tmp/policy_settings_replies.json]

Draws ``--n`` replies for ``--prompts`` ambiguous demo test prompts (those after the demo's shipped 50 in
the same seeded order, so the labelled replies are not the shipped ones) under each setting of
:data:`SETTINGS`, resumable (the generation cache) and time-limited (``--max-seconds``: run it again to go
on). Writes every reply with its item's fields and an empty ``label`` for a person to fill in
(tests/data/README.md says how they were labelled). The on-topic rate per setting is computed from the
labels by ``tests/test_policy_choices.py`` (tests/data/policy_mentions.json) and stated in docs/POLICY.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faro_core.policy.generate import GenerationConfig  # noqa: E402
from faro_core.policy.replies import DEMO_N_PROMPTS, ON_TOPIC_SYSTEM, demo_prompt_items, generate_replies  # noqa: E402

SETTINGS = {
    "plain-t0.8": GenerationConfig(n=4, max_new_tokens=48, temperature=0.8, top_p=0.95, seed=0),
    "instructed-t0.7": GenerationConfig(n=4, max_new_tokens=40, temperature=0.7, top_p=0.9, seed=0,
                                        system=ON_TOPIC_SYSTEM),
    "options-t0.7": GenerationConfig(n=4, max_new_tokens=40, temperature=0.7, top_p=0.9, seed=0,
                                     system=ON_TOPIC_SYSTEM),
    "instructed-t1.0": GenerationConfig(n=4, max_new_tokens=40, temperature=1.0, top_p=0.95, seed=0,
                                        system=ON_TOPIC_SYSTEM),
}
FORMATS = {"options-t0.7": "options"}  # the others: "open"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=13)
    ap.add_argument("--max-seconds", type=float, default=240.0)
    ap.add_argument("--out", default="/tmp/policy_settings_replies.json")
    args = ap.parse_args()
    from faro_core.policy.replies import config_test_item_ids
    from faro_core.studies.demo import demo_split_config

    t0 = time.time()
    ids = config_test_item_ids(demo_split_config())
    rows, missing = [], 0
    for name, cfg in SETTINGS.items():
        prompts = demo_prompt_items(ids, n_prompts=None, prompt_format=FORMATS.get(name, "open"))
        prompts = prompts.iloc[DEMO_N_PROMPTS:DEMO_N_PROMPTS + args.prompts].reset_index(drop=True)
        left = None if args.max_seconds is None else max(0.0, args.max_seconds - (time.time() - t0))
        rep, miss = generate_replies(prompts, cfg, max_seconds=left)
        missing += miss
        for r in rep.itertuples(index=False):
            it = prompts.iloc[int(r.prompt_idx)]
            rows.append({"setting": name, "format": FORMATS.get(name, "open"), "item_id": r.item_id,
                         "sample_idx": int(r.sample_idx), "user_text": str(r.user_text),
                         "category": str(it["category"]), "context": str(it["context"]),
                         "question": str(it["question"]), "answers": [str(a) for a in it["answers"]],
                         "answer_terms": [str(a) for a in it["answer_terms"]],
                         "answer_tags": [None if a is None else str(a) for a in it["answer_tags"]],
                         "unknown_idx": int(it["unknown_idx"]), "target_idx": int(it["target_idx"]),
                         "biased_idx": int(it["biased_idx"]), "question_polarity": str(it["question_polarity"]),
                         "text": r.text, "n_tokens": int(r.n_tokens)})
    out = {"settings": {k: {**v.__dict__} for k, v in SETTINGS.items()}, "missing_prompts": missing,
           "seconds": round(time.time() - t0, 1), "replies": rows}
    Path(args.out).write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{len(rows)} replies, {missing} prompt-settings missing, {time.time() - t0:.0f} s -> {args.out}")
    return 0 if missing == 0 else 3


if __name__ == "__main__":
    raise SystemExit(main())
