"""What the controller reads from a pod: container states, requests, identity, replacement match.

Pure functions over the plain JSON the API server returns, so they are tested with real pod
documents and shared by the state machine and the adapters. Nothing here talks to the cluster.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from apollo_api.podmigration import (
    CHECKPOINT_STEP_ANNOTATION,
    JOB_INDEX_ANNOTATION,
    MIGRATION_ANNOTATION,
    RESUMED_FROM_ANNOTATION,
    ContainerState,
    PodMigration,
    Resources,
    is_replacement_of,
)
from common.quantity import parse_quantity

Json = Mapping[str, Any]
NODE_NAME_FIELD = "metadata.name"
# Annotations that describe one incarnation of a pod, dropped when the orchestrator re-creates it.
_INCARNATION_ANNOTATIONS = frozenset({MIGRATION_ANNOTATION, RESUMED_FROM_ANNOTATION, CHECKPOINT_STEP_ANNOTATION})

# Metadata the API server owns or that belongs to one incarnation of a pod: never copied to a re-created pod.
_SERVER_METADATA = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "ownerReferences",
    "generation",
    "selfLink",
    "generateName",
)


def meta(pod: Json) -> Json:
    return pod.get("metadata") or {}


def spec(pod: Json) -> Json:
    return pod.get("spec") or {}


def status(pod: Json) -> Json:
    return pod.get("status") or {}


def uid(pod: Json) -> str:
    return str(meta(pod).get("uid", ""))


def name(pod: Json) -> str:
    return str(meta(pod).get("name", ""))


def node_of(pod: Json) -> str:
    return str(spec(pod).get("nodeName", "") or "")


def annotations_of(obj: Json) -> Mapping[str, str]:
    return meta(obj).get("annotations") or {}


def controller_ref(pod: Json) -> tuple[str, str, str]:
    """(kind, name, uid) of the controlling owner reference as written on the pod (no Deployment lookup)."""
    for owner in meta(pod).get("ownerReferences") or []:
        if owner.get("controller"):
            return str(owner.get("kind", "")), str(owner.get("name", "")), str(owner.get("uid", ""))
    return "", "", ""


def parse_time(stamp: str) -> float | None:
    """RFC 3339 (as the API server writes it) to epoch seconds; None for empty or malformed."""
    if not stamp:
        return None
    try:
        return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def rfc3339(epoch: float) -> str:
    """Epoch seconds as RFC 3339 UTC with milliseconds (the API server accepts fractional seconds)."""
    stamp = dt.datetime.fromtimestamp(epoch, dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def created_at(obj: Json) -> float | None:
    return parse_time(str(meta(obj).get("creationTimestamp", "") or ""))


def _state_of(cs: Json | None) -> tuple[str, int | None]:
    state = (cs or {}).get("state") or {}
    if "terminated" in state and state["terminated"] is not None:
        code = state["terminated"].get("exitCode")
        return "terminated", None if code is None else int(code)
    if "running" in state and state["running"] is not None:
        return "running", None
    return "waiting", None


def capture_containers(pod: Json) -> list[ContainerState]:
    """Every init and main container's state; `migrate` False for what completed and must not re-run.

    A main container completed (terminated, exit 0) only means something when the pod does not
    restart it: under restartPolicy Always the kubelet would start it again, so it migrates. Sidecars
    (init containers with restartPolicy Always) run for the pod's life and always migrate. A regular
    init container that completed has done its work.
    """
    s, st = spec(pod), status(pod)
    restart_policy = str(s.get("restartPolicy", "Always"))
    init_status = {str(c.get("name")): c for c in st.get("initContainerStatuses") or []}
    main_status = {str(c.get("name")): c for c in st.get("containerStatuses") or []}
    out: list[ContainerState] = []
    for c in s.get("initContainers") or []:
        cname = str(c.get("name", ""))
        cs = init_status.get(cname)
        state, code = _state_of(cs)
        sidecar = c.get("restartPolicy") == "Always"
        completed = state == "terminated" and code == 0
        out.append(
            ContainerState(
                name=cname,
                init=True,
                sidecar=sidecar,
                state=state,
                exit_code=code,
                restart_count=int((cs or {}).get("restartCount", 0) or 0),
                migrate=sidecar or not completed,
            )
        )
    for c in s.get("containers") or []:
        cname = str(c.get("name", ""))
        cs = main_status.get(cname)
        state, code = _state_of(cs)
        completed = state == "terminated" and code == 0 and restart_policy != "Always"
        out.append(
            ContainerState(
                name=cname,
                state=state,
                exit_code=code,
                restart_count=int((cs or {}).get("restartCount", 0) or 0),
                migrate=not completed,
            )
        )
    return out


def _container_requests(c: Json) -> tuple[float, float]:
    req = (c.get("resources") or {}).get("requests") or {}
    return parse_quantity(req.get("cpu", 0)), parse_quantity(req.get("memory", 0))


def effective_requests(pod_spec: Json, skip: frozenset[str] = frozenset()) -> Resources:
    """The scheduler's effective requests (sum of main containers and sidecars, or the largest regular init
    container when that is more), leaving out the containers named in `skip`. Raises ValueError on a
    malformed quantity.
    """
    cpu = mem = 0.0
    init_cpu = init_mem = 0.0
    for c in pod_spec.get("initContainers") or []:
        if str(c.get("name", "")) in skip:
            continue
        c_cpu, c_mem = _container_requests(c)
        if c.get("restartPolicy") == "Always":
            cpu, mem = cpu + c_cpu, mem + c_mem
        else:
            init_cpu, init_mem = max(init_cpu, c_cpu), max(init_mem, c_mem)
    for c in pod_spec.get("containers") or []:
        if str(c.get("name", "")) in skip:
            continue
        c_cpu, c_mem = _container_requests(c)
        cpu, mem = cpu + c_cpu, mem + c_mem
    return Resources(cpu_cores=round(max(cpu, init_cpu), 6), memory_bytes=int(max(mem, init_mem)))


def not_migrating(containers: Sequence[ContainerState]) -> frozenset[str]:
    return frozenset(c.name for c in containers if not c.migrate)


def _pins_by_name(fields: Any) -> bool:
    return any(f.get("key") == NODE_NAME_FIELD for f in fields or [])


def unpinned_spec(pod: Json) -> dict[str, Any]:
    """The pod's spec without the node affinity an earlier migration put on it.

    A replacement (it carries MIGRATION_ANNOTATION) was steered by the webhook: a required
    `metadata.name In [<its node>]` field requirement and preferred single-field terms on
    `metadata.name`. The next move must neither inherit that pin (a bare pod is re-created from this
    spec) nor be judged infeasible because of it. Any other affinity is the user's and stays.
    """
    s = copy.deepcopy(dict(spec(pod)))
    if not annotations_of(pod).get(MIGRATION_ANNOTATION):
        return s
    affinity = s.get("affinity") or {}
    node_affinity = affinity.get("nodeAffinity") or {}
    here = node_of(pod)
    required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required:
        terms = []
        for term in required.get("nodeSelectorTerms") or []:
            kept = [
                f
                for f in term.get("matchFields") or []
                if not (f.get("key") == NODE_NAME_FIELD and f.get("operator") == "In" and f.get("values") == [here])
            ]
            term = {**term, "matchFields": kept} if kept else {k: v for k, v in term.items() if k != "matchFields"}
            if term.get("matchExpressions") or term.get("matchFields"):
                terms.append(term)
        if terms:
            node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {**required, "nodeSelectorTerms": terms}
        else:
            node_affinity.pop("requiredDuringSchedulingIgnoredDuringExecution", None)
    preferred = node_affinity.get("preferredDuringSchedulingIgnoredDuringExecution")
    if preferred:
        kept_pref = [
            p
            for p in preferred
            if (p.get("preference") or {}).get("matchExpressions")
            or not _pins_by_name((p.get("preference") or {}).get("matchFields"))
            or len((p.get("preference") or {}).get("matchFields") or []) != 1
        ]
        if kept_pref:
            node_affinity["preferredDuringSchedulingIgnoredDuringExecution"] = kept_pref
        else:
            node_affinity.pop("preferredDuringSchedulingIgnoredDuringExecution", None)
    if node_affinity:
        affinity["nodeAffinity"] = node_affinity
    else:
        affinity.pop("nodeAffinity", None)
    if affinity:
        s["affinity"] = affinity
    else:
        s.pop("affinity", None)
    return s


def bare_pod_template(pod: Json) -> dict[str, Any]:
    """What re-creates a bare pod elsewhere: its metadata and spec without the node binding, server fields,
    or the pin and annotation an earlier migration left."""
    m = {k: copy.deepcopy(v) for k, v in meta(pod).items() if k not in _SERVER_METADATA}
    if m.get("annotations"):
        # The old process's reports (where it resumed, what it checkpointed) must not pass for the new one's.
        m["annotations"] = {k: v for k, v in m["annotations"].items() if k not in _INCARNATION_ANNOTATIONS}
    s = {k: v for k, v in unpinned_spec(pod).items() if k != "nodeName"}
    return {"metadata": m, "spec": s}


def replacement_manifest(template: Json, namespace: str, migration: str) -> dict[str, Any]:
    """The pod the orchestrator creates for a bare pod: the stored template, annotated with the migration."""
    m = dict(copy.deepcopy(template.get("metadata") or {}))
    m["namespace"] = namespace
    m["annotations"] = {**(m.get("annotations") or {}), MIGRATION_ANNOTATION: migration}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": m, "spec": copy.deepcopy(template.get("spec") or {})}


def job_index(pod: Json) -> str:
    return str(annotations_of(pod).get(JOB_INDEX_ANNOTATION, ""))


def is_replacement(m: PodMigration, pod: Json, not_before: float | None = None) -> bool:
    """Whether `pod` is the replacement of migration `m`: the contract's matching rule (the webhook's
    annotation, else the controller owner's UID and an Indexed Job's completion index, else a bare pod's
    name), plus time: a pod of the same owner created before `not_before` (the eviction request) is a
    sibling replica, not the replacement.
    """
    if not uid(pod) or not is_replacement_of(m, pod):
        return False
    if annotations_of(pod).get(MIGRATION_ANNOTATION):
        return True
    born = created_at(pod)
    # creationTimestamp has one-second resolution: a pod created in the eviction's second counts.
    return not_before is None or born is None or born >= int(not_before)


def scheduled_time(pod: Json) -> float | None:
    for cond in status(pod).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "True":
            return parse_time(str(cond.get("lastTransitionTime", "") or ""))
    return None


def running_time(pod: Json) -> float | None:
    """When the pod started running: its start time once the phase is Running (or it already Succeeded)."""
    st = status(pod)
    if st.get("phase") not in ("Running", "Succeeded"):
        return None
    for cond in st.get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") == "True":
            stamp = parse_time(str(cond.get("lastTransitionTime", "") or ""))
            if stamp is not None:
                return stamp
    return parse_time(str(st.get("startTime", "") or "")) or created_at(pod)


def pending_reason(pod: Json) -> str:
    """Why a pod is not running yet, from its conditions (the scheduler's message when unschedulable)."""
    for cond in status(pod).get("conditions") or []:
        if cond.get("status") == "False" and cond.get("message"):
            return f"{cond.get('reason') or cond.get('type')}: {cond.get('message')}"
    return f"phase {status(pod).get('phase') or 'Pending'}"


def mounted_claims(pod: Json) -> set[str]:
    return {
        str((v.get("persistentVolumeClaim") or {}).get("claimName", ""))
        for v in spec(pod).get("volumes") or []
        if v.get("persistentVolumeClaim")
    }
