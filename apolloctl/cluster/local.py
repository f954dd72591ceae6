"""The local control plane: etcd, kube-apiserver, kube-scheduler, kube-controller-manager, kwok, Prometheus.

Everything listens on 127.0.0.1 on ports picked at start, credentials are generated per run,
and all state (data, configs, logs, kubeconfig) lives in one run directory, so that several
clusters can coexist and a failed run can be inspected afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from apolloctl.cluster import configs
from apolloctl.cluster.build import Binaries, ensure_binaries
from apolloctl.cluster.certs import CertificateAuthority, ClusterPKI, generate_cluster_pki
from apolloctl.cluster.errors import ComponentError
from apolloctl.cluster.process import Process, ensure_port_free, free_port, kill_group

Log = Callable[[str], None]
STATE_FILE = "cluster.json"
_SERVICE_CIDR = "10.96.0.0/16"  # an allocation range for Service IPs; no traffic is ever routed there


@dataclass(frozen=True)
class ClusterConfig:
    """What a caller may choose about the local cluster; every default works out of the box."""

    run_dir: Path
    # Children are killed by the kernel when the starting process dies (tests). `apolloctl
    # cluster up` turns this off so the cluster outlives the command.
    die_with_parent: bool = True
    extenders: tuple[configs.ExtenderConfig, ...] = ()
    scrape_interval: str = "1s"
    start_timeout: float = 90.0
    # Explicit ports are for callers that need stable addresses; 0 means "pick a free one".
    apiserver_port: int = 0
    prometheus_port: int = 0
    # Extra command-line flags per component name (e.g. feature gates), appended last.
    extra_args: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass
class Endpoints:
    """Where each component listens; persisted so `apolloctl` can find a running cluster."""

    etcd_client: int = 0
    etcd_peer: int = 0
    apiserver: int = 0
    scheduler: int = 0
    controller_manager: int = 0
    kwok: int = 0
    prometheus: int = 0

    @property
    def apiserver_url(self) -> str:
        return f"https://127.0.0.1:{self.apiserver}"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus}"


def _http_ok(url: str, context: ssl.SSLContext | None = None, expect: bytes | None = None) -> bool:
    with urllib.request.urlopen(url, timeout=2, context=context) as resp:
        body: bytes = resp.read()
        return resp.status == 200 and (expect is None or expect in body)


def _insecure_tls() -> ssl.SSLContext:
    # kube-scheduler and kube-controller-manager serve /healthz with self-signed certificates.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class LocalCluster:
    """A running (or startable) local control plane rooted in `config.run_dir`."""

    def __init__(self, config: ClusterConfig, log: Log = print) -> None:
        self.config = config
        self.log = log
        self.run_dir = config.run_dir
        self.logs_dir = self.run_dir / "logs"
        self.pki_dir = self.run_dir / "pki"
        self.endpoints = Endpoints()
        self.processes: dict[str, Process] = {}
        self.binaries: Binaries | None = None
        self.ca: CertificateAuthority | None = None
        self.pki: ClusterPKI | None = None
        self.started_at = 0.0

    # ---- paths -------------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self.run_dir / "kubeconfig"

    @property
    def prometheus_targets_dir(self) -> Path:
        return self.run_dir / "prometheus" / "targets"

    @property
    def prometheus_url(self) -> str:
        return self.endpoints.prometheus_url

    @property
    def volumes_dir(self) -> Path:
        """Where hostPath/local PVs of this cluster keep their data (wiped with etcd at start)."""
        return self.run_dir / "volumes"

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> LocalCluster:
        """Bring every component up in dependency order; on any failure, stop what was started."""
        t0 = time.monotonic()
        self.binaries = ensure_binaries(self.log)
        self._prepare_run_dir()
        try:
            self._allocate_ports()
            self._write_credentials()
            self._start_etcd()
            self._start_apiserver()
            self._start_controller_manager()
            self._start_scheduler()
            self._start_kwok()
            self._start_prometheus()
            self._save_state()
        except BaseException:
            self.stop()
            raise
        self.started_at = time.monotonic() - t0
        self.log(f"local cluster ready in {self.started_at:.1f}s; kubeconfig: {self.kubeconfig}")
        return self

    def stop(self) -> None:
        """Stop in reverse order, so nothing logs errors about a dependency that vanished first."""
        for name in reversed(list(self.processes)):
            self.processes[name].stop()
        self.processes.clear()
        state = self.run_dir / STATE_FILE
        if state.exists():
            state.unlink()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _prepare_run_dir(self) -> None:
        stop_recorded(self.run_dir)  # a previous run in the same directory must not linger
        for sub in ("etcd", "pki", "prometheus", "logs", "volumes"):
            shutil.rmtree(self.run_dir / sub, ignore_errors=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.prometheus_targets_dir.mkdir(parents=True, exist_ok=True)

    def _allocate_ports(self) -> None:
        e = self.endpoints
        chosen = {
            "apiserver": self.config.apiserver_port,
            "prometheus": self.config.prometheus_port,
        }
        for name in (
            "etcd_client",
            "etcd_peer",
            "apiserver",
            "scheduler",
            "controller_manager",
            "kwok",
            "prometheus",
        ):
            port = chosen.get(name) or free_port()
            ensure_port_free(name.replace("_", "-"), port)
            setattr(e, name, port)

    def _write_credentials(self) -> None:
        self.ca, self.pki = generate_cluster_pki(self.pki_dir)
        server = self.endpoints.apiserver_url
        for name, pair in (
            ("kubeconfig", self.pki.admin),
            ("scheduler.kubeconfig", self.pki.scheduler),
            ("controller-manager.kubeconfig", self.pki.controller_manager),
            ("kwok.kubeconfig", self.pki.kwok),
        ):
            doc = configs.kubeconfig(server, self.pki.ca.cert, pair, name.split(".")[0])
            path = self.run_dir / name
            path.write_text(configs.dump_yaml(doc))
            path.chmod(0o600)

    def _spawn(self, name: str, argv: list[str]) -> Process:
        argv = argv + list(self.config.extra_args.get(name, ()))
        proc = Process(name, argv, self.logs_dir / f"{name}.log", die_with_parent=self.config.die_with_parent)
        self.log(f"starting {name}")
        proc.start()
        self.processes[name] = proc
        return proc

    def _start_etcd(self) -> None:
        assert self.binaries
        e = self.endpoints
        client = f"http://127.0.0.1:{e.etcd_client}"
        peer = f"http://127.0.0.1:{e.etcd_peer}"
        proc = self._spawn(
            "etcd",
            [
                str(self.binaries.etcd),
                "--name=local",
                f"--data-dir={self.run_dir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=local={peer}",
                "--listen-metrics-urls=",
                # Test data is disposable; skipping fsync keeps a 2-core CI machine responsive.
                "--unsafe-no-fsync=true",
                "--quota-backend-bytes=4294967296",
                "--log-level=warn",
            ],
        )
        proc.wait_ready(lambda: _http_ok(f"{client}/health", expect=b'"true"'), self.config.start_timeout)

    def _apiserver_tls(self) -> ssl.SSLContext:
        assert self.pki
        ctx = ssl.create_default_context(cafile=str(self.pki.ca.cert))
        ctx.load_cert_chain(str(self.pki.admin.cert), str(self.pki.admin.key))
        return ctx

    def _start_apiserver(self) -> None:
        assert self.binaries and self.pki
        p = self.pki
        proc = self._spawn(
            "kube-apiserver",
            [
                str(self.binaries.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{self.endpoints.etcd_client}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.endpoints.apiserver}",
                f"--tls-cert-file={p.apiserver.cert}",
                f"--tls-private-key-file={p.apiserver.key}",
                f"--client-ca-file={p.ca.cert}",
                f"--service-account-key-file={p.service_account.cert}",
                f"--service-account-signing-key-file={p.service_account.key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={_SERVICE_CIDR}",
                "--authorization-mode=RBAC",
                # The default plugin set stays on (MutatingAdmissionWebhook included); this only
                # makes the list explicit in the log.
                "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,MutatingAdmissionWebhook,"
                "ValidatingAdmissionWebhook,ValidatingAdmissionPolicy,ResourceQuota,DefaultStorageClass,"
                "StorageObjectInUseProtection,PersistentVolumeClaimResize,DefaultTolerationSeconds,"
                "Priority,RuntimeClass,PodSecurity,CertificateApproval,CertificateSigning,"
                "CertificateSubjectRestriction,DefaultIngressClass,TaintNodesByCondition,LimitRanger",
                f"--requestheader-client-ca-file={p.ca.cert}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={p.front_proxy_client.cert}",
                f"--proxy-client-key-file={p.front_proxy_client.key}",
                # The `kubernetes` Service cannot list a loopback endpoint, and nothing runs
                # in-cluster here, so the reconciler would only log a validation error forever.
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
            ],
        )
        ctx = self._apiserver_tls()
        proc.wait_ready(lambda: _http_ok(f"{self.endpoints.apiserver_url}/readyz", ctx), self.config.start_timeout)

    def _start_controller_manager(self) -> None:
        assert self.binaries and self.pki
        kc = self.run_dir / "controller-manager.kubeconfig"
        proc = self._spawn(
            "kube-controller-manager",
            [
                str(self.binaries.kube_controller_manager),
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.endpoints.controller_manager}",
                f"--service-account-private-key-file={self.pki.service_account.key}",
                f"--root-ca-file={self.pki.ca.cert}",
                f"--cluster-signing-cert-file={self.pki.ca.cert}",
                f"--cluster-signing-key-file={self.ca.pair.key if self.ca else ''}",
                "--use-service-account-credentials=true",
                "--leader-elect=false",
                "--controllers=*",
                # kwok pods vanish fast; tighter sync keeps ReplicaSets and Jobs responsive.
                "--concurrent-replicaset-syncs=10",
                "--concurrent-job-syncs=10",
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                "--v=1",
            ],
        )
        proc.wait_ready(
            lambda: _http_ok(f"https://127.0.0.1:{self.endpoints.controller_manager}/healthz", _insecure_tls()),
            self.config.start_timeout,
        )

    def write_scheduler_config(self, extenders: tuple[configs.ExtenderConfig, ...]) -> Path:
        path = self.run_dir / "scheduler-config.yaml"
        doc = configs.scheduler_config(self.run_dir / "scheduler.kubeconfig", extenders)
        path.write_text(configs.dump_yaml(doc))
        return path

    def _start_scheduler(self) -> None:
        assert self.binaries
        cfg = self.write_scheduler_config(self.config.extenders)
        kc = self.run_dir / "scheduler.kubeconfig"
        proc = self._spawn(
            "kube-scheduler",
            [
                str(self.binaries.kube_scheduler),
                f"--config={cfg}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.endpoints.scheduler}",
                "--v=1",
            ],
        )
        proc.wait_ready(
            lambda: _http_ok(f"https://127.0.0.1:{self.endpoints.scheduler}/healthz", _insecure_tls()),
            self.config.start_timeout,
        )

    def adopt(self, name: str, process: Process) -> None:
        """Record a process started beside the cluster (a stack service), so `stop()` and
        `apolloctl cluster down` stop it with the components (first, since it depends on them)."""
        self.processes[name] = process
        self._save_state()

    def restart_scheduler(self, extenders: tuple[configs.ExtenderConfig, ...]) -> None:
        """Re-run kube-scheduler with other extenders: its configuration is read only at start."""
        old = self.processes.pop("kube-scheduler", None)
        if old is not None:
            old.stop()
        self.config = replace(self.config, extenders=extenders)
        self._start_scheduler()
        self._save_state()

    def _start_kwok(self) -> None:
        assert self.binaries
        cfg = self.run_dir / "kwok.yaml"
        cfg.write_text(configs.dump_yaml_documents(configs.kwok_config()))
        proc = self._spawn(
            "kwok",
            [
                str(self.binaries.kwok),
                f"--kubeconfig={self.run_dir / 'kwok.kubeconfig'}",
                f"--config={cfg}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={configs.KWOK_NODE_ANNOTATION}=fake",
                "--node-ip=127.0.0.1",
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{self.endpoints.kwok}",
                "--cidr=10.244.0.0/16",
            ],
        )
        proc.wait_ready(lambda: _http_ok(f"http://127.0.0.1:{self.endpoints.kwok}/healthz"), self.config.start_timeout)

    def _start_prometheus(self) -> None:
        assert self.binaries
        pdir = self.run_dir / "prometheus"
        cfg = pdir / "prometheus.yml"
        cfg.write_text(
            configs.dump_yaml(configs.prometheus_config(self.prometheus_targets_dir, self.config.scrape_interval))
        )
        proc = self._spawn(
            "prometheus",
            [
                str(self.binaries.prometheus),
                f"--config.file={cfg}",
                f"--storage.tsdb.path={pdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.endpoints.prometheus}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=1d",
                "--log.level=warn",
            ],
        )
        proc.wait_ready(lambda: _http_ok(f"{self.prometheus_url}/-/ready"), self.config.start_timeout)

    # ---- state for the CLI --------------------------------------------------------------------
    def _save_state(self) -> None:
        state = {
            "kubeconfig": str(self.kubeconfig),
            "endpoints": self.endpoints.__dict__,
            "pids": {name: p.pid for name, p in self.processes.items()},
            "logs": str(self.logs_dir),
            "prometheus_url": self.prometheus_url,
            "prometheus_targets_dir": str(self.prometheus_targets_dir),
        }
        (self.run_dir / STATE_FILE).write_text(json.dumps(state, indent=2))

    # ---- helpers for tests and the demo -------------------------------------------------------
    def set_scrape_targets(self, job: str, targets: list[configs.ScrapeTarget]) -> None:
        """Point Prometheus at `targets` under a job name; file discovery picks it up within a second."""
        path = self.prometheus_targets_dir / f"{job}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(configs.file_sd_document(job, targets)))
        os.replace(tmp, path)

    def api_client(self) -> Any:
        """A kubernetes.client.ApiClient for the admin user."""
        from kubernetes import config as kconfig

        return kconfig.new_client_from_config(config_file=str(self.kubeconfig))  # type: ignore[no-untyped-call]


def read_state(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / STATE_FILE
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def stop_recorded(run_dir: Path) -> bool:
    """Stop a cluster started earlier (possibly by another process) from its state file."""
    state = read_state(run_dir)
    if state is None:
        return False
    for pid in reversed(list(state.get("pids", {}).values())):
        if pid:
            kill_group(int(pid))
    (run_dir / STATE_FILE).unlink(missing_ok=True)
    return True


def probe_recorded(run_dir: Path) -> dict[str, str]:
    """Health of each component of a recorded cluster: 'ok', or what failed."""
    state = read_state(run_dir)
    if state is None:
        return {}
    e = Endpoints(**state["endpoints"])
    insecure = _insecure_tls()
    checks: dict[str, Callable[[], bool]] = {
        "etcd": lambda: _http_ok(f"http://127.0.0.1:{e.etcd_client}/health", expect=b'"true"'),
        "kube-apiserver": lambda: _http_ok(f"{e.apiserver_url}/readyz", insecure),
        "kube-scheduler": lambda: _http_ok(f"https://127.0.0.1:{e.scheduler}/healthz", insecure),
        "kube-controller-manager": lambda: _http_ok(f"https://127.0.0.1:{e.controller_manager}/healthz", insecure),
        "kwok": lambda: _http_ok(f"http://127.0.0.1:{e.kwok}/healthz"),
        "prometheus": lambda: _http_ok(f"{e.prometheus_url}/-/ready"),
    }
    out: dict[str, str] = {}
    for name, check in checks.items():
        try:
            out[name] = "ok" if check() else "unhealthy"
        except Exception as exc:
            out[name] = f"unreachable ({exc.__class__.__name__})"
    return out


__all__ = [
    "ClusterConfig",
    "ComponentError",
    "Endpoints",
    "LocalCluster",
    "probe_recorded",
    "read_state",
    "stop_recorded",
]
