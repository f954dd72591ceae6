"""Settings of the migration REST API, a group the orchestrator's settings tree embeds (`api.*`).

Declared with `common.settings.setting` like every other setting, so they are read from the same YAML
file and `ORCHESTRATOR_API__*` variables, validated with the field named, and documented on the
generated reference page of the orchestrator. TLS is the orchestrator's own server setting
(`server.certfile`/`server.keyfile`, served by gunicorn), so the API, the probes and the metrics share
one listener and one certificate.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.settings import in_range, int_range, one_of, setting


@dataclass(frozen=True)
class ApiSettings:
    """How the REST API (`/api/v1/migrations`) is served, authenticated and bounded."""

    enabled: bool = setting(True, "Serve the REST API beside the controller; it keeps no state of its own.", None)
    authentication: str = setting(
        "kubernetes",
        "`kubernetes`: every call carries a bearer token checked with a TokenReview, and the action with a "
        "SubjectAccessReview on podmigrations, like an aggregated API server. `none`: no checks, for a local "
        "control plane on a developer's machine only.",
        one_of("kubernetes", "none"),
    )
    auth_cache_ttl_seconds: float = setting(
        10.0,
        "How long a TokenReview or SubjectAccessReview answer is reused. Short: a revoked token or role stops "
        "working within this time, while a client polling a migration does not cost two API calls per poll.",
        in_range(0, 600),
    )
    max_body_bytes: int = setting(
        64 * 1024,
        "Largest request body accepted; a migration or batch request is a few hundred bytes, so anything near "
        "this is a mistake or an attack and is refused with 413 before it is parsed.",
        int_range(256, 16 * 2**20),
    )
    max_batch_pods: int = setting(
        500,
        "Most pods one batch request may plan; a node runs at most 110 pods by default, so a larger match means "
        "the selector or node is wrong.",
        int_range(1, 100_000),
    )
