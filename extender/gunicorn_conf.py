"""gunicorn settings for production, used by `apollo-extender` (values come from ExtenderSettings).

- gthread workers: kube-scheduler keeps HTTP connections alive, and sync workers cannot.
- keepalive above kube-scheduler's idle timeout, so connections are not torn down between pods.
- timeout / graceful_timeout: a stuck worker is replaced, a rolling update lets requests finish.
- no request recycling and no access log on the hot path (metrics carry the latency).
"""

from __future__ import annotations

from typing import Any

from extender.config import ExtenderSettings


def options(settings: ExtenderSettings) -> dict[str, Any]:
    return {
        "bind": settings.bind,
        "workers": settings.workers,
        "worker_class": "gthread",
        "threads": settings.threads,
        "keepalive": 75,
        "timeout": 30,
        "graceful_timeout": 20,
        "max_requests": 0,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": settings.log_level.lower(),
        "preload_app": False,
        "backlog": 2048,
        "limit_request_line": 8190,
    }
