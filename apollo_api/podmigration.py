"""The `PodMigration` custom resource (apollo.io/v1alpha1): the contract between webhook and orchestrator.

The orchestrator owns these objects (it creates, advances and garbage-collects them); the webhook only
reads them to recognise a replacement pod and patch it; the REST API and `apolloctl` front them. All
three import this module, so field names, phases and the matching rules exist once. The dataclasses
mirror the CRD schema in `manifests/crds/podmigration.yaml` (a unit test keeps the two in step) and
convert to and from the camelCase JSON the API server stores; unknown keys are kept out, missing ones
take defaults, so an older object still reads.

Also here: the labels and annotations the stack agrees on, and the checkpoint claim name, which must be
the same wherever it is computed (webhook at first start, orchestrator at migration, APOLLO when it
advises provisioning).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

GROUP = "apollo.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "PodMigration"
PLURAL = "podmigrations"
SINGULAR = "podmigration"
SHORT_NAMES = ("pmig",)

# Pods opt in to checkpointing (and so to migration with state) with this label set to "true".
CHECKPOINT_LABEL = "apollo.io/checkpoint"
# On a replacement pod: the PodMigration it belongs to (set by the webhook).
MIGRATION_ANNOTATION = "apollo.io/migration"
# On a pod: the container names whose checkpoint directory is mounted (default: every container).
CHECKPOINT_CONTAINERS_ANNOTATION = "apollo.io/checkpoint-containers"
# Written by a workload (or the pod runner) on resume: the step it resumed from; -1 or absent = scratch.
RESUMED_FROM_ANNOTATION = "apollo.io/resumed-from"
# On PodMigration objects: the pod UID being migrated, for a quick label-selector lookup.
POD_UID_LABEL = "apollo.io/pod-uid"
POD_NAME_LABEL = "apollo.io/pod-name"
# On a PodMigration: a cancellation request (RFC 3339 time; set by the REST API and apolloctl, which never
# write status once the controller has started). The controller honours it before the eviction (phase
# Cancelled, nothing touched); after the eviction the move completes and the message says it came too late.
CANCEL_ANNOTATION = "apollo.io/cancel-requested"
# Who asked for the cancellation (the authenticated user), for the message and the events.
CANCEL_BY_ANNOTATION = "apollo.io/cancel-requested-by"
# On a source pod: the last step the workload wrote to its checkpoint (set by the workload or the pod runner,
# like RESUMED_FROM_ANNOTATION). The orchestrator records it at capture; a replacement that then reports
# RESUMED_FROM "-1" (from scratch) lost that state, and the migration fails saying so.
CHECKPOINT_STEP_ANNOTATION = "apollo.io/checkpoint-step"
# On a PodMigration at creation: a preferred target chosen by someone other than the requester (APOLLO's
# policy). Status cannot be written on create, so the controller copies it to status.suggestedNode.
SUGGESTED_NODE_ANNOTATION = "apollo.io/suggested-node"
# On PodMigrations created together by one batch (drain-like) request: the batch id, to list them together.
BATCH_LABEL = "apollo.io/batch"
CHECKPOINT_VOLUME = "apollo-checkpoint"
CHECKPOINT_ENV = "CHECKPOINT_DIR"
CHECKPOINT_SUFFIX = "-ckpt"
JOB_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


class Phase:
    PENDING = "Pending"
    CAPTURING = "Capturing"
    EVICTING = "Evicting"
    RESCHEDULING = "Rescheduling"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    ALL = (PENDING, CAPTURING, EVICTING, RESCHEDULING, SUCCEEDED, FAILED, CANCELLED)
    ACTIVE = frozenset({PENDING, CAPTURING, EVICTING, RESCHEDULING})
    FINISHED = frozenset({SUCCEEDED, FAILED, CANCELLED})
    # Phases in which a new pod of the workload is the migration's replacement.
    REPLACING = frozenset({EVICTING, RESCHEDULING})


MIN_TIMEOUT_SECONDS = 10
MAX_TIMEOUT_SECONDS = 3600
DEFAULT_TIMEOUT_SECONDS = 300


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


_ALIASES = {
    "preserve_pv": "preservePV",
    "checkpoint_pvc": "checkpointPVC",
    "pod_uid": "podUID",
    "owner_uid": "ownerUID",
}


def _key(name: str) -> str:
    return _ALIASES.get(name, _camel(name))


class _Json:
    """camelCase JSON <-> dataclass, omitting empty values so objects stay small and readable."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, _Json):
                value = value.to_json()
            elif isinstance(value, list):
                value = [v.to_json() if isinstance(v, _Json) else v for v in value]
            if value in (None, "", [], {}) and f.name not in _KEEP_EMPTY:
                continue
            out[_key(f.name)] = value
        return out


_KEEP_EMPTY = {"exit_code"}


@dataclass
class PodMigrationSpec(_Json):
    pod_name: str = ""
    source_node: str = ""
    target_node: str = ""
    preserve_pv: bool = True
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    dry_run: bool = False
    reason: str = ""
    request_id: str = ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PodMigrationSpec:
        return cls(
            pod_name=str(data.get("podName", "")),
            source_node=str(data.get("sourceNode", "")),
            target_node=str(data.get("targetNode", "")),
            preserve_pv=bool(data.get("preservePV", True)),
            timeout_seconds=int(data.get("timeoutSeconds", DEFAULT_TIMEOUT_SECONDS)),
            dry_run=bool(data.get("dryRun", False)),
            reason=str(data.get("reason", "")),
            request_id=str(data.get("requestId", "")),
        )


@dataclass
class ContainerState(_Json):
    """One container as captured before the eviction. `migrate` False = completed, not re-run."""

    name: str
    init: bool = False
    sidecar: bool = False
    state: str = "waiting"  # waiting | running | terminated
    exit_code: int | None = None
    restart_count: int = 0
    migrate: bool = True

    @property
    def completed(self) -> bool:
        return self.state == "terminated" and self.exit_code == 0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ContainerState:
        exit_code = data.get("exitCode")
        return cls(
            name=str(data.get("name", "")),
            init=bool(data.get("init", False)),
            sidecar=bool(data.get("sidecar", False)),
            state=str(data.get("state", "waiting")),
            exit_code=None if exit_code is None else int(exit_code),
            restart_count=int(data.get("restartCount", 0)),
            migrate=bool(data.get("migrate", True)),
        )


@dataclass
class Condition(_Json):
    type: str
    status: str
    reason: str = ""
    message: str = ""
    last_transition_time: str = ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Condition:
        return cls(
            type=str(data.get("type", "")),
            status=str(data.get("status", "")),
            reason=str(data.get("reason", "")),
            message=str(data.get("message", "")),
            last_transition_time=str(data.get("lastTransitionTime", "")),
        )


@dataclass
class Resources(_Json):
    """Requests summed over the containers that run (cores, bytes)."""

    cpu_cores: float = 0.0
    memory_bytes: int = 0

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Resources:
        data = data or {}
        return cls(cpu_cores=float(data.get("cpuCores", 0.0)), memory_bytes=int(data.get("memoryBytes", 0)))


STEP_NAMES = (
    "accepted",
    "captured",
    "checkpointReady",
    "evictionRequested",
    "evicted",
    "sourceTerminated",
    "replacementCreated",
    "scheduled",
    "running",
    "finished",
)


@dataclass
class PodMigrationStatus(_Json):
    phase: str = Phase.PENDING
    message: str = ""
    conditions: list[Condition] = field(default_factory=list)
    pod_uid: str = ""
    source_node: str = ""
    owner_kind: str = ""
    owner_name: str = ""
    owner_uid: str = ""
    job_completion_index: str = ""
    containers: list[ContainerState] = field(default_factory=list)
    # The pod spec and metadata to re-create a bare pod from (no controller will).
    pod_template: dict[str, Any] = field(default_factory=dict)
    checkpoint_pvc: str = ""
    # A target chosen by someone other than the requester (APOLLO's policy, the orchestrator's ranking):
    # the replacement prefers it, while spec.targetNode (named by the requester) is required.
    suggested_node: str = ""
    replacement_pod: str = ""
    replacement_node: str = ""
    # RFC 3339 times of each step (see STEP_NAMES); the orchestrator fills what happened.
    steps: dict[str, str] = field(default_factory=dict)
    requests_before: Resources | None = None
    requests_after: Resources | None = None
    resumed_from: str = ""
    # CHECKPOINT_STEP_ANNOTATION of the source pod at capture: a checkpoint existed ("" = not reported).
    checkpoint_step: str = ""
    eviction_attempts: int = 0
    # RFC 3339 time of the latest eviction request, so the retry backoff survives a controller restart.
    last_eviction_attempt: str = ""
    observed_generation: int = 0
    duration: str = ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> PodMigrationStatus:
        data = data or {}
        return cls(
            phase=str(data.get("phase", Phase.PENDING)),
            message=str(data.get("message", "")),
            conditions=[Condition.from_json(c) for c in data.get("conditions") or []],
            pod_uid=str(data.get("podUID", "")),
            source_node=str(data.get("sourceNode", "")),
            owner_kind=str(data.get("ownerKind", "")),
            owner_name=str(data.get("ownerName", "")),
            owner_uid=str(data.get("ownerUID", "")),
            job_completion_index=str(data.get("jobCompletionIndex", "")),
            containers=[ContainerState.from_json(c) for c in data.get("containers") or []],
            pod_template=dict(data.get("podTemplate") or {}),
            checkpoint_pvc=str(data.get("checkpointPVC", "")),
            suggested_node=str(data.get("suggestedNode", "")),
            replacement_pod=str(data.get("replacementPod", "")),
            replacement_node=str(data.get("replacementNode", "")),
            steps={str(k): str(v) for k, v in (data.get("steps") or {}).items()},
            requests_before=Resources.from_json(data["requestsBefore"]) if data.get("requestsBefore") else None,
            requests_after=Resources.from_json(data["requestsAfter"]) if data.get("requestsAfter") else None,
            resumed_from=str(data.get("resumedFrom", "")),
            checkpoint_step=str(data.get("checkpointStep", "")),
            eviction_attempts=int(data.get("evictionAttempts", 0)),
            last_eviction_attempt=str(data.get("lastEvictionAttempt", "")),
            observed_generation=int(data.get("observedGeneration", 0)),
            duration=str(data.get("duration", "")),
        )

    @property
    def completed_containers(self) -> set[str]:
        return {c.name for c in self.containers if not c.init and not c.migrate}

    @property
    def completed_init_containers(self) -> set[str]:
        return {c.name for c in self.containers if c.init and not c.sidecar and not c.migrate}


@dataclass
class PodMigration:
    """One migration: metadata as the API server gave it, typed spec and status."""

    name: str
    namespace: str
    spec: PodMigrationSpec = field(default_factory=PodMigrationSpec)
    status: PodMigrationStatus = field(default_factory=PodMigrationStatus)
    uid: str = ""
    resource_version: str = ""
    generation: int = 0
    creation_timestamp: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    deletion_timestamp: str = ""

    @property
    def active(self) -> bool:
        return self.status.phase in Phase.ACTIVE and not self.deletion_timestamp

    @property
    def reservation(self) -> tuple[str, Resources] | None:
        """(node, requests) this migration holds on its target, or None.

        From capture (requests recorded, phase past Pending) until its replacement has a node: the
        target is spec.targetNode, else status.suggestedNode, and the requests are the replacement's
        planned ones (requestsAfter, else requestsBefore). Dry runs and finished or deleted objects hold
        nothing. The orchestrator counts these when it checks a target's capacity; the extender keeps
        every other pod off them, so a pod created during the migration cannot take the space.
        """
        if self.spec.dry_run or self.deletion_timestamp or self.status.replacement_node:
            return None
        if self.status.phase not in (Phase.CAPTURING, Phase.EVICTING, Phase.RESCHEDULING):
            return None
        requests = self.status.requests_after or self.status.requests_before
        node = self.spec.target_node or self.status.suggested_node
        return (node, requests) if node and requests is not None else None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> PodMigration:
        meta = obj.get("metadata") or {}
        return cls(
            name=str(meta.get("name", "")),
            namespace=str(meta.get("namespace", "")),
            spec=PodMigrationSpec.from_json(obj.get("spec") or {}),
            status=PodMigrationStatus.from_json(obj.get("status")),
            uid=str(meta.get("uid", "")),
            resource_version=str(meta.get("resourceVersion", "")),
            generation=int(meta.get("generation", 0) or 0),
            creation_timestamp=str(meta.get("creationTimestamp", "") or ""),
            labels=dict(meta.get("labels") or {}),
            annotations=dict(meta.get("annotations") or {}),
            deletion_timestamp=str(meta.get("deletionTimestamp", "") or ""),
        )

    def to_json(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if self.labels:
            meta["labels"] = dict(self.labels)
        if self.annotations:
            meta["annotations"] = dict(self.annotations)
        if self.resource_version:
            meta["resourceVersion"] = self.resource_version
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": meta,
            "spec": self.spec.to_json(),
            "status": self.status.to_json(),
        }


_DNS_INVALID = re.compile(r"[^a-z0-9-]+")


def checkpoint_claim_name(pod_name: str, owner_kind: str = "", owner_name: str = "") -> str:
    """``<workload-or-pod>-ckpt`` as a DNS-1123 name: the claim outlives any one pod of its workload.

    A Deployment's, ReplicaSet's or Job's pods get new names on every re-creation, so their claim is
    named after the workload; a StatefulSet's pods keep their names (``web-0``), so each gets its own
    claim, as its volume claim templates would; a bare pod is its own workload.
    """
    stable = owner_kind == "StatefulSet" or not owner_name
    base = _DNS_INVALID.sub("-", (pod_name if stable else owner_name).lower()).strip("-") or "pod"
    return base[: 253 - len(CHECKPOINT_SUFFIX)].rstrip("-") + CHECKPOINT_SUFFIX


def workload_of(pod: Mapping[str, Any]) -> tuple[str, str, str]:
    """(kind, name, uid) of the pod's top-level workload from its metadata; ("", "", "") for a bare pod.

    A ReplicaSet named ``<deployment>-<hash>`` with the ``pod-template-hash`` label is reported as its
    Deployment, which is what a person calls the workload and what survives a rollout; the owner UID
    stays the ReplicaSet's, because that is what the replacement pod's owner reference carries.
    """
    meta = pod.get("metadata") or {}
    owners = [o for o in meta.get("ownerReferences") or [] if o.get("controller")]
    if not owners:
        return "", "", ""
    owner = owners[0]
    kind, name, uid = str(owner.get("kind", "")), str(owner.get("name", "")), str(owner.get("uid", ""))
    template_hash = (meta.get("labels") or {}).get("pod-template-hash", "")
    if kind == "ReplicaSet" and template_hash and name.endswith("-" + template_hash):
        return "Deployment", name[: -len(template_hash) - 1], uid
    return kind, name, uid


def is_replacement_of(m: PodMigration, pod: Mapping[str, Any]) -> bool:
    """The matching rule: is `pod` (another pod than the source) the replacement of migration `m`?

    MIGRATION_ANNOTATION settles it when present. Otherwise a pod in m's namespace whose controller
    owner UID equals status.ownerUID (and, for an Indexed Job, whose completion index equals
    status.jobCompletionIndex), or, for a bare pod (no controller), whose name equals spec.podName.
    Callers that must tell a replacement from a sibling replica created earlier add their own time rule.
    """
    meta = pod.get("metadata") or {}
    if str(meta.get("namespace") or m.namespace) != m.namespace:
        return False
    uid = str(meta.get("uid") or "")
    if uid and uid == m.status.pod_uid:
        return False
    marked = (meta.get("annotations") or {}).get(MIGRATION_ANNOTATION)
    if marked:
        return bool(marked == m.name)
    owner = next((o for o in meta.get("ownerReferences") or [] if o.get("controller")), None)
    owner_uid = str(owner.get("uid", "")) if owner else ""
    if m.status.owner_uid:
        if owner_uid != m.status.owner_uid:
            return False
        index = str((meta.get("annotations") or {}).get(JOB_INDEX_ANNOTATION, ""))
        return not m.status.job_completion_index or index == m.status.job_completion_index
    return not owner_uid and str(meta.get("name", "")) == m.spec.pod_name


def migration_name(pod_name: str, suffix: str) -> str:
    """A DNS-1123 object name for a migration of `pod_name` (suffix keeps repeated migrations apart)."""
    base = _DNS_INVALID.sub("-", pod_name.lower()).strip("-") or "pod"
    return f"{base[: 253 - len(suffix) - 1].rstrip('-')}-{suffix}"
