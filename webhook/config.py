"""Webhook settings (WEBHOOK_* variables or a YAML file), with defaults fit for production.

The same settings drive the admission decision (which pods are opted in, where the checkpoint is mounted,
how strongly a migrated pod is steered) and the registration (`webhook.registration` derives the
`MutatingWebhookConfiguration`'s selectors from them), so the apiserver never sends pods the webhook would
not patch, and the webhook never expects pods the apiserver does not send.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apollo_api.podmigration import CHECKPOINT_LABEL
from common.quantity import parse_quantity
from common.server import ServerSettings
from common.settings import (
    Check,
    ConfigError,
    Validated,
    all_of,
    host_port,
    in_range,
    int_range,
    load,
    non_empty,
    one_of,
    positive,
    setting,
)

ACCESS_MODES = ("ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany", "ReadOnlyMany")
# A label key: an optional DNS-subdomain prefix and a name of at most 63 characters (Kubernetes' rule).
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def label_key() -> Check:
    def check(name: str, value: Any) -> None:
        prefix, _, label = str(value).rpartition("/")
        if (
            not isinstance(value, str)
            or not _LABEL_NAME.match(label)
            or (prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)))
        ):
            raise ConfigError(f"{name} must be a Kubernetes label key ([prefix/]name), got {value!r}")

    return check


def label_value() -> Check:
    def check(name: str, value: Any) -> None:
        if not isinstance(value, str) or (value and not _LABEL_NAME.match(value)):
            raise ConfigError(f"{name} must be a Kubernetes label value, got {value!r}")

    return check


def quantity() -> Check:
    def check(name: str, value: Any) -> None:
        try:
            ok = parse_quantity(value) > 0
        except ValueError:
            ok = False
        if not ok or not isinstance(value, str):
            raise ConfigError(f"{name} must be a positive Kubernetes quantity such as 1Gi, got {value!r}")

    return check


def absolute_path() -> Check:
    def check(name: str, value: Any) -> None:
        if (
            not isinstance(value, str)
            or not value.startswith("/")
            or value == "/"
            or posixpath.normpath(value) != value
            or ":" in value
        ):
            raise ConfigError(f"{name} must be a normalised absolute path other than /, got {value!r}")

    return check


def namespace_names() -> Check:
    def check(name: str, value: Any) -> None:
        if not isinstance(value, tuple) or not all(isinstance(v, str) and _DNS_LABEL.match(v) for v in value):
            raise ConfigError(f"{name} must be a list of namespace names, got {value!r}")

    return check


def optional_dns_subdomain() -> Check:
    def check(name: str, value: Any) -> None:
        if not isinstance(value, str) or (value and not _DNS_SUBDOMAIN.match(value)):
            raise ConfigError(f"{name} must be empty or a DNS subdomain name, got {value!r}")

    return check


@dataclass(frozen=True)
class WebhookServerSettings(ServerSettings):
    """The shared server settings with the webhook's port: 8443, the conventional webhook HTTPS port."""

    bind: str = setting("0.0.0.0:8443", "Address and port to listen on; the Service maps 443 to it.", host_port())


@dataclass(frozen=True)
class ClaimSettings:
    """The checkpoint PersistentVolumeClaim the webhook creates when a workload's first pod is admitted."""

    create: bool = setting(
        True,
        "Create the claim when it is missing (off the admission path; never on a dry run). Off: the claim is "
        "referenced and must be provisioned by someone else, or the pod stays Pending.",
        None,
    )
    storage_class: str = setting(
        "",
        "Empty: the cluster's default StorageClass (DefaultStorageClass admission fills it in). Name one with "
        "WaitForFirstConsumer binding, so the volume is created where the pod is scheduled.",
        optional_dns_subdomain(),
    )
    size: str = setting(
        "1Gi", "Requested capacity: enough for a trainer's step counter and optimiser state.", quantity()
    )
    access_mode: str = setting(
        "ReadWriteOnce",
        "Supported by every provisioner; the pods of one workload that share the claim must then share a node. "
        "ReadWriteMany lets replicas on several nodes write their checkpoints where the storage allows it.",
        one_of(*ACCESS_MODES),
    )
    queue_size: int = setting(
        1024,
        "Claims waiting to be created; past this a claim is dropped (counted) and the next pod of the workload "
        "asks again. Admission never waits for the queue.",
        int_range(1, 1_000_000),
    )
    attempts: int = setting(
        4, "Tries per claim when the API server fails transiently (5xx, 429, connection).", int_range(1, 100)
    )
    retry_backoff_seconds: float = setting(0.5, "First pause between tries, doubled each time.", positive())
    remember_seconds: float = setting(
        300.0,
        "How long a claim known to exist is not asked for again: a Deployment's pods all name the same claim, "
        "and one create per workload is enough. A claim deleted meanwhile is re-created after this long.",
        positive(),
    )
    request_timeout_seconds: float = setting(5.0, "Deadline of each create call.", positive())


@dataclass(frozen=True)
class AffinitySettings:
    """How a migration's replacement pod is steered when the requester did not name a target."""

    suggested_weight: int = setting(
        100,
        "Weight of the preferred term towards status.suggestedNode (APOLLO's or the orchestrator's choice); "
        "the maximum, so it outweighs ordinary preferences but never makes the pod unschedulable.",
        int_range(1, 100),
    )
    avoid_source_weight: int = setting(
        50,
        "Weight of the preferred term away from the source node, which was chosen because it runs hot.",
        int_range(1, 100),
    )


@dataclass(frozen=True)
class MigrationWatchSettings:
    """The list+watch of PodMigration objects that admission reads from memory."""

    relist_backoff_seconds: float = setting(1.0, "Pause after a watch ends or fails before listing again.", positive())
    watch_timeout_seconds: int = setting(
        300, "Server-side watch timeout; the watch is renewed from the last resourceVersion.", int_range(10, 3600)
    )
    request_timeout_seconds: float = setting(
        10.0, "Deadline of the list call; the watch's read deadline is the watch timeout plus this.", positive()
    )
    phase_wait_ms: float = setting(
        200.0,
        "When a new pod belongs to a workload whose migration memory still shows before Evicting, admission "
        "waits up to this long for the watch to deliver the phase (the orchestrator writes it before it "
        "evicts, so the event is in flight). Only that pod waits; well under the 2 s webhook timeout. 0: never.",
        in_range(0, 1000),
    )


@dataclass(frozen=True)
class WebhookSettings(Validated):
    """What the webhook patches, where it mounts the checkpoint and how it reaches the API server."""

    server: WebhookServerSettings = setting(
        WebhookServerSettings,
        "gunicorn: bind, workers, threads, TLS. The API server calls only over HTTPS: the manifests set "
        "certfile and keyfile to the mounted Secret, which is reloaded when it changes.",
    )
    opt_in_label: str = setting(
        CHECKPOINT_LABEL,
        "Label that opts a pod into checkpointing (and so into migration with state).",
        label_key(),
    )
    opt_in_value: str = setting("true", "Value of the opt-in label.", all_of(non_empty(), label_value()))
    excluded_namespaces: tuple[str, ...] = setting(
        ("kube-system", "kube-public", "kube-node-lease"),
        "Never patched, and never sent by the registration's namespaceSelector: the control plane's own pods "
        "must not depend on this webhook. Add the webhook's own namespace in deployments.",
        namespace_names(),
    )
    mount_path: str = setting(
        "/checkpoint",
        "Where the checkpoint claim is mounted in the chosen containers; exported as CHECKPOINT_DIR.",
        absolute_path(),
    )
    strip_completed_init_containers: bool = setting(
        False,
        "Also remove init containers that completed in the original pod and mount the checkpoint (their "
        "output is on the claim). Off by default: an init container may prepare node-local state too.",
        None,
    )
    claim: ClaimSettings = setting(ClaimSettings, "The checkpoint claim created at a workload's first start.")
    affinity: AffinitySettings = setting(AffinitySettings, "Preferred node affinity of replacement pods.")
    migrations: MigrationWatchSettings = setting(MigrationWatchSettings, "The PodMigration watch.")
    max_body_bytes: int = setting(
        3 * 2**20,
        "Largest AdmissionReview accepted: the API server's own 3 MiB request limit, so every pod it accepts "
        "fits, and nothing larger is read into memory.",
        int_range(1024, 64 * 2**20),
    )
    kubeconfig: str = setting("", "Empty: in-cluster service-account credentials.", None)
    log_level: str = setting("INFO", "Structured JSON log level.", one_of("DEBUG", "INFO", "WARNING", "ERROR"))


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> WebhookSettings:
    return load(WebhookSettings, "WEBHOOK", path, environ)
