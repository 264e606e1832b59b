"""Shared test fixtures and the fast subset.

- ``shared_data``: the folder of the shared evaluation data (``../shared/data``); a test that needs it skips
  with a reason naming the missing folder (the data is never copied into the repository).
- ``demo_mini``: the tracked mini demo's source name; its folder missing is a failure (a broken checkout).
- ``make test-fast`` runs ``-m "not slow"``: every test of a module in :data:`SLOW_MODULES` (they build
  dashboards, train many runs, kill processes, install wheels or start servers) is marked ``slow`` here, so
  the modules need no marker of their own.
- Parallel runs (``pytest -n 2``, what ``make test`` does): each module's tests stay on one worker (``--dist
  loadgroup`` with a group per module), so a module's fixtures are built once; the modules that start a local
  Ray head share one group, so two Ray heads never start at once. The heaviest modules are scheduled first,
  so the two workers finish together.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from faro_core.paths import DEMO_MINI_DIR, SHARED_DATA

ROOT = Path(__file__).resolve().parent.parent
SLOW_MODULES = {
    "test_browser", "test_package", "test_crash", "test_concurrency", "test_dashboard", "test_ray_launch",
    "test_batched", "test_trl", "test_export", "test_policy", "test_fuzz", "test_baselines", "test_sweep",
    "test_role", "test_bold", "test_train", "test_cli_runs", "test_config", "test_safety",
    "test_trl_agreement", "test_trl_workflow", "test_policy_page",
}


# modules that must not run beside each other on two workers: they start a local Ray head
SHARED_GROUPS = {"test_ray_launch": "ray", "test_sweep": "ray"}
# the longest modules (seconds measured on 2 cores), first in the schedule; the rest keep their order
HEAVY_FIRST = ("test_batched", "test_package", "test_dashboard", "test_export", "test_train", "test_baselines",
               "test_crash", "test_policy", "test_ray_launch", "test_sweep", "test_browser", "test_trl_workflow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        stem = Path(str(item.fspath)).stem
        if stem in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
        item.add_marker(pytest.mark.xdist_group(SHARED_GROUPS.get(stem, stem)))
    rank = {stem: i for i, stem in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda it: rank.get(Path(str(it.fspath)).stem, len(rank)))  # stable: file order within


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared evaluation data ({SHARED_DATA}) is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def demo_mini() -> str:
    assert DEMO_MINI_DIR.is_dir(), f"the tracked mini demo {DEMO_MINI_DIR} is missing"
    return "demo-mini"
