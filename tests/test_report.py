"""The HTML report renders through autoescaped Jinja2 templates: text a user chose (a run's name, a group, a
stratum, a dataset's name, the title) reaches the page as text, never as markup."""

from __future__ import annotations

import json
import time
from pathlib import Path

from faro_core.results.report import build_report
from faro_core.store.runs import RunStore

EVIL = "<script>alert('x')</script>"


def test_user_text_is_escaped(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    run = store.create({"name": EVIL, "method": "bt"}, run_id="bt-s0")
    (run.path / "status.json").write_text(json.dumps({"status": "done", "created": time.time()}))
    (run.path / "data.json").write_text(json.dumps({"name": EVIL, "pairs": {"train": 3}, "groups": {EVIL: 3},
                                                    "strata": [EVIL]}))
    text = build_report(store, ["bt-s0"], title=EVIL)
    assert EVIL not in text and "alert(" in text  # there, but as text
    escaped = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"
    assert text.count(escaped) >= 6  # title twice, dataset, strata, the group (label and tag), the config's name
    assert f"<title>{escaped}</title>" in text and f"<td>{escaped}</td>" in text
