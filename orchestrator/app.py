"""The orchestrator's HTTP surface and its process: /health, probes, /metrics, mounted APIs, the runtime.

`create_app` is the gunicorn factory: the single worker builds the `Runtime` (leader election, and
while leading the controller and the APOLLO link) after the fork, because threads do not survive
one. Other HTTP modules (the REST API of `orchestrator.api`) mount as blueprints through `mounts`,
sharing the listener, the TLS settings and the error bodies; they keep no state of their own and
talk to the same API server through `runtime.api_client`.
"""

from __future__ import annotations

import atexit
from collections.abc import Callable, Sequence
from importlib import metadata

from flask import Blueprint, Flask, Response

from common.http import install, json_response
from orchestrator.config import OrchestratorSettings
from orchestrator.runtime import Runtime

SERVICE = "apollo-orchestrator"
Mount = Callable[[OrchestratorSettings, Runtime], Blueprint]


def version() -> str:
    try:
        return metadata.version("apollo-stack")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def create_app(
    settings: OrchestratorSettings,
    *,
    runtime: Runtime | None = None,
    mounts: Sequence[Mount] = (),
    start: bool = True,
) -> Flask:
    """The Flask app; with `start`, the runtime starts campaigning and stops (releasing the lease) at exit."""
    app = Flask(SERVICE)
    runtime = runtime or Runtime(settings)
    app.extensions["orchestrator"] = runtime
    service_version = version()

    @app.get("/health")
    def health() -> Response:
        # The seed's shape: status, service, version.
        return json_response({"status": "healthy", "service": SERVICE, "version": service_version})

    for mount in mounts:
        app.register_blueprint(mount(settings, runtime))
    install(app, readiness=runtime.readiness, metrics=runtime.metrics.exposition, service=SERVICE)
    if start:
        runtime.start()
        atexit.register(runtime.stop)
    return app
