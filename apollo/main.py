"""`apollo`: the policy engine process."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from apollo.config import load_settings
from common.logs import configure
from common.settings import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="apollo", description=__doc__)
    parser.add_argument("--config", type=Path, help="YAML settings file (APOLLO_* variables override it)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"apollo: invalid settings: {exc}", file=sys.stderr)
        return 2
    configure("apollo", settings.log_level)
    from apollo.server import serve

    running = serve(settings)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    running.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
