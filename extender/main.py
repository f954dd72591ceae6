"""`apollo-extender`: the extender under gunicorn, configured from EXTENDER_* settings."""

from __future__ import annotations

import sys
from functools import partial

from common.cli import settings_from_cli
from common.server import GunicornService, prepare_multiprocess_metrics
from extender.app import create_app
from extender.config import load_settings

SERVICE = "apollo-extender"


def main(argv: list[str] | None = None) -> int:
    settings = settings_from_cli("apollo-extender", __doc__, "EXTENDER", load_settings, argv)
    if settings is None:
        return 2
    prepare_multiprocess_metrics(SERVICE)
    # The verbs are served by our worker class straight from the socket; Flask serves the rest.
    options = {"worker_class": "extender.worker.VerbWorker"}
    GunicornService(SERVICE, partial(create_app, settings), settings.server, settings.log_level, options).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
