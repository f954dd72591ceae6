"""``python -m bench.forecast``."""

import sys

from bench.forecast.cli import main

sys.exit(main())
