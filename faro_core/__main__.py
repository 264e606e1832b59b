"""``python -m faro_core``: the ``faro`` command line."""

import sys

from faro_core.cli import main

sys.exit(main())
