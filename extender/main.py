"""`apollo-extender`: the extender under gunicorn, configured from EXTENDER_* settings."""

from __future__ import annotations

import gc
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from common.cli import settings_from_cli
from common.logs import configure
from extender.config import ExtenderSettings, load_settings
from extender.gunicorn_conf import options


class ExtenderServer(BaseApplication):  # type: ignore[misc]
    """gunicorn embedding: each worker builds its own app (and its own background threads)."""

    def __init__(self, settings: ExtenderSettings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        for key, value in options(self.settings).items():
            self.cfg.set(key, value)
        self.cfg.set("child_exit", _child_exit)

    def load(self) -> Any:
        from extender.app import create_app

        configure("apollo-extender", self.settings.log_level)
        app = create_app(self.settings)
        tune_worker_runtime()
        return app


# The interpreter's default (5 ms) lets a background thread (pod watch, snapshot refresh) keep the GIL
# for up to 5 ms while a request thread waits: that, not the request's own work, set the p99.
GIL_SWITCH_INTERVAL_S = 0.0005


def tune_worker_runtime() -> None:
    """Per worker, once the app is built: short GIL hand-offs, and start-up objects out of the GC's way.

    gc.freeze() moves everything allocated so far (modules, the app, settings) to a permanent
    generation, so the collections that the requests' short-lived dicts trigger scan only new objects.
    """
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    gc.collect()
    gc.freeze()


def _child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def _multiprocess_metrics_dir() -> None:
    """Workers share metrics through files; set before they fork, emptied so old pids do not count."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        path = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="apollo-extender-metrics-")


def main(argv: list[str] | None = None) -> int:
    settings = settings_from_cli("apollo-extender", __doc__, "EXTENDER", load_settings, argv)
    if settings is None:
        return 2
    _multiprocess_metrics_dir()
    ExtenderServer(settings).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
