"""The migration REST API (`/api/v1/migrations`), mounted in the orchestrator's process.

It keeps no state: it creates, reads, lists and cancels PodMigration objects through the API server,
and the controller carries them out. `create_api_from_client(settings.api, api_client)` gives the
blueprint the orchestrator's app registers; `create_app` serves it alone (tests, local use).
"""

from orchestrator.api.routes import create_api, create_api_from_client, create_app
from orchestrator.api.settings import ApiSettings

__all__ = ["ApiSettings", "create_api", "create_api_from_client", "create_app"]
