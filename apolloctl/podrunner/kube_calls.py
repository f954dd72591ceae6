"""The two things every API call of the pod runner needs: a raw response's JSON, and an error's HTTP status.

The runner reads with ``_preload_content=False`` (plain JSON, no model objects: cheaper, and what kwok
and the API server send is kept as it is) and tells "gone" (404) and "conflict" (409) from other
failures, whatever client raised them.
"""

from __future__ import annotations

import json
from typing import Any


def json_body(resp: Any) -> dict[str, Any]:
    """The JSON object of a raw (``_preload_content=False``) response."""
    data: dict[str, Any] = json.loads(resp.data)
    return data


def api_status(exc: BaseException) -> int | None:
    """The HTTP status of an API error, None for anything else."""
    status = getattr(exc, "status", None)
    return int(status) if isinstance(status, int) else None
