"""Start a stack service as a subprocess, the way it is deployed; wait until it is ready; stop it cleanly.

The demo, the end-to-end tests and the benchmarks all run APOLLO and the HTTP services (the extender,
later the webhook and the orchestrator) through this one launcher and this one readiness probe, so a
change in how a service starts (a setting renamed, a probe that means something new) is made once.

A service runs as its console script (`apollo`, `apollo-<service>`) next to this interpreter, with its
settings written to a YAML file named by `<PREFIX>_CONFIG`, exactly the path production takes
(`common.settings.load`). Inherited `<PREFIX>_*` variables are dropped, so a developer's shell cannot
change what a test or a benchmark measures. The process gets its own session (stopping it stops its
gunicorn workers too) and, unless told otherwise, dies with its parent, so an interrupted run leaves
nothing behind. Readiness is `GET /readyz` (or `/healthz`) on the service's HTTP(S) port, optionally
with a condition on the JSON body and a streak of consecutive passes on fresh connections (gunicorn
hands each connection to whichever worker accepts it, so one pass says little about the others).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import ssl
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
import yaml

from apolloctl.cluster.errors import ComponentError
from apolloctl.cluster.process import Process, free_port, tail

Json = dict[str, Any]
T = TypeVar("T")
READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Tls:
    """Serving certificate and key for a service, and the CA its clients verify it with."""

    certfile: Path
    keyfile: Path
    ca: Path

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


@dataclass
class Service:
    """A running service process: its HTTP(S) port, other ports it was given, its log."""

    script: str
    port: int
    log_path: Path
    process: Process
    tls: Tls | None = None
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid or 0

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def address(self, port_name: str) -> str:
        """host:port of another listener the launcher picked (e.g. APOLLO's "grpc")."""
        return f"127.0.0.1:{self.ports[port_name]}"

    def connect(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        """A new connection to the service's HTTP(S) port."""
        if self.tls is not None:
            return http.client.HTTPSConnection(
                "127.0.0.1", self.port, timeout=timeout, context=self.tls.client_context()
            )
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(
        self, method: str, path: str, body: bytes | None = None, timeout: float = 10.0
    ) -> tuple[int, bytes, http.client.HTTPResponse]:
        """One request on a fresh connection (so consecutive calls may reach different workers)."""
        conn = self.connect(timeout)
        try:
            headers = {"Connection": "close"}
            if body is not None:
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body, headers)
            resp = conn.getresponse()
            return resp.status, resp.read(), resp
        finally:
            conn.close()

    def probe(self, path: str = "/readyz") -> Json | None:
        """The probe's JSON body when it answers 200, else None (not answering, not ready, not JSON)."""
        try:
            status, body, _ = self.request("GET", path, timeout=2.0)
            parsed = orjson.loads(body) if status == 200 else None
        except (OSError, http.client.HTTPException, orjson.JSONDecodeError):
            return None
        return parsed if isinstance(parsed, dict) else None

    def wait_ready(
        self,
        until: Callable[[Json], object] | None = None,
        *,
        path: str = "/readyz",
        streak: int = 1,
        timeout: float = READY_TIMEOUT_S,
        what: str = "",
    ) -> Json:
        """Poll `path` until it answers 200 (and `until(body)` holds) `streak` times in a row.

        A process that exits meanwhile fails at once, naming its log and its last lines.
        """
        deadline = time.monotonic() + timeout
        passes = 0
        last: Json | None = None
        while True:
            code = self.process.exited()
            if code is not None:
                raise ComponentError(
                    self.script, f"exited during start-up with code {code} ({tail(self.log_path)})", self.log_path
                )
            body = self.probe(path)
            ok = body is not None and (until is None or bool(until(body)))
            last = body if body is not None else last
            passes = passes + 1 if ok else 0
            if passes >= streak and body is not None:
                return body
            if time.monotonic() > deadline:
                detail = f"; last {path}: {orjson.dumps(last).decode()[:300]}" if last else ""
                raise ComponentError(
                    self.script, f"not ready{' (' + what + ')' if what else ''} after {timeout:.0f}s{detail}",
                    self.log_path,
                )  # fmt: skip
            time.sleep(0.05 if ok else 0.2)

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM (graceful shutdown: requests in progress finish), SIGKILL after `grace` seconds."""
        self.process.stop(grace)

    def kill(self) -> None:
        """SIGKILL the whole process group at once: a crash, as an outage test wants it."""
        pid = self.process.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            assert self.process.popen is not None
            self.process.popen.wait(timeout=10)
            self.process.popen = None


def poll(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    """The first non-None result of `probe()`; TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def script_path(script: str) -> str:
    """The console script installed beside this interpreter (the venv's bin), else found on PATH."""
    candidate = Path(sys.executable).parent / script
    return str(candidate) if candidate.exists() else script


def launch(
    script: str,
    prefix: str,
    settings: Mapping[str, Any],
    *,
    port: int,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    tls: Tls | None = None,
    ports: Mapping[str, int] | None = None,
    die_with_parent: bool = True,
) -> Service:
    """Start `script` with `settings` (the nested mapping its YAML file would hold); returns at once.

    `port` is where it serves /healthz and /readyz (the caller put it in `settings`); `ports` names any
    other listeners the caller assigned. `env` adds variables (not settings: those go in `settings`).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    config = log_path.with_name(f"{log_path.stem}.settings.yaml")
    config.write_text(yaml.safe_dump(_plain(settings), sort_keys=True))
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(f"{prefix}_")}
    child_env |= dict(env or {})
    child_env[f"{prefix}_CONFIG"] = str(config)
    process = Process(script, [script_path(script)], log_path, env=child_env, die_with_parent=die_with_parent)
    process.start()
    return Service(script, port, log_path, process, tls, dict(ports or {}))


def _plain(value: Any) -> Any:
    """Settings as YAML can hold them (Paths become strings)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# ---- the two services every scenario needs ------------------------------------------------------------


def start_apollo(
    settings: Mapping[str, Any],
    log_path: Path,
    *,
    ready: bool = True,
    timeout: float = READY_TIMEOUT_S,
    die_with_parent: bool = True,
) -> Service:
    """`apollo` on free loopback ports (gRPC: `service.address("grpc")`), waited for unless `ready` is False.

    `settings` is APOLLO's settings tree (prometheus, forecast, ...); the addresses are set here.
    `die_with_parent` False lets it outlive the caller (`apolloctl demo --keep`).
    """
    grpc_port, http_port = free_port(), free_port()
    tree = dict(settings) | {
        "grpc_address": f"127.0.0.1:{grpc_port}",
        "http_address": f"127.0.0.1:{http_port}",
    }
    tree.setdefault("log_level", "WARNING")
    service = launch(
        "apollo",
        "APOLLO",
        tree,
        port=http_port,
        log_path=log_path,
        ports={"grpc": grpc_port},
        die_with_parent=die_with_parent,
    )
    if ready:
        try:
            service.wait_ready(what="APOLLO's HTTP port", timeout=timeout)
        except BaseException:
            service.stop()
            raise
    return service


def start_extender(
    apollo_address: str,
    log_path: Path,
    *,
    settings: Mapping[str, Any] | None = None,
    tls: Tls | None = None,
    env: Mapping[str, str] | None = None,
    die_with_parent: bool = True,
) -> Service:
    """`apollo-extender` (gunicorn, production defaults) on a free loopback port; returns at once.

    `settings` overrides the extender's settings tree (e.g. kubeconfig, watch_pods, policy_mode);
    wait with `service.wait_ready(extender_holds_snapshot())`.
    """
    port = free_port()
    tree: dict[str, Any] = {"apollo_address": apollo_address, "log_level": "WARNING"} | dict(settings or {})
    server = dict(tree.get("server") or {}) | {"bind": f"127.0.0.1:{port}"}
    if tls is not None:
        server |= {"certfile": str(tls.certfile), "keyfile": str(tls.keyfile)}
    tree["server"] = server
    return launch(
        "apollo-extender",
        "EXTENDER",
        tree,
        port=port,
        log_path=log_path,
        tls=tls,
        env=env,
        die_with_parent=die_with_parent,
    )


def extender_holds_snapshot(min_generation: int = 0) -> Callable[[Json], bool]:
    """Readiness condition: the extender holds a usable APOLLO snapshot of at least `min_generation`."""

    def check(body: Json) -> bool:
        return body.get("apollo") == "ok" and int(body.get("snapshot_generation") or 0) >= min_generation

    return check


@dataclass(frozen=True)
class NodeVerdict:
    """APOLLO's pod-agnostic view of one node, as the extender receives it."""

    score: int
    overload: bool


def apollo_verdicts(address: str, timeout: float = 10.0) -> tuple[int, bool, dict[str, NodeVerdict]]:
    """(generation, stale, per-node verdicts) from APOLLO's GetNodeScoreSnapshot, over gRPC."""
    import grpc

    from apollo_api.v1 import apollo_pb2 as pb
    from apollo_api.v1 import apollo_pb2_grpc as pb_grpc

    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.SchedulingPolicyServiceStub(channel)
        msg = stub.GetNodeScoreSnapshot(pb.NodeScoreSnapshotRequest(columnar=True), timeout=timeout)
    c = msg.columns
    verdicts = {
        name: NodeVerdict(int(score), bool(over))
        for name, score, over in zip(c.node_names, c.score, c.predicted_overload, strict=True)
    }
    return msg.generation, msg.stale, verdicts


def report_node_capacity(address: str, names: list[str], cpu_cores: float, memory_bytes: int) -> None:
    """Tell APOLLO each node's allocatable capacity (as an insight agent would), in one client stream."""
    import grpc

    from apollo_api.v1 import apollo_pb2 as pb
    from apollo_api.v1 import apollo_pb2_grpc as pb_grpc

    capacity = pb.NodeResources(cpu_allocatable_cores=cpu_cores, memory_allocatable_bytes=memory_bytes)
    with grpc.insecure_channel(address) as channel:
        reply = pb_grpc.InsightServiceStub(channel).StreamClusterInsights(
            iter([pb.ClusterInsight(node_name=n, node_resources=capacity) for n in names]), timeout=120
        )
    if reply.messages_processed != len(names):
        raise RuntimeError(f"APOLLO accepted {reply.messages_processed} of {len(names)} ClusterInsights")


def loopback_tls(directory: Path, name: str) -> Tls:
    """A fresh CA and a serving certificate for 127.0.0.1 / localhost, for a service run over HTTPS."""
    from apolloctl.cluster.certs import CertificateAuthority

    ca = CertificateAuthority(directory, common_name=f"{name}-ca")
    pair = ca.issue(name, name, dns_names=("localhost",), ip_addresses=("127.0.0.1",), server=True)
    return Tls(certfile=pair.cert, keyfile=pair.key, ca=ca.pair.cert)
