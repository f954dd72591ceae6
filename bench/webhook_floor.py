"""The floor under the webhook's latency: an AdmissionReview answerer that decides nothing (bench.webhook).

Served exactly as the webhook is (`common.server.run_gunicorn`: gunicorn gthread workers, the same TLS
context, keep-alive, GIL switch interval), it reads the body, takes `request.uid` out of it and answers
`allowed: true` without a patch. Latency measured against it under the same load is what the transport
costs on this machine (TLS, HTTP parsing, gunicorn's thread hand-offs, the client's own Python), so the
webhook's figure can be read against it.

    python -m bench.webhook_floor PORT CERTFILE KEYFILE WORKERS
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from common.server import ServerSettings, run_gunicorn
from common.settings import build


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    review = orjson.loads(environ["wsgi.input"].read(length))
    body = orjson.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": review["request"]["uid"], "allowed": True},
        }
    )
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def main(argv: list[str] | None = None) -> int:
    port, certfile, keyfile, workers = (argv or sys.argv[1:])[:4]
    server = build(
        ServerSettings, {"bind": f"127.0.0.1:{port}", "workers": int(workers), "certfile": certfile, "keyfile": keyfile}
    )
    return run_gunicorn("webhook-floor", lambda: app, server, "WARNING")


if __name__ == "__main__":
    sys.exit(main())
