"""The weights of the per-pod score's terms: part of APOLLO's settings tree (``scoring``)."""

from __future__ import annotations

from dataclasses import dataclass

from apollo.core.domain import MAX_SCORE
from common.settings import check_fields, in_range, non_negative, positive, setting


@dataclass(frozen=True)
class ScoringWeights:
    """Relative weights of the score's terms; only the terms that apply to a pod are averaged.

    Headroom dominates by default because a wrong guess there costs an overload (and a migration),
    while a missed locality or storage preference only costs speed.
    """

    headroom: float = setting(
        1.0,
        "Predicted headroom over the pod's horizon: the score's anchor (must be > 0), because a wrong guess "
        "here costs an overload and then a migration.",
        positive(),
    )
    gpu: float = setting(
        0.3,
        "Free GPUs and a quiet GPU forecast, for GPU workloads only. Below headroom: a busy GPU slows a job, "
        "an overloaded node stops it.",
        non_negative(),
    )
    csd: float = setting(
        0.15,
        "A free computational storage device, for pods whose signature recommends one: a speed-up, not a need.",
        non_negative(),
    )
    storage: float = setting(
        0.25,
        "Free fast local storage and a quiet disk, for I/O-heavy pods: their throughput depends on the device.",
        non_negative(),
    )
    locality: float = setting(
        0.35,
        "Holding the pod's data (primary copy 1, replica 0.8, cache 0.6), scaled by the signature's "
        "locality score: reading locally saves a network copy but never outweighs headroom.",
        non_negative(),
    )
    anomaly_penalty: float = setting(
        20.0,
        "Score points taken from a node whose latest sample is an anomaly (half at the anomaly threshold, all "
        "at anomaly_z_full): a node behaving unlike its own history is a poor bet for new work even when its "
        "forecast looks fine. At most 100.",
        in_range(0.0, float(MAX_SCORE)),
    )
    anomaly_z_full: float = setting(
        8.0,
        "Robust |z| at which the anomaly penalty is whole; between the anomaly threshold (5) and this it grows "
        "linearly from half.",
        positive(),
    )

    def __post_init__(self) -> None:
        check_fields(self)
