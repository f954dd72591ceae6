"""The webhook as deployed, on 127.0.0.1, registered with a local control plane (tests and benchmark).

`LocalWebhook` issues a serving certificate from the local cluster's CA (IP SAN 127.0.0.1: the API
server reaches it through `clientConfig.url`), runs `apollo-webhook` (gunicorn, TLS, its settings in a
YAML file) through the stack's one launcher (`apolloctl.launch`), and registers it with the
`MutatingWebhookConfiguration` that `webhook.registration` builds from the same settings, plus the CA
bundle. `wait_effective` proves the API server really calls it: a dry-run create of an opted-in pod
comes back patched (a dry run, so nothing is created, by the API server or by the webhook).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from apolloctl.cluster.certs import CertificateAuthority
from apolloctl.cluster.process import free_port, wait_until
from apolloctl.launch import Service, Tls, launch
from common.settings import build
from webhook.config import WebhookSettings
from webhook.registration import url_client_config, webhook_configuration

DEFAULT_REGISTRATION = "apollo-webhook-local"


def issue_tls(ca: CertificateAuthority, name: str) -> Tls:
    """A serving certificate for 127.0.0.1 and localhost, signed by `ca` (the API server trusts the bundle)."""
    pair = ca.issue(name, "apollo-webhook", dns_names=("localhost",), ip_addresses=("127.0.0.1",), server=True)
    return Tls(certfile=pair.cert, keyfile=pair.key, ca=ca.pair.cert)


class LocalWebhook:
    """One `apollo-webhook` process on a fixed port and certificate, so it can be stopped and started again."""

    def __init__(
        self, log_path: Path, ca: CertificateAuthority, kubeconfig: Path, settings: Mapping[str, Any] | None = None
    ) -> None:
        self.log_path = log_path
        self.ca = ca
        self.port = free_port()
        self.tls = issue_tls(ca, f"webhook-{self.port}")
        tree: dict[str, Any] = {"kubeconfig": str(kubeconfig), "log_level": "WARNING"} | dict(settings or {})
        server = dict(tree.get("server") or {}) | {
            "bind": f"127.0.0.1:{self.port}",
            "certfile": str(self.tls.certfile),
            "keyfile": str(self.tls.keyfile),
        }
        self.tree = tree | {"server": server}
        self.settings: WebhookSettings = build(WebhookSettings, self.tree)
        self.service: Service | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/mutate"

    def start(self, *, ready: bool = True) -> LocalWebhook:
        """Start and wait: for `/readyz` (PodMigrations listed), or only `/healthz` when `ready` is False."""
        metrics_dir = self.log_path.parent / f"webhook-metrics-{self.port}"
        self.service = launch(
            "apollo-webhook",
            "WEBHOOK",
            self.tree,
            port=self.port,
            log_path=self.log_path,
            tls=self.tls,
            env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
        )
        try:
            self.service.wait_ready(path="/readyz" if ready else "/healthz", what="apollo-webhook")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
            self.service = None

    def metrics(self) -> str:
        assert self.service is not None
        status, body, _ = self.service.request("GET", "/metrics")
        assert status == 200, body
        return body.decode()

    # ---- registration ------------------------------------------------------------------------------
    def configuration(self, name: str = DEFAULT_REGISTRATION) -> dict[str, Any]:
        return webhook_configuration(self.settings, url_client_config(self.url, self.ca.pem), name=name)

    def register(self, api_client: Any, name: str = DEFAULT_REGISTRATION) -> str:
        from kubernetes import client

        unregister(api_client, name)
        body: Any = self.configuration(name)  # the client serialises plain dicts as they are
        client.AdmissionregistrationV1Api(api_client).create_mutating_webhook_configuration(body)
        return name


def unregister(api_client: Any, name: str = DEFAULT_REGISTRATION) -> None:
    from kubernetes import client

    try:
        client.AdmissionregistrationV1Api(api_client).delete_mutating_webhook_configuration(name)
    except client.ApiException as exc:
        if exc.status != 404:
            raise


def probe_pod(name: str = "") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name or f"probe-{uuid.uuid4().hex[:6]}", "labels": {"apollo.io/checkpoint": "true"}},
        "spec": {"containers": [{"name": "c", "image": "registry.invalid/probe:1"}]},
    }


def wait_effective(core: Any, namespace: str, timeout: float = 30.0, *, registered: bool = True) -> None:
    """Until a dry-run create of an opted-in pod comes back patched (or, `registered=False`, unpatched).

    The API server picks up a (de)registration from its informer, a moment after the write.
    """

    def patched() -> bool:
        out = core.create_namespaced_pod(namespace, probe_pod(), dry_run="All")
        return any(v.name == "apollo-checkpoint" for v in out.spec.volumes or []) == registered

    wait_until(patched, timeout, f"the API server to {'call' if registered else 'stop calling'} the webhook")
