"""How the orchestrator's app mounts the REST API: one `Mount` for `orchestrator.app.create_app`.

Separate from the routes so the API package does not import the orchestrator's settings tree or
runtime at import time (the settings tree embeds `ApiSettings`, which would make a cycle).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from flask import Blueprint

from orchestrator.api.routes import create_api_from_client

if TYPE_CHECKING:
    from orchestrator.app import Mount
    from orchestrator.config import OrchestratorSettings
    from orchestrator.runtime import Runtime


def mount_api(settings: OrchestratorSettings, runtime: Runtime) -> Blueprint:
    """The REST API over the runtime's API client (the orchestrator's own credentials)."""
    client = runtime.api_client
    if client is None:
        from common.kube import api_client

        client = api_client(settings.kubeconfig)
    return create_api_from_client(settings.api, client)


def api_mounts(settings: OrchestratorSettings) -> Sequence[Mount]:
    """What `create_app` should mount: the REST API unless `api.enabled` is off."""
    return (mount_api,) if settings.api.enabled else ()
