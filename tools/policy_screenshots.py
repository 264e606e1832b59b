"""(Docs) the Policy page's two screenshots for docs/DASHBOARD.md, from a demo store, in headless Chromium.

    python tools/policy_screenshots.py RUNS_DIR [--out docs/screenshots]

Serves the dashboard on RUNS_DIR (read only; e.g. the store ``faro demo --runs-dir DIR`` builds) and writes
``policy_default.png`` (the page as it opens: the BBQ scores at β, what the reward adds, then the generations
compared with the choices counted by role and the first cards) and ``policy_differ.png`` (the generations
section with "Only where choices differ" ticked). Debian's /usr/bin/chromium via playwright, as
tests/test_browser.py. The viewport is tall enough that Streamlit renders the whole page without its inner
scrolling; each shot is then clipped to its part of the page.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "dashboard"))

from serve import launch_browser, start_server, stop_server, wait_health, wait_ready  # noqa: E402

WIDTH = 1400
VIEW_HEIGHT = 12000  # taller than the page: Streamlit renders everything, the shots are clipped
DEFAULT_CARDS = 3  # prompts of cards in the default view's shot
DIFFER_CARDS = 5  # ... and in the "only where choices differ" shot


def _y_of_text(page, text: str) -> float:  # noqa: ANN001
    box = page.get_by_text(text, exact=True).first.bounding_box()
    if box is None:
        raise SystemExit(f"'{text}' is not on the Policy page")
    return float(box["y"])


def _card_bottom(page, n_cards: int) -> float:  # noqa: ANN001
    """The bottom of the n-th card row below 'Generations compared' (the bordered containers' rows)."""
    top = _y_of_text(page, "Generations compared")
    boxes = page.locator('[data-testid="stMainBlockContainer"] [data-testid="stHorizontalBlock"]')
    rows = []
    for i in range(boxes.count()):
        b = boxes.nth(i).bounding_box()
        if b and b["y"] > top and boxes.nth(i).locator("code").count():  # a card row names its runs in <code>
            rows.append(b)
    rows.sort(key=lambda b: b["y"])
    if not rows:
        raise SystemExit("no cards on the Policy page")
    last = rows[min(n_cards, len(rows)) - 1]
    return float(last["y"] + last["height"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs_dir")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    proc, url = start_server(args.runs_dir, log=Path("/tmp/faro-policy-screenshots.log"))
    try:
        wait_health(url)
        with sync_playwright() as pw:
            browser = launch_browser(pw)
            try:
                page = browser.new_page(viewport={"width": WIDTH, "height": VIEW_HEIGHT})
                page.goto(f"{url}/Policy")
                wait_ready(page, settle_s=4.0)
                if page.query_selector('[data-testid="stException"]') is not None:
                    raise SystemExit(page.inner_text('[data-testid="stException"]')[:500])
                bottom = _card_bottom(page, DEFAULT_CARDS) + 16
                page.screenshot(path=str(args.out / "policy_default.png"), clip={"x": 0, "y": 0, "width": WIDTH,
                                                                        "height": bottom})
                page.get_by_text("Only where choices differ", exact=True).click()
                wait_ready(page, settle_s=3.0)
                top = _y_of_text(page, "Generations compared") - 24
                bottom = _card_bottom(page, DIFFER_CARDS) + 16
                main_box = page.locator('[data-testid="stMainBlockContainer"]').bounding_box() or {"x": 0}
                x = max(0.0, float(main_box["x"]) - 8)
                page.screenshot(path=str(args.out / "policy_differ.png"),
                                clip={"x": x, "y": top, "width": WIDTH - x, "height": bottom - top})
            finally:
                browser.close()
    finally:
        stop_server(proc)
    for name in ("policy_default.png", "policy_differ.png"):
        p = args.out / name
        print(f"{p} ({p.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
