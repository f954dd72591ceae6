"""`apollo-webhook`: the mutating admission webhook under gunicorn, configured from WEBHOOK_* settings."""

from __future__ import annotations

import sys
from functools import partial

from common.cli import settings_from_cli
from common.server import run_gunicorn
from webhook.app import create_app
from webhook.config import load_settings


def main(argv: list[str] | None = None) -> int:
    settings = settings_from_cli("apollo-webhook", __doc__, "WEBHOOK", load_settings, argv)
    if settings is None:
        return 2
    return run_gunicorn("apollo-webhook", partial(create_app, settings), settings.server, settings.log_level)


if __name__ == "__main__":
    sys.exit(main())
