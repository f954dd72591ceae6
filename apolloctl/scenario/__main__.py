"""`python -m apolloctl.scenario [--keep] [--plot FILE]`: the story on a cluster of its own."""

import sys

from apolloctl.scenario.entrypoints import main

if __name__ == "__main__":
    sys.exit(main())
