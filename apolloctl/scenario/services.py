"""The services the story runs around the cluster, each as its own local process, as deployed.

APOLLO with the scheduler extender (and kube-scheduler restarted with it), the PodMigration CRD, the
admission webhook (over TLS, registered with the API server), the orchestrator and the local pod
runner. Shared with the migration benchmark and the end-to-end tests.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from apolloctl.cluster import ExtenderConfig, LocalCluster
from apolloctl.cluster.process import Process, free_port
from apolloctl.launch import (
    Service,
    Tls,
    extender_holds_snapshot,
    launch,
    poll,
    report_node_capacity,
    start_apollo,
    start_extender,
)
from apolloctl.podrunner import PodRunner, RunnerSettings
from apolloctl.scenario.apollo_setup import forecasting

WEBHOOK_REGISTRATION = "apollo-webhook-local"
CRD = Path(__file__).resolve().parents[2] / "manifests" / "crds" / "podmigration.yaml"


def install_crd(api_client: Any) -> None:
    """The PodMigration CRD from its manifest, waited for until Established (already installed is fine)."""
    from kubernetes import client

    ext = client.ApiextensionsV1Api(api_client)
    body = yaml.safe_load(CRD.read_text())
    try:
        ext.create_custom_resource_definition(body)
    except client.ApiException as exc:
        if exc.status != 409:
            raise

    def established() -> bool | None:
        status = ext.read_custom_resource_definition(body["metadata"]["name"]).status
        ok = any(c.type == "Established" and c.status == "True" for c in (status.conditions if status else []) or [])
        return True if ok else None

    poll(established, 30, "the PodMigration CRD to be Established")


def _tls(cluster: LocalCluster, name: str) -> Tls:
    assert cluster.ca is not None, "the cluster must have been started here (its CA signs the certificate)"
    pair = cluster.ca.issue(name, name, dns_names=("localhost",), ip_addresses=("127.0.0.1",), server=True)
    return Tls(certfile=pair.cert, keyfile=pair.key, ca=cluster.ca.pair.cert)


def start_webhook(
    cluster: LocalCluster,
    *,
    keep: bool = False,
    registration_name: str = WEBHOOK_REGISTRATION,
    namespace_labels: Mapping[str, str] | None = None,
) -> Service:
    """`apollo-webhook` over TLS (a certificate from the cluster's CA), registered with the API server.

    Registration is the `MutatingWebhookConfiguration` the webhook's own settings produce
    (`webhook.registration`), with a URL instead of a Service; the claim the webhook creates asks
    for no storage class, which binds to `checkpoint_volume`'s PV. `namespace_labels` narrows the
    registration to namespaces carrying them (tests sharing a cluster with other webhooks).
    """
    from kubernetes import client

    from common.settings import build
    from webhook.config import WebhookSettings
    from webhook.registration import url_client_config, webhook_configuration

    port = free_port()
    tls = _tls(cluster, f"webhook-{port}")
    tree: dict[str, Any] = {
        "kubeconfig": str(cluster.kubeconfig),
        "log_level": "INFO",
        "server": {"bind": f"127.0.0.1:{port}", "certfile": str(tls.certfile), "keyfile": str(tls.keyfile)},
    }
    settings = build(WebhookSettings, tree)
    service = launch(
        "apollo-webhook",
        "WEBHOOK",
        tree,
        port=port,
        log_path=cluster.logs_dir / "webhook.log",
        tls=tls,
        env={"PROMETHEUS_MULTIPROC_DIR": str(cluster.logs_dir / f"webhook-metrics-{port}")},
        die_with_parent=not keep,
    )
    service.wait_ready(what="apollo-webhook listing PodMigrations")
    assert cluster.ca is not None
    registration: Any = webhook_configuration(
        settings, url_client_config(f"https://127.0.0.1:{port}/mutate", cluster.ca.pem), name=registration_name
    )
    if namespace_labels:
        for hook in registration["webhooks"]:
            hook.setdefault("namespaceSelector", {}).setdefault("matchLabels", {}).update(namespace_labels)
    unregister_webhook(cluster, registration_name)
    client.AdmissionregistrationV1Api(cluster.api_client()).create_mutating_webhook_configuration(registration)
    return service


def unregister_webhook(cluster: LocalCluster, name: str = WEBHOOK_REGISTRATION) -> None:
    from kubernetes import client

    with contextlib.suppress(client.ApiException):
        client.AdmissionregistrationV1Api(cluster.api_client()).delete_mutating_webhook_configuration(name)


def start_orchestrator(cluster: LocalCluster, apollo_address: str, *, keep: bool = False) -> Service:
    """`apollo-orchestrator` (one replica, no leader election), subscribed to APOLLO's policies."""
    port = free_port()
    settings = {
        "kubeconfig": str(cluster.kubeconfig),
        "log_level": "INFO",
        "server": {"bind": f"127.0.0.1:{port}"},
        "leader": {"enabled": False},
        "apollo": {"address": apollo_address} if apollo_address else {},
        # Finished migrations stay for `kubectl get podmigrations` after the story.
        "ttl_seconds_after_finished": 3600,
    }
    service = launch(
        "apollo-orchestrator",
        "ORCHESTRATOR",
        settings,
        port=port,
        log_path=cluster.logs_dir / "orchestrator.log",
        env={"PROMETHEUS_MULTIPROC_DIR": str(cluster.logs_dir / f"orchestrator-metrics-{port}")},
        die_with_parent=not keep,
    )
    service.wait_ready(lambda body: bool(body.get("synced", True)), what="the orchestrator synced")
    return service


def runner_settings(cluster: LocalCluster) -> RunnerSettings:
    return RunnerSettings(
        kubeconfig=str(cluster.kubeconfig),
        state_dir=str(cluster.run_dir / "podrunner"),
        allowed_volume_roots=(str(cluster.volumes_dir.resolve()),),
        tick_seconds=0.1,
    ).validate()


def start_runner(cluster: LocalCluster, *, keep: bool = False) -> PodRunner | Process:
    """The local pod runner: in this process (its ledger readable at once), or, with `keep`, as its
    own process that outlives this one and stops with `apolloctl cluster down`."""
    settings = runner_settings(cluster)
    if not keep:
        from common.kube import core_v1

        return PodRunner(core_v1(settings.kubeconfig), settings).start()
    env = dict(os.environ)
    env.update(
        {
            "PODRUNNER_KUBECONFIG": settings.kubeconfig,
            "PODRUNNER_STATE_DIR": settings.state_dir,
            "PODRUNNER_ALLOWED_VOLUME_ROOTS": ",".join(settings.allowed_volume_roots),
            "PODRUNNER_TICK_SECONDS": str(settings.tick_seconds),
        }
    )
    proc = Process(
        "podrunner",
        [sys.executable, "-m", "apolloctl.podrunner"],
        cluster.logs_dir / "podrunner.log",
        env=env,
        die_with_parent=False,
    )
    proc.start()
    cluster.adopt("podrunner", proc)
    return proc


def start_story_services(cluster: LocalCluster, apollo_address: str, *, keep: bool = False) -> list[Any]:
    """What the story adds to a cluster that runs APOLLO: the CRD, the webhook, the orchestrator, the pod
    runner. Returns them in start order (each has `stop()`); with `keep` they outlive this process."""
    install_crd(cluster.api_client())
    started: list[Any] = [start_webhook(cluster, keep=keep)]
    started.append(start_orchestrator(cluster, apollo_address, keep=keep))
    if keep:
        cluster.adopt("apollo-webhook", started[0].process)
        cluster.adopt("apollo-orchestrator", started[1].process)
    started.append(start_runner(cluster, keep=keep))
    return started


def start_apollo_and_extender(
    cluster: LocalCluster,
    settings: Mapping[str, Any],
    nodes: list[str],
    node_cpu: float,
    node_memory: int,
    *,
    keep: bool = False,
) -> tuple[Service, Service]:
    """APOLLO on `settings`, told the nodes' capacity (kwok reports none it could use), then the extender once
    APOLLO forecasts, and kube-scheduler restarted with the extender once it holds APOLLO's snapshot.

    Returns (apollo, extender). If a step fails, what was started here is stopped before the error
    goes on (unless `keep`, which leaves every process to `apolloctl cluster down`).
    """
    started: list[Service] = []
    try:
        apollo = start_apollo(settings, cluster.logs_dir / "apollo.log", die_with_parent=not keep)
        started.append(apollo)
        report_node_capacity(apollo.address("grpc"), nodes, node_cpu, node_memory)
        generation = poll(lambda: forecasting(apollo.address("grpc")), 90, "APOLLO's first forecast")
        extender = start_extender(
            apollo.address("grpc"),
            cluster.logs_dir / "extender.log",
            settings={
                "kubeconfig": str(cluster.kubeconfig),
                "refresh_interval_seconds": 0.5,
                "snapshot_max_age_seconds": 5.0,
            },
            die_with_parent=not keep,
        )
        started.append(extender)
        extender.wait_ready(extender_holds_snapshot(generation), what="holding APOLLO's snapshot")
        cluster.restart_scheduler((ExtenderConfig(url_prefix=extender.url, weight=5, http_timeout="1s"),))
    except BaseException:
        for service in reversed([] if keep else started):
            with contextlib.suppress(Exception):
                service.stop()
        raise
    return apollo, extender
