"""Package layout that pyproject.toml cannot express (everything else is in pyproject.toml).

The demo data stay in the repository's ``data/demo_bbq/`` and ``data/demo_mini/`` and are shipped inside the
wheel as the data-only packages ``faro_core.demo_data`` and ``faro_core.demo_mini`` (faro_core.paths.SHIPPED_DATA), so an installed ``faro`` finds them outside a checkout
(:data:`faro_core.paths.DEMO_DATA_DIR`). Every file under that folder is included, whatever its name.
"""

from setuptools import find_namespace_packages, setup

setup(
    # namespace packages too: a subpackage folder without __init__.py (faro_core/store/, faro_core/studies/) is
    # still a package, and find_packages would leave it out of the wheel
    packages=[*find_namespace_packages(include=["faro_core", "faro_core.*"], exclude=["*.__pycache__"]),
              "faro_core.demo_data", "faro_core.demo_mini"],
    package_dir={"faro_core.demo_data": "data/demo_bbq", "faro_core.demo_mini": "data/demo_mini"},
    # the report's plotly.js bundle: the HTML report is self-contained and works offline
    package_data={"faro_core.demo_data": ["**/*"], "faro_core.demo_mini": ["**/*"], "faro_core.results": ["assets/*", "templates/*"]},
)
