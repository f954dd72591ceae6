"""`apollo`: the policy engine process."""

from __future__ import annotations

import signal
import sys
import threading

from apollo.config import load_settings
from common.cli import settings_from_cli


def main(argv: list[str] | None = None) -> int:
    settings = settings_from_cli("apollo", __doc__, "APOLLO", load_settings, argv)
    if settings is None:
        return 2
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
