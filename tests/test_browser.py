"""Every dashboard page in headless Chromium: loads, shows no exception, screenshot saved.

Server on localhost (free port); Debian's /usr/bin/chromium via playwright (never downloads a browser).
Screenshots go to artifacts/screenshots/<page>.png; with ``FARO_BROWSER_RUNS_DIR`` (a full demo store) they
are also copied to docs/screenshots/ for docs/DASHBOARD.md (the README shows the Overview), so a plain test run
leaves the tree clean.
Run store: a tiny demo build in a temporary directory, or ``FARO_BROWSER_RUNS_DIR`` (an existing store,
e.g. the full `faro demo`, used read-only) for README screenshots.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "dashboard"))

playwright = pytest.importorskip("playwright.sync_api")
if not Path(os.environ.get("FARO_CHROMIUM", "/usr/bin/chromium")).exists():
    pytest.skip("no /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)

from serve import PAGES, launch_browser, start_server, stop_server, wait_health, wait_ready  # noqa: E402

# each page's st.title, which tells the page apart from the main page Streamlit falls back to
TITLES = {"overview": "Faro", "data": "Data", "train": "Train", "pareto": "Accuracy–fairness front",
          "groups": "Groups", "policy": "Does fairness transfer", "report": "Stakeholder report"}
SHOTS = ROOT / "artifacts" / "screenshots"
DOCS_SHOTS = ROOT / "docs" / "screenshots"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> str:
    runs = os.environ.get("FARO_BROWSER_RUNS_DIR")
    if not runs:
        from faro_core.store.runs import RunStore
        from faro_core.studies.demo import build_demo, demo_specs

        runs = str(tmp_path_factory.mktemp("browser-runs"))
        build_demo(RunStore(runs), demo_specs(epsilons=(0.05,), constraints=("dp", "cf"), epochs=2), policy=False)
    log = tmp_path_factory.mktemp("server") / "streamlit.log"
    proc, url = start_server(runs, log=log)
    try:
        wait_health(url)
        yield url
    finally:
        stop_server(proc)


def test_every_page_in_chromium(server: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
    failures = []
    with playwright.sync_playwright() as pw:
        browser = launch_browser(pw)
        try:
            # tall enough that each page's content is in the shot (Streamlit scrolls inside its own container)
            page = browser.new_page(viewport={"width": 1400, "height": 1800 if os.environ.get(
                "FARO_BROWSER_RUNS_DIR") else 1000})
            for name, path in PAGES.items():
                page.goto(f"{server}/{path}")
                wait_ready(page, settle_s=3.0 if os.environ.get("FARO_BROWSER_RUNS_DIR") else 1.5)
                if page.query_selector('[data-testid="stException"]') is not None:
                    failures.append(f"{name}: {page.inner_text('[data-testid=stException]')[:300]}")
                # a missing page file is no exception: Streamlit shows the main page and "Page not found"
                title = page.inner_text("h1").strip()
                if page.get_by_text("Page not found").count() or not title.startswith(TITLES[name]):
                    failures.append(f"{name}: not its page (h1 {title!r})")
                nav = page.query_selector_all('[data-testid="stSidebarNav"] a')
                first = nav[0].inner_text().strip().splitlines()[-1].strip() if nav else ""  # after the icon
                if first != "Overview":
                    failures.append(f"{name}: the sidebar's first item reads {first!r}, not 'Overview'")
                shot = SHOTS / f"{name}.png"
                page.screenshot(path=str(shot), full_page=True)
                if os.environ.get("FARO_BROWSER_RUNS_DIR"):
                    shutil.copy(shot, DOCS_SHOTS / shot.name)
        finally:
            browser.close()
    assert not failures, failures
    assert all((SHOTS / f"{n}.png").stat().st_size > 10_000 for n in PAGES)
