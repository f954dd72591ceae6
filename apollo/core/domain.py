"""Plain values the decision core reads: nodes, their forecasts and insights, pods, workloads.

Why a separate vocabulary instead of the protobuf messages: the core must stay pure (no I/O, no generated
code), be testable with three-line fixtures, and outlive wire changes. The adapters translate in both
directions. Enum-like strings (I/O pattern, storage class, ...) use the seed's wire names verbatim
(``"IO_PATTERN_READ_HEAVY"``) so the translation is ``Enum.Name(value)`` and nothing can drift. What the
policy emits (actions, targets, decisions) is in :mod:`apollo.core.decisions`.

Units: utilisation forecasts are fractions of node capacity (0..1, NaN when unknown), CPU in cores,
memory and storage in bytes, throughput in MB/s, times in seconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from common.settings import in_range, int_range, non_negative, positive

FloatArray = npt.NDArray[np.float64]

# The resources APOLLO forecasts per node (one PromQL query each); the settings and the core share it.
RESOURCES = ("cpu", "memory", "disk_io", "network", "gpu")

# Scores are 0-100 (SchedulingPolicy.node_preferences); a node APOLLO knows nothing fresh about gets the
# middle, so that an advisor without data neither attracts nor repels pods.
MAX_SCORE = 100
NEUTRAL_SCORE = 50

# I/O patterns whose throughput depends on the device: they want local fast storage.
IO_HEAVY_PATTERNS = frozenset(
    {"IO_PATTERN_READ_HEAVY", "IO_PATTERN_WRITE_HEAVY", "IO_PATTERN_RANDOM", "IO_PATTERN_BURSTY"}
)
# Storage recommendations that ask for more than the cluster's default class.
FAST_STORAGE_CLASSES = frozenset({"STORAGE_CLASS_FAST", "STORAGE_CLASS_ULTRA_FAST", "STORAGE_CLASS_CSD"})
FAST_DEVICE_TYPES = frozenset({"nvme", "ssd"})
# Controllers that can re-create an evicted pod elsewhere; a DaemonSet pod is bound to its node.
SCALABLE_KINDS = frozenset({"Deployment", "StatefulSet"})
UNMOVABLE_KINDS = frozenset({"DaemonSet", "Node"})


def _as_series(name: str, value: npt.ArrayLike) -> FloatArray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D horizon series, got shape {arr.shape}")
    return arr


_non_negative = non_negative()
_count = int_range(0, 2**31)


@dataclass(frozen=True, slots=True)
class NodeCapacity:
    """Allocatable resources; zero means unknown (the core then falls back to neutral terms)."""

    cpu_cores: float
    memory_bytes: float
    gpus: int = 0

    def __post_init__(self) -> None:
        _non_negative("cpu_cores", self.cpu_cores)
        _non_negative("memory_bytes", self.memory_bytes)
        _count("gpus", self.gpus)


@dataclass(frozen=True)
class NodeOutlook:
    """One node's forecast over the engine's horizon, with what is already requested on it.

    ``mean``/``upper``/``lower`` map a resource in :data:`RESOURCES` to a 1-D series of utilisation
    fractions, one value per horizon step of ``step_seconds``; absent resources and NaN steps are unknown.
    ``requested_*`` sum the requests of pods already bound to the node: the fallback when the forecast
    is missing. ``anomaly_score`` is a non-negative severity (the forecaster's robust |z|).
    ``stale`` means the forecast is older than the engine trusts: the core then fails open.
    """

    node: str
    capacity: NodeCapacity
    mean: Mapping[str, FloatArray] = field(default_factory=dict)
    upper: Mapping[str, FloatArray] = field(default_factory=dict)
    lower: Mapping[str, FloatArray] = field(default_factory=dict)
    requested_cpu_cores: float = 0.0
    requested_memory_bytes: float = 0.0
    requested_gpus: int = 0
    anomaly: bool = False
    anomaly_score: float = 0.0
    labels: Mapping[str, str] = field(default_factory=dict)
    stale: bool = False
    step_seconds: float = 30.0

    def __post_init__(self) -> None:
        for attr in ("mean", "upper", "lower"):
            series = getattr(self, attr)
            unknown = set(series) - set(RESOURCES)
            if unknown:
                raise ValueError(f"{attr} has unknown resources {sorted(unknown)}; known: {RESOURCES}")
            object.__setattr__(self, attr, {r: _as_series(f"{attr}[{r}]", v) for r, v in series.items()})
        _non_negative("requested_cpu_cores", self.requested_cpu_cores)
        _non_negative("requested_memory_bytes", self.requested_memory_bytes)
        positive()("step_seconds", self.step_seconds)

    @property
    def horizon(self) -> int:
        """Longest series length (steps); 0 when the node has no forecast at all."""
        return max((len(v) for v in self.upper.values()), default=0)


@dataclass(frozen=True, slots=True)
class StorageDevice:
    """A local storage device as an insight agent reports it (``StorageDeviceStatus``)."""

    name: str
    device_type: str
    total_bytes: int = 0
    available_bytes: int = 0
    max_iops: int = 0
    max_throughput_mbps: float = 0.0

    @property
    def fast(self) -> bool:
        return self.device_type.strip().lower() in FAST_DEVICE_TYPES


@dataclass(frozen=True)
class NodeInsight:
    """What a node's insight agent knows beyond metrics (from ``ClusterInsight``).

    Counts are what is free now; an absent insight means "unknown", never "none". ``allocatable`` is the
    node's capacity as the agent reports it (None when it sent none): Kubernetes' figure wins where known.
    """

    node: str
    allocatable: NodeCapacity | None = None
    gpus_available: int = 0
    gpus_total: int = 0
    csd_available: int = 0
    storage: tuple[StorageDevice, ...] = ()
    network_bandwidth_mbps: float = 0.0

    @property
    def fast_storage_free_bytes(self) -> int:
        return sum(d.available_bytes for d in self.storage if d.fast)

    @property
    def has_fast_storage(self) -> bool:
        return self.fast_storage_free_bytes > 0


@dataclass(frozen=True)
class PodSignature:
    """The insight sidecar's view of a workload (``WorkloadSignature``), reduced to what decisions use.

    Enum fields hold the seed's value names. ``storage_class``/``storage_*`` come from its
    ``StorageRecommendation`` (size already parsed to bytes; 0 = no recommendation). Usage fields are
    current consumption (NaN = unknown); when known they estimate the pod's load better than requests.
    ``locality_score`` (0..1) says how much data locality matters for this pod; 0 = unspecified.
    """

    workload_type: str = "WORKLOAD_TYPE_UNKNOWN"
    pipeline_stage: str = "PIPELINE_STAGE_UNKNOWN"
    io_pattern: str = "IO_PATTERN_UNKNOWN"
    is_gpu_workload: bool = False
    storage_class: str = "STORAGE_CLASS_UNSPECIFIED"
    storage_size_bytes: int = 0
    storage_iops: int = 0
    storage_throughput_mbps: int = 0
    storage_pvc_name: str = ""
    data_nodes: tuple[str, ...] = ()
    cache_nodes: tuple[str, ...] = ()
    primary_node: str = ""
    locality_score: float = 0.0
    cpu_usage_cores: float = math.nan
    memory_usage_bytes: float = math.nan

    @property
    def io_heavy(self) -> bool:
        return self.io_pattern in IO_HEAVY_PATTERNS

    @property
    def wants_csd(self) -> bool:
        return self.storage_class == "STORAGE_CLASS_CSD"

    @property
    def has_locality(self) -> bool:
        return bool(self.primary_node or self.data_nodes or self.cache_nodes)


@dataclass(frozen=True)
class PodDemand:
    """A pod to be placed. ``horizon_steps`` = how far ahead its placement matters (0 = whole horizon)."""

    namespace: str
    name: str
    cpu_cores: float
    memory_bytes: float
    gpus: int = 0
    horizon_steps: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    signature: PodSignature | None = None

    def __post_init__(self) -> None:
        _non_negative("cpu_cores", self.cpu_cores)
        _non_negative("memory_bytes", self.memory_bytes)
        _count("gpus", self.gpus)
        _count("horizon_steps", self.horizon_steps)

    @property
    def needs_gpu(self) -> bool:
        return self.gpus > 0 or (self.signature is not None and self.signature.is_gpu_workload)

    @property
    def estimated_cpu_cores(self) -> float:
        """Current usage when the signature knows it (a pod moving with its load), else the request."""
        usage = self.signature.cpu_usage_cores if self.signature else math.nan
        return usage if math.isfinite(usage) else self.cpu_cores

    @property
    def estimated_memory_bytes(self) -> float:
        usage = self.signature.memory_usage_bytes if self.signature else math.nan
        return usage if math.isfinite(usage) else self.memory_bytes


@dataclass(frozen=True)
class RunningPod:
    """A pod already on a node: a migration candidate and a provisioning subject.

    ``owner_kind``/``owner_name`` name the top controller (Deployment, not its ReplicaSet); empty for a
    bare pod. ``completed_fraction`` is the share of containers that exited 0 (they are not re-run, so a
    pod far along is cheaper to move). ``checkpointed`` = carries the checkpoint opt-in label.
    ``pvc_names`` are the claims it mounts (an existing claim is never provisioned again).
    """

    namespace: str
    name: str
    node: str
    owner_kind: str = ""
    owner_name: str = ""
    cpu_request_cores: float = 0.0
    memory_request_bytes: float = 0.0
    cpu_usage_cores: float = math.nan
    memory_usage_bytes: float = math.nan
    gpus: int = 0
    checkpointed: bool = False
    priority: int = 0
    restarts: int = 0
    completed_fraction: float = 0.0
    is_migrating: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    pvc_names: tuple[str, ...] = ()
    signature: PodSignature | None = None

    def __post_init__(self) -> None:
        in_range(0.0, 1.0)("completed_fraction", self.completed_fraction)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def workload_key(self) -> str:
        """What caps and cooldowns count against: the controller, or the pod itself when bare."""
        if self.owner_name:
            return f"{self.namespace}/{self.owner_kind}/{self.owner_name}"
        return f"{self.namespace}/Pod/{self.name}"

    @property
    def cpu_load_cores(self) -> float:
        """What leaves the node if the pod moves: measured usage when known, else the request."""
        return self.cpu_usage_cores if math.isfinite(self.cpu_usage_cores) else self.cpu_request_cores

    @property
    def memory_load_bytes(self) -> float:
        return self.memory_usage_bytes if math.isfinite(self.memory_usage_bytes) else self.memory_request_bytes

    def as_demand(self, horizon_steps: int = 0) -> PodDemand:
        """The same pod seen as something to place (for choosing a migration target)."""
        signature = replace(
            self.signature or PodSignature(),
            cpu_usage_cores=self.cpu_load_cores,
            memory_usage_bytes=self.memory_load_bytes,
        )
        return PodDemand(
            self.namespace,
            self.name,
            self.cpu_request_cores,
            self.memory_request_bytes,
            self.gpus,
            horizon_steps,
            self.labels,
            signature=signature,
        )


@dataclass(frozen=True, slots=True)
class PlacementCounter:
    """Pods bound to a node since its last metric sample, with their summed requests (the "hot value").

    The forecast cannot see them yet; without counting them a burst would pile onto one idle node.
    """

    node: str
    pods: int = 0
    cpu_cores: float = 0.0
    memory_bytes: float = 0.0
    gpus: int = 0


@dataclass(frozen=True)
class WorkloadOutlook:
    """A Deployment/StatefulSet and the forecast of its pods' summed usage, for scale advice.

    ``cpu_mean``/``cpu_upper`` are total cores used by all replicas per horizon step, ``memory_*`` total
    bytes; requests are per replica. ``max_replicas`` 0 = the policy's default bound.
    ``has_autoscaler`` = an HPA already owns the replica count (advice would fight it).
    """

    namespace: str
    kind: str
    name: str
    replicas: int
    cpu_request_cores: float
    memory_request_bytes: float
    cpu_mean: FloatArray
    cpu_upper: FloatArray
    memory_mean: FloatArray
    memory_upper: FloatArray
    min_replicas: int = 1
    max_replicas: int = 0
    has_autoscaler: bool = False

    def __post_init__(self) -> None:
        for attr in ("cpu_mean", "cpu_upper", "memory_mean", "memory_upper"):
            object.__setattr__(self, attr, _as_series(attr, getattr(self, attr)))
        for attr in ("replicas", "min_replicas", "max_replicas"):
            _count(attr, getattr(self, attr))

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.kind}/{self.name}"


@dataclass(frozen=True)
class ScoreResult:
    """One node's fitness for one pod. ``factors`` holds each term in 0..1 plus the predicted peaks."""

    node: str
    score: int
    reason: str
    feasible: bool
    overload_predicted: bool
    factors: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterView:
    """What the API server says this tick: allocatable per node, node labels, the pods bound to nodes."""

    nodes: Mapping[str, NodeCapacity] = field(default_factory=dict)
    node_labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    pods: tuple[RunningPod, ...] = ()
