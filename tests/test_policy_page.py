"""The Policy page and the report state what the reward adds to the reference LM's bias, naming the run, and
show the best-of-n choices with the disagreeing prompts first, counted by role (streamlit AppTest on a tiny
demo store: 2 epochs, a uniform reference policy, a few fixed replies scored by the runs' real rewards)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("streamlit")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from faro_core.policy.evaluate import (
        evaluate_policies,
        load_items,
        select_items,
        split_item_ids,
        write_policy,
    )
    from faro_core.policy.replies import demo_prompt_items
    from faro_core.policy.rerank import rerank_runs
    from faro_core.store.runs import RunStore
    from faro_core.studies.demo import build_demo, demo_specs

    root = tmp_path_factory.mktemp("runs")
    old = os.environ.get("FARO_RUNS_DIR")
    os.environ["FARO_RUNS_DIR"] = str(root)
    store = RunStore(root)
    build_demo(store, demo_specs(epsilons=(0.05,), constraints=("dp",), epochs=2), policy=False)
    runs = store.list()
    items = select_items(load_items("demo"), runs, split="test", seed=0, limit=120)
    result = evaluate_policies(runs, items, betas=[0.3, 1.0, 3.0, float("inf")],
                               log_ref=np.full((len(items), 3), np.log(1 / 3)))
    write_policy(runs, result)
    prompts = demo_prompt_items(split_item_ids(runs[0], "test"), n_prompts=4)
    rows = []
    for p, it in prompts.iterrows():
        a, b = [it["answers"][i] for i in range(3) if i != it["unknown_idx"]]
        for s, text in enumerate([f"{a} did it.", f"{b} did it.", "It cannot be determined.",
                                  "Those two are always Miso-fuckazio!"]):
            rows.append({"item_id": it["item_id"], "prompt_idx": p, "sample_idx": s, "user_text": it["user_text"],
                         "text": text, "n_tokens": 5})
    rerank_runs(runs, load_items("demo"), replies=pd.DataFrame(rows), betas=[1.0])
    yield root
    if old is None:
        os.environ.pop("FARO_RUNS_DIR", None)
    else:
        os.environ["FARO_RUNS_DIR"] = old


def _app():  # noqa: ANN202
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(ROOT / "dashboard" / "pages" / "5_Policy.py"), default_timeout=90)


def test_policy_page_states_the_reward_induced_bias_and_counts_choices_by_role(store_dir: Path) -> None:
    import json

    from faro_core.store.runs import RunStore

    at = _app().run()
    assert not at.exception, [e.value for e in at.exception]
    story = json.loads((store_dir / "story.json").read_text())
    assert at.multiselect[0].value[:2] == [story["bt_run"], story["faro_run"]]  # the Overview's pair by default
    text = " ".join(m.value for m in at.markdown)
    assert "What the reward adds to the reference LM's bias" in text
    assert "`demo-bt-s0`" in text and "`demo-faro-dp-eps0.05-s0`" in text and "at β = 1" in text
    ri = RunStore(store_dir).get("demo-bt-s0").read("policy.json")["reward_induced"]
    assert f"{ri['models']['demo-faro-dp-eps0.05-s0']['at_beta']['value']:+.3f}" in text
    assert "**4 prompts**" in text
    captions = " ".join(c.value for c in at.caption)
    assert "hides 4 of 16 replies" in captions  # the planted profane reply of each prompt
    from faro_core.policy.mentions import CLASS_WORDS

    assert any(w in captions for w in CLASS_WORDS.values())  # each card says what its reply names, in words
    assert "reward " in captions and " sd · " in captions
    at.checkbox[0].check().run()  # only where choices differ
    assert not at.exception


def test_report_states_the_reward_induced_bias(store_dir: Path) -> None:
    from faro_core.results.report import build_report
    from faro_core.store.runs import RunStore

    store = RunStore(store_dir)
    html = build_report(store, [r.run_id for r in store.list()])
    assert "What the reward adds to the reference LM" in html and "demo-faro-dp-eps0.05-s0" in html
