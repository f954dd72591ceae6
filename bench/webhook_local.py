"""The webhook as deployed, on 127.0.0.1, registered with a local control plane (tests and benchmark).

`LocalWebhook` issues a serving certificate from the local cluster's CA (IP SAN 127.0.0.1, which is
how kube-apiserver reaches it: `clientConfig.url`), runs `python -m webhook.main` (gunicorn, TLS,
settings from WEBHOOK_* variables) in its own process group, and registers it with the
`MutatingWebhookConfiguration` that `webhook.registration` builds from the same settings, with the
CA bundle. `wait_effective` proves the API server really calls it: a dry-run create of an opted-in
pod comes back patched (dry run: nothing is created, by the API server or by the webhook).
"""

from __future__ import annotations

import http.client
import os
import ssl
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apolloctl.cluster.certs import CertificateAuthority, KeyPair
from apolloctl.cluster.process import Process, free_port, wait_until
from webhook.config import WebhookSettings
from webhook.registration import url_client_config, webhook_configuration

ROOT = Path(__file__).resolve().parents[1]


def issue_serving_cert(ca: CertificateAuthority, name: str = "webhook") -> KeyPair:
    """A serving certificate for 127.0.0.1 and localhost, signed by `ca` (the apiserver trusts the bundle)."""
    return ca.issue(name, "apollo-webhook", dns_names=("localhost",), ip_addresses=("127.0.0.1",), server=True)


@dataclass
class LocalWebhook:
    """One webhook process; `env` adds WEBHOOK_* settings (e.g. workers) on top of the defaults here."""

    workdir: Path
    ca: CertificateAuthority
    kubeconfig: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    pair: KeyPair | None = None
    process: Process | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/mutate"

    def settings(self) -> WebhookSettings:
        """The settings the process runs with (for the registration's selectors)."""
        from webhook.config import load_settings

        return load_settings(environ=self._environ())

    def _environ(self) -> dict[str, str]:
        assert self.pair is not None
        return {
            "WEBHOOK_SERVER__BIND": f"127.0.0.1:{self.port}",
            "WEBHOOK_SERVER__CERTFILE": str(self.pair.cert),
            "WEBHOOK_SERVER__KEYFILE": str(self.pair.key),
            "WEBHOOK_KUBECONFIG": str(self.kubeconfig),
            "WEBHOOK_LOG_LEVEL": "WARNING",
            **self.env,
        }

    def start(self, *, wait_ready: bool = True, timeout: float = 60.0) -> LocalWebhook:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        if self.pair is None:
            self.pair = issue_serving_cert(self.ca, f"webhook-{self.port}")
        env = {**os.environ, **self._environ(), "PYTHONPATH": str(ROOT)}
        env["PROMETHEUS_MULTIPROC_DIR"] = str(self.workdir / f"metrics-{self.port}")
        self.process = Process(
            "apollo-webhook", [sys.executable, "-m", "webhook.main"], self.workdir / "webhook.log", env=env
        )
        self.process.start()
        path = "/readyz" if wait_ready else "/healthz"
        self.process.wait_ready(lambda: self.get(path)[0] == 200, timeout)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca.pair.cert))

    def connect(self, timeout: float = 10.0) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.tls_context(), timeout=timeout)

    def get(self, path: str) -> tuple[int, bytes]:
        conn = self.connect(timeout=2.0)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    # ---- registration ------------------------------------------------------------------------------
    def configuration(self, name: str) -> dict[str, Any]:
        return webhook_configuration(self.settings(), url_client_config(self.url, self.ca.pem), name=name)

    def register(self, api_client: Any, name: str = "apollo-webhook-local") -> str:
        from kubernetes import client

        admission = client.AdmissionregistrationV1Api(api_client)
        try:
            admission.delete_mutating_webhook_configuration(name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
        body: Any = self.configuration(name)  # the client serialises plain dicts as they are
        admission.create_mutating_webhook_configuration(body)
        return name

    @staticmethod
    def unregister(api_client: Any, name: str = "apollo-webhook-local") -> None:
        from kubernetes import client

        try:
            client.AdmissionregistrationV1Api(api_client).delete_mutating_webhook_configuration(name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise

    @staticmethod
    def wait_effective(core: Any, namespace: str, timeout: float = 30.0) -> None:
        """Until a dry-run create of an opted-in pod comes back with the checkpoint volume."""

        def patched() -> bool:
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"probe-{uuid.uuid4().hex[:6]}", "labels": {"apollo.io/checkpoint": "true"}},
                "spec": {"containers": [{"name": "c", "image": "registry.invalid/probe:1"}]},
            }
            out = core.create_namespaced_pod(namespace, pod, dry_run="All")
            return any(v.name == "apollo-checkpoint" for v in out.spec.volumes or [])

        wait_until(patched, timeout, "the API server to call the webhook")
