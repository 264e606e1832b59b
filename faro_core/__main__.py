import sys

from faro_core.cli import main

sys.exit(main())
