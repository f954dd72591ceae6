"""From a pod object to the processes that stand for its containers: pure, no API calls, no processes.

What a kubelet and a container runtime would do with a container spec, reduced to what a local
process can honour:

* the command is ``command`` + ``args`` with ``$(VAR)`` references expanded as the kubelet does
  (``$$`` escapes, unknown references stay as written); the image is not consulted, so a container
  without ``command`` cannot run here and says so;
* ``python``/``python3`` as the executable means this interpreter (the image's Python has the
  project installed, here the virtualenv's does);
* the environment is the container's ``env`` and ``envFrom`` (values, pod fields, resource fields,
  ConfigMap and Secret keys through a resolver), with ``HOSTNAME`` set to the pod's host name as
  the kubelet does, on top of a few of the runner's own variables (``PATH``, ``HOME``, locale);
* volumes become local directories: a container path under a mount is rewritten to the directory
  behind it, in environment values, arguments and the working directory (``CHECKPOINT_DIR=/checkpoint``
  becomes the PV's directory). Only volumes with a local directory are mapped (PVCs bound to a
  ``hostPath`` or ``local`` PV, ``emptyDir``); others (the service-account token, ConfigMaps) are not.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from apolloctl.cluster.configs import COMPLETE_ANNOTATION, KWOK_NODE_ANNOTATION, LOCAL_RUN_ANNOTATION
from common.quantity import parse_quantity

# Variables of the runner's own environment a container gets, as it would get its image's ENV.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
PYTHON_NAMES = frozenset({"python", "python3"})
DEFAULT_GRACE_SECONDS = 30  # the API server's default terminationGracePeriodSeconds


class SpecError(ValueError):
    """A container this runner cannot start as specified; the message names the field."""


@dataclass(frozen=True)
class Mount:
    """A container path and the local directory standing for it."""

    path: str
    local: Path
    read_only: bool = False


@dataclass(frozen=True)
class Launch:
    """Everything needed to start one container's process."""

    container: str
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: Path | None
    mounts: tuple[Mount, ...] = ()

    def local_path(self, container_path: str) -> Path | None:
        """The local directory for a path inside the container, if a mount covers it."""
        translated = translate_path(container_path, self.mounts)
        return Path(translated) if translated != container_path else None


@dataclass(frozen=True)
class ContainerStatus:
    """What the API currently says about one container."""

    name: str
    state: str  # waiting | running | terminated
    exit_code: int | None = None
    started_at: str = ""
    finished_at: str = ""
    reason: str = ""


@dataclass(frozen=True)
class PodInfo:
    """The fields of a pod the runner acts on, read once from its JSON."""

    uid: str
    namespace: str
    name: str
    node: str
    phase: str
    hostname: str
    restart_policy: str
    run_locally: bool
    deleting: bool
    grace_seconds: int
    annotations: dict[str, str]
    containers: tuple[dict[str, Any], ...]
    init_containers: tuple[dict[str, Any], ...]
    statuses: dict[str, ContainerStatus] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def container_names(self) -> tuple[str, ...]:
        return tuple(str(c.get("name", "")) for c in self.containers)

    @classmethod
    def from_json(cls, pod: Mapping[str, Any]) -> PodInfo:
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        status = pod.get("status") or {}
        annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
        statuses = {}
        for cs in status.get("containerStatuses") or []:
            parsed = _container_status(cs)
            statuses[parsed.name] = parsed
        name = str(meta.get("name", ""))
        hostname = str(spec.get("hostname") or name)
        return cls(
            uid=str(meta.get("uid", "")),
            namespace=str(meta.get("namespace", "")),
            name=name,
            node=str(spec.get("nodeName") or ""),
            phase=str(status.get("phase") or ""),
            hostname=hostname,
            restart_policy=str(spec.get("restartPolicy") or "Always"),
            run_locally=annotations.get(LOCAL_RUN_ANNOTATION, "").lower() == "true",
            deleting=bool(meta.get("deletionTimestamp")),
            grace_seconds=max(0, int(grace)),
            annotations=annotations,
            containers=tuple(spec.get("containers") or ()),
            init_containers=tuple(spec.get("initContainers") or ()),
            statuses=statuses,
            raw=dict(pod),
        )

    def restarts(self, exit_code: int) -> bool:
        """Whether the kubelet would start this container again after it exited with `exit_code`."""
        if self.restart_policy == "Always":
            return True
        return self.restart_policy == "OnFailure" and exit_code != 0


def _container_status(cs: Mapping[str, Any]) -> ContainerStatus:
    state = cs.get("state") or {}
    name = str(cs.get("name", ""))
    if state.get("terminated"):
        t = state["terminated"]
        return ContainerStatus(
            name,
            "terminated",
            exit_code=int(t.get("exitCode", 0)),
            started_at=str(t.get("startedAt") or ""),
            finished_at=str(t.get("finishedAt") or ""),
            reason=str(t.get("reason") or ""),
        )
    if state.get("running"):
        return ContainerStatus(name, "running", started_at=str(state["running"].get("startedAt") or ""))
    return ContainerStatus(name, "waiting", reason=str((state.get("waiting") or {}).get("reason") or ""))


def is_kwok_node(node: Mapping[str, Any]) -> bool:
    return KWOK_NODE_ANNOTATION in ((node.get("metadata") or {}).get("annotations") or {})


# ---- completion annotation ---------------------------------------------------------------------


def parse_exits(value: str) -> dict[str, int]:
    """COMPLETE_ANNOTATION's value as {container: exit code}; `name` alone means exit code 0."""
    out: dict[str, int] = {}
    for entry in value.split(","):
        entry = entry.strip()
        if not entry:
            continue
        name, sep, code = entry.partition("=")
        try:
            out[name.strip()] = int(code) if sep else 0
        except ValueError as exc:
            raise ValueError(f"{COMPLETE_ANNOTATION}: bad exit code in {entry!r}") from exc
    return out


def format_exits(exits: Mapping[str, int]) -> str:
    """The inverse of parse_exits; exit code 0 is written as the bare name (what tests and kwok expect)."""
    return ",".join(name if code == 0 else f"{name}={code}" for name, code in exits.items())


def with_exit(value: str, container: str, code: int) -> str:
    """COMPLETE_ANNOTATION's value with `container` recorded as exited with `code` (first report wins)."""
    exits = parse_exits(value)
    exits.setdefault(container, code)
    return format_exits(exits)


# ---- environment and command -------------------------------------------------------------------

_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: defined references are replaced, `$$` yields `$`, others stay."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _REF.sub(sub, text)


# A resolver answers ConfigMap/Secret lookups: (kind, namespace, name) -> data, or None when absent.
Resolver = Callable[[str, str, str], Mapping[str, str] | None]


def _no_resolver(_kind: str, _namespace: str, _name: str) -> Mapping[str, str] | None:
    return None


_FIELD_LABEL = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")


def _field_ref(pod: PodInfo, path: str, var: str) -> str:
    raw = pod.raw
    meta = raw.get("metadata") or {}
    simple = {
        "metadata.name": pod.name,
        "metadata.namespace": pod.namespace,
        "metadata.uid": pod.uid,
        "spec.nodeName": pod.node,
        "spec.serviceAccountName": str((raw.get("spec") or {}).get("serviceAccountName") or ""),
        "status.hostIP": str((raw.get("status") or {}).get("hostIP") or ""),
        "status.podIP": str((raw.get("status") or {}).get("podIP") or ""),
    }
    if path in simple:
        return simple[path]
    m = _FIELD_LABEL.match(path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    raise SpecError(f"env {var}: fieldRef {path!r} is not supported by the local runner")


def _resource_ref(container: Mapping[str, Any], ref: Mapping[str, Any], var: str) -> str:
    resource = str(ref.get("resource", ""))
    kind, _, name = resource.partition(".")
    if kind not in ("requests", "limits") or name not in ("cpu", "memory", "ephemeral-storage"):
        raise SpecError(f"env {var}: resourceFieldRef {resource!r} is not supported by the local runner")
    resources = container.get("resources") or {}
    value = (resources.get(kind) or {}).get(name)
    if value is None and kind == "requests":
        value = (resources.get("limits") or {}).get(name)  # the API defaults requests to limits
    if value is None:
        raise SpecError(f"env {var}: {resource} is not set (node allocatable is not known here)")
    divisor = parse_quantity(ref.get("divisor") or "1")
    if divisor <= 0:
        raise SpecError(f"env {var}: resourceFieldRef divisor must be > 0")
    # The kubelet rounds up: 500m of cpu with divisor 1 is "1".
    quotient = parse_quantity(value) / divisor
    return str(int(-(-quotient // 1)))


def _lookup(resolve: Resolver, pod: PodInfo, kind: str, ref: Mapping[str, Any], var: str) -> str | None:
    name = str(ref.get("name", ""))
    key = str(ref.get("key", ""))
    data = resolve(kind, pod.namespace, name)
    if data is None or key not in data:
        if ref.get("optional"):
            return None
        raise SpecError(f"env {var}: {kind} {pod.namespace}/{name} has no key {key!r}")
    return str(data[key])


def container_env(
    pod: PodInfo,
    container: Mapping[str, Any],
    base: Mapping[str, str],
    resolve: Resolver = _no_resolver,
) -> dict[str, str]:
    """The container's environment in the order the kubelet builds it; later entries see earlier ones."""
    env: dict[str, str] = {k: v for k, v in base.items() if k in INHERITED_ENV}
    env["HOSTNAME"] = pod.hostname
    for source in container.get("envFrom") or []:
        prefix = str(source.get("prefix") or "")
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            ref = source.get(key)
            if not ref:
                continue
            data = resolve(kind, pod.namespace, str(ref.get("name", "")))
            if data is None:
                if ref.get("optional"):
                    continue
                raise SpecError(f"envFrom: {kind} {pod.namespace}/{ref.get('name')} not found")
            for k, v in data.items():
                env[prefix + k] = str(v)
    for item in container.get("env") or []:
        var = str(item.get("name", ""))
        if not var:
            raise SpecError("env: an entry has no name")
        if "valueFrom" not in item:
            env[var] = expand(str(item.get("value", "")), env)
            continue
        src = item["valueFrom"] or {}
        value: str | None
        if "fieldRef" in src:
            value = _field_ref(pod, str(src["fieldRef"].get("fieldPath", "")), var)
        elif "resourceFieldRef" in src:
            value = _resource_ref(container, src["resourceFieldRef"], var)
        elif "configMapKeyRef" in src:
            value = _lookup(resolve, pod, "ConfigMap", src["configMapKeyRef"], var)
        elif "secretKeyRef" in src:
            value = _lookup(resolve, pod, "Secret", src["secretKeyRef"], var)
        else:
            raise SpecError(f"env {var}: valueFrom {sorted(src)} is not supported by the local runner")
        if value is not None:
            env[var] = value
    return env


# ---- volumes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VolumeSource:
    """A pod volume as the runner sees it: a claim to resolve, a scratch directory, or unmapped."""

    name: str
    kind: str  # "pvc" | "emptyDir" | other volume type, unmapped
    claim: str = ""
    read_only: bool = False


def volume_sources(pod: PodInfo) -> dict[str, VolumeSource]:
    out: dict[str, VolumeSource] = {}
    for vol in (pod.raw.get("spec") or {}).get("volumes") or []:
        name = str(vol.get("name", ""))
        if "persistentVolumeClaim" in vol:
            pvc = vol["persistentVolumeClaim"] or {}
            out[name] = VolumeSource(name, "pvc", str(pvc.get("claimName", "")), bool(pvc.get("readOnly", False)))
        elif "emptyDir" in vol:
            out[name] = VolumeSource(name, "emptyDir")
        else:
            kind = next((k for k in vol if k != "name"), "unknown")
            out[name] = VolumeSource(name, kind)
    return out


def pv_local_path(pv: Mapping[str, Any]) -> str | None:
    """The directory behind a hostPath or local PV; None for any other kind of volume."""
    spec = pv.get("spec") or {}
    for kind in ("hostPath", "local"):
        if spec.get(kind) and spec[kind].get("path"):
            return str(spec[kind]["path"])
    return None


def mounts_for(container: Mapping[str, Any], volume_dirs: Mapping[str, Path]) -> tuple[Mount, ...]:
    """The container's mounts whose volume has a local directory (subPath applied), longest path first."""
    mounts = []
    for vm in container.get("volumeMounts") or []:
        local = volume_dirs.get(str(vm.get("name", "")))
        if local is None:
            continue
        sub = str(vm.get("subPath") or "")
        if sub:
            if PurePosixPath(sub).is_absolute() or ".." in PurePosixPath(sub).parts:
                raise SpecError(f"volumeMounts {vm.get('name')}: subPath {sub!r} must be relative, without '..'")
            local = local / sub
        path = str(PurePosixPath(str(vm.get("mountPath", ""))))
        if not path.startswith("/"):
            raise SpecError(f"volumeMounts {vm.get('name')}: mountPath {path!r} must be absolute")
        mounts.append(Mount(path, local, bool(vm.get("readOnly", False))))
    return tuple(sorted(mounts, key=lambda m: len(m.path), reverse=True))


def translate_path(value: str, mounts: tuple[Mount, ...]) -> str:
    """`value` with a leading container mount path replaced by its local directory (longest mount wins)."""
    for m in mounts:
        if m.path == "/":
            continue  # a volume over the whole root would rewrite every absolute path
        if value == m.path or value.startswith(m.path + "/"):
            return str(m.local) + value[len(m.path) :]
    return value


def launch_for(
    pod: PodInfo,
    container: Mapping[str, Any],
    volume_dirs: Mapping[str, Path],
    base_env: Mapping[str, str],
    python: str,
    resolve: Resolver = _no_resolver,
) -> Launch:
    """How to run `container` of `pod` as a local process; SpecError when it cannot be."""
    name = str(container.get("name", ""))
    command = [str(c) for c in container.get("command") or []]
    args = [str(a) for a in container.get("args") or []]
    if not command:
        raise SpecError(
            f"container {name}: no command; the local runner does not read the image's entrypoint, "
            "so the pod must name the program it runs"
        )
    mounts = mounts_for(container, volume_dirs)
    env = container_env(pod, container, base_env, resolve)
    env = {k: translate_path(v, mounts) for k, v in env.items()}
    argv = [translate_path(expand(part, env), mounts) for part in command + args]
    if argv[0] in PYTHON_NAMES:
        argv[0] = python
    workdir = str(container.get("workingDir") or "")
    cwd = Path(translate_path(workdir, mounts)) if workdir and translate_path(workdir, mounts) != workdir else None
    return Launch(name, tuple(argv), env, cwd, mounts)
