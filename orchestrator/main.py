"""`apollo-orchestrator`: the migration controller (leader-elected) and its HTTP port under gunicorn."""

from __future__ import annotations

import sys
from functools import partial

from common.cli import settings_from_cli
from common.server import run_gunicorn
from orchestrator.api.mount import api_mounts
from orchestrator.app import SERVICE, create_app
from orchestrator.config import load_settings


def main(argv: list[str] | None = None) -> int:
    settings = settings_from_cli(SERVICE, __doc__, "ORCHESTRATOR", load_settings, argv)
    if settings is None:
        return 2
    factory = partial(create_app, settings, mounts=api_mounts(settings))
    return run_gunicorn(SERVICE, factory, settings.server, settings.log_level)


if __name__ == "__main__":
    sys.exit(main())
