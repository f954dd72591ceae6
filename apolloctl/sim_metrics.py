"""Simulated node metrics for kwok nodes, which run nothing and so report no usage of their own.

A tiny exporter serving per-node utilisation gauges (0-1, labelled with the Kubernetes node name)
that the caller sets; the local Prometheus scrapes it like any node exporter, and APOLLO reads it
with ordinary PromQL. Used by the demo and the end-to-end tests.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CPU_METRIC = "apollo_test_node_cpu"
MEMORY_METRIC = "apollo_test_node_memory"


class NodeExporter:
    """Serves `apollo_test_node_cpu` / `apollo_test_node_memory` {node="..."} from the dicts below."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self.memory: dict[str, float] = {}
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                lines = [f"# TYPE {CPU_METRIC} gauge", f"# TYPE {MEMORY_METRIC} gauge"]
                lines += [f'{CPU_METRIC}{{node="{n}"}} {v}' for n, v in dict(exporter.cpu).items()]
                lines += [f'{MEMORY_METRIC}{{node="{n}"}} {v}' for n, v in dict(exporter.memory).items()]
                body = ("\n".join(lines) + "\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
