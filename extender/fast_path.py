"""A WSGI layer in front of Flask that serves POST /filter and POST /prioritize directly.

Why: kube-scheduler waits for the extender twice per pod, from its single scheduling loop, on the
same cores as the rest of the control plane. Measured under gunicorn, Flask's per-request machinery
(werkzeug's body stream over gunicorn's reader, routing, request context, response object) cost
about 0.3 ms per call, more than ranking 230 nodes. This layer reads the body in one call and hands
the bytes to the very functions the Flask routes use (`extender.verbs`); everything else (other
paths and methods, probes, metrics, a body without Content-Length) goes to Flask unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from extender.verbs import ExtenderState, filter_verb, prioritize_verb, too_large_message

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_STATUS = {200: "200 OK", 400: "400 Bad Request", 500: "500 Internal Server Error"}
# Which gunicorn worker answered: gunicorn leaves a connection to whichever worker accepts it first, and
# an operator (or the benchmark's load generator) needs to see where keep-alive connections landed.
WORKER_HEADER = "X-Extender-Worker"


class VerbFastPath:
    """Wraps a WSGI app (`app.wsgi_app = VerbFastPath(app.wsgi_app, state)`, the Flask middleware idiom)."""

    def __init__(self, inner: WsgiApp, state: ExtenderState) -> None:
        self.inner = inner
        self.state = state
        self.worker = str(os.getpid())  # built in the worker process (gunicorn does not preload the app)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO")
        if environ.get("REQUEST_METHOD") != "POST" or path not in ("/filter", "/prioritize"):
            return self.inner(environ, start_response)
        try:
            length = int(environ.get("CONTENT_LENGTH") or "")
        except ValueError:
            return self.inner(environ, start_response)  # chunked or absent: Flask's reader handles it
        if length > self.state.settings.max_body_bytes:
            # Refused unread, as Flask does; gunicorn discards the rest before the next keep-alive request.
            body, rejected = b"", too_large_message(self.state.settings)
        else:
            body, rejected = environ["wsgi.input"].read(length), ""
        if path == "/filter":
            status, payload = 200, filter_verb(self.state, body, rejected)
        else:
            status, payload = prioritize_verb(self.state, body, rejected)
        start_response(
            _STATUS[status],
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(payload))),
                (WORKER_HEADER, self.worker),
            ],
        )
        return [payload]
