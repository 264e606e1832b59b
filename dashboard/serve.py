"""Start the dashboard server and drive it from headless Chromium (browser test, latency bench, screenshots).

Uses Debian's ``/usr/bin/chromium`` through playwright (never downloads a browser) and binds the server to
localhost on a free port.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
APP = REPO / "dashboard" / "app.py"
CHROMIUM = os.environ.get("FARO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PAGES = {"overview": "", "data": "Data", "train": "Train", "pareto": "Pareto", "groups": "Groups",
         "policy": "Policy", "report": "Report"}


def free_port() -> int:
    """A free TCP port on localhost."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(runs_dir: str | Path, port: int | None = None, log: Path | None = None
                 ) -> tuple[subprocess.Popen[bytes], str]:
    """``streamlit run dashboard/app.py`` on localhost:port with ``FARO_RUNS_DIR``; returns (process, url)."""
    port = port or free_port()
    env = {**os.environ, "FARO_RUNS_DIR": str(runs_dir)}
    out = open(log, "wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port),
         "--server.address", "localhost", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"http://localhost:{port}"


def wait_health(url: str, timeout_s: float = 60.0) -> None:
    """Block until the server answers its health check."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"dashboard at {url} did not come up within {timeout_s:.0f} s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the server's process group."""
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def launch_browser(pw: Any) -> Any:
    """Headless Debian Chromium through playwright."""
    return pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def wait_ready(page: Any, timeout_s: float = 60.0, settle_s: float = 0.5) -> None:
    """Wait until the page's script has run: a title is shown and Streamlit's 'running' widget is gone."""
    page.wait_for_selector('[data-testid="stMainBlockContainer"] h1', timeout=timeout_s * 1000)
    deadline = time.time() + timeout_s

    def busy() -> bool:
        for sel in ('[data-testid="stStatusWidget"]', '[data-testid="stSpinner"]'):  # running; a reader computing
            el = page.query_selector(sel)
            if el is not None and el.is_visible():
                return True
        return False

    while time.time() < deadline:
        if not busy():
            break
        time.sleep(0.1)
    time.sleep(settle_s)
    while settle_s and busy() and time.time() < deadline:  # a spinner that came up during the settle
        time.sleep(0.2)
    if settle_s:
        time.sleep(min(settle_s, 1.0))
