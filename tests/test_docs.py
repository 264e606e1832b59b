"""The README stays short and its links resolve; docs/RESULTS.md is what bench/readme.py writes from bench/results."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_tool():
    spec = importlib.util.spec_from_file_location("bench_readme", ROOT / "bench" / "readme.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_is_short_with_two_quickstart_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) <= 12_000, f"README is {len(text.encode())} bytes"
    quick = text.split("## Quickstart", 1)[1]
    block = re.search(r"```bash\n(.*?)```", quick, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]
    assert commands == ["make dashboard", "make test"]
    assert text.count("](docs/screenshots/") == 1  # one figure


def test_readme_and_results_links_resolve():
    for page in (ROOT / "README.md", ROOT / "docs" / "RESULTS.md", ROOT / "docs" / "DEFINITIONS.md"):
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if target.startswith("http"):
                continue
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_results_page_matches_bench_results():
    tool = _readme_tool()
    text = tool.TARGET.read_text()
    assert tool.BLOCK.search(text), "docs/RESULTS.md has no include blocks"
    assert tool.stale_blocks(text) == [], "docs/RESULTS.md is stale: run python bench/readme.py"


def test_refresh_fills_blocks_demotes_headings_and_reports_missing(tmp_path):
    tool = _readme_tool()
    (tmp_path / "bench" / "results").mkdir(parents=True)
    (tmp_path / "bench" / "results" / "a.md").write_text("# Title\n\n## Part\n\n| x |\n|---|\n| 1 |\n")
    (tmp_path / "bench" / "results" / "b.md").write_text("## Section as is\n\ntext\n")
    page = (
        "# Results\n\n## A\n\n<!-- include: bench/results/a.md -->\nold\n<!-- end include -->\n\n"
        "<!-- include: bench/results/b.md -->\n<!-- end include -->\n\n"
        "<!-- include: bench/results/gone.md -->\nkept\n<!-- end include -->\n"
    )
    fresh, missing = tool.refresh(page, tmp_path)
    assert missing == ["bench/results/gone.md"]
    assert "### Title\n\n#### Part\n\n| x |" in fresh and "old" not in fresh
    assert "## Section as is\n\ntext\n<!-- end include -->" in fresh
    assert "<!-- include: bench/results/gone.md -->\nkept\n" in fresh  # a missing file leaves its block alone
    assert tool.stale_blocks(page, tmp_path) == ["bench/results/a.md", "bench/results/b.md"]
    assert tool.stale_blocks(fresh, tmp_path) == []
    assert tool.refresh(fresh, tmp_path)[0] == fresh  # idempotent
