"""Package layout that pyproject.toml cannot express (everything else is in pyproject.toml).

The demo data stay in the repository's ``data/demo_bbq/`` and are shipped inside the wheel as the data-only
package ``faro_core.demo_data``, so an installed ``faro`` finds them outside a checkout
(:data:`faro_core.paths.DEMO_DATA_DIR`). Every file under that folder is included, whatever its name.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["faro_core", "faro_core.*"]), "faro_core.demo_data"],
    package_dir={"faro_core.demo_data": "data/demo_bbq"},
    package_data={"faro_core.demo_data": ["**/*"]},
)
