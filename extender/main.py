"""`apollo-extender`: the extender under gunicorn, configured from EXTENDER_* settings."""

from __future__ import annotations

import sys
from functools import partial

from common.cli import settings_from_cli
from common.server import run_gunicorn
from extender.app import create_app
from extender.config import load_settings


def main(argv: list[str] | None = None) -> int:
    settings = settings_from_cli("apollo-extender", __doc__, "EXTENDER", load_settings, argv)
    if settings is None:
        return 2
    return run_gunicorn("apollo-extender", partial(create_app, settings), settings.server, settings.log_level)


if __name__ == "__main__":
    sys.exit(main())
