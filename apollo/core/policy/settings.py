"""Every threshold and cap of the orchestration policy: one declaration each, embedded whole in APOLLO's
settings tree (``policy``), so the file, the ``APOLLO_POLICY__*`` variables, validation and the generated
reference page all come from here. The pure planners read the same object."""

from __future__ import annotations

from dataclasses import dataclass

from apollo_api.podmigration import DEFAULT_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS, MIN_TIMEOUT_SECONDS
from common.settings import Check, ConfigError, boolean, check_fields, in_range, int_range, setting

GiB = 2**30
_DAY = 86_400.0
_MANY = 1_000_000


def _seconds(upper: float = _DAY) -> Check:
    """A duration: from 0 (none) up to a day, beyond which a cool-down is a misconfiguration."""
    return in_range(0.0, upper)


@dataclass(frozen=True)
class PolicySettings:
    """Thresholds, caps, cool-downs and defaults of the migrate, scale and provision planners.

    Every decision costs something real (a checkpoint/restore cycle, replicas, a volume), so the defaults
    make the policy slow to act and quick to stop; a bad forecast must not be able to move half the cluster.
    """

    # ---- what "overload coming" means (also the scores' feasibility line) ---------------------------
    overload_threshold: float = setting(
        0.85,
        "Utilisation fraction the upper (decision-quantile) forecast must stay above. 0.85, the value the "
        "service has always run with, rather than the 0.9 the library defaults once said: a move takes up to "
        "migration_timeout_seconds, and acting at 85% of the upper forecast leaves room for the pod's own "
        "use, the hot value and forecast error before the node saturates. The same line makes a node "
        "infeasible in per-pod scores and flags it in the extender's snapshot.",
        in_range(0.0, 1.0, lo_open=True),
    )
    consecutive_steps: int = setting(
        3,
        "Horizon steps in a row over the threshold (k) for a warning: one step over is a burst the interval "
        "already allows for. The tuning job may change k from realised overloads; at most the horizon.",
        int_range(1, 10_000),
    )
    confirm_ticks: int = setting(
        2,
        "Consecutive ticks a node must warn before it is confirmed: one tick's forecast can be one sample's "
        "noise, and a migration is never free.",
        int_range(1, 1000),
    )
    hysteresis_margin: float = setting(
        0.05,
        "A confirmed node is cleared only once its peak falls below threshold minus this, so a node hovering "
        "at the threshold does not flap; moves aim for that level too.",
        in_range(0.0, 1.0, hi_open=True),
    )
    # ---- migration caps -------------------------------------------------------------------------------
    max_migrations_per_node: int = setting(
        1,
        "Migrations in flight off one source node: one move usually relieves it, and the next tick sees the "
        "result before another is chosen.",
        int_range(0, 1000),
    )
    max_migrations_per_workload: int = setting(
        1,
        "Migrations in flight per workload (Deployment, StatefulSet, Job or bare pod): moving several replicas "
        "at once would cost the workload its redundancy.",
        int_range(0, 1000),
    )
    max_migrations_cluster: int = setting(
        5,
        "Migrations in flight cluster-wide: bounds the blast radius of a bad forecast. 0 observes only.",
        int_range(0, 10_000),
    )
    rate_limit: int = setting(
        10, "Migrations issued per rate window, in flight or not: a second bound on churn.", int_range(1, _MANY)
    )
    rate_window_seconds: float = setting(600.0, "The window of rate_limit.", in_range(0.0, _DAY, lo_open=True))
    workload_cooldown_seconds: float = setting(
        600.0,
        "After a successful move, the workload is left alone this long: its load needs time to show where it "
        "went before another move can be judged.",
        _seconds(),
    )
    failure_cooldown_seconds: float = setting(
        300.0,
        "After a failed or unanswered migration or scaling decision, wait this long before retrying the same "
        "workload: shorter than after success, because nothing moved.",
        _seconds(),
    )
    migration_timeout_seconds: int = setting(
        DEFAULT_TIMEOUT_SECONDS,
        "The migration's own deadline, handed to the orchestrator in the advice; within the PodMigration "
        f"bounds ({MIN_TIMEOUT_SECONDS}-{MAX_TIMEOUT_SECONDS} s). Also sets the urgency: an overload sooner than "
        "this is CRITICAL.",
        int_range(MIN_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS),
    )
    settle_seconds: float = setting(
        300.0,
        "How long a finished move still counts as relief on its source and load on its target: until the "
        "node metrics and the forecast have seen it (scrape, rate window, a few ticks).",
        _seconds(),
    )
    result_grace_seconds: float = setting(
        120.0,
        "Added to a decision's deadline before an unanswered decision is written off as failed, so a late "
        "ExecutionResult still counts, and a lost one never blocks the caps for good.",
        _seconds(),
    )
    require_checkpoint: bool = setting(
        False,
        "Move only pods that opted into checkpointing. Off: a pod that restarts from scratch can still be "
        "moved when nothing checkpointed would relieve the node (checkpointed pods are always preferred).",
        boolean(),
    )
    preserve_pv: bool = setting(
        True,
        "Migration advice asks the orchestrator to keep the pod's claims: the checkpoint lives on them.",
        boolean(),
    )
    dry_run: bool = setting(
        False,
        "Log decisions without publishing them (they still count against the caps, as they would live), to "
        "review what the policy would do before letting the orchestrator act.",
        boolean(),
    )
    decision_epoch_seconds: float = setting(
        600.0,
        "The bucket of time in which a repeated decision (or the same on-demand advice) keeps its request id, "
        "so the orchestrator can drop repeats after a restart or a reconnect.",
        in_range(0.0, _DAY, lo_open=True),
    )
    # ---- scaling advice -------------------------------------------------------------------------------
    scale_target_utilization: float = setting(
        0.7,
        "Mean use per replica the advice aims for, as a fraction of requests (the HPA's usual target).",
        in_range(0.0, 10.0, lo_open=True),
    )
    scale_upper_limit: float = setting(
        1.0,
        "The upper forecast must stay within this fraction of requests: beyond it replicas throttle or get "
        "evicted, whatever the mean says.",
        in_range(0.0, 10.0, lo_open=True),
    )
    scale_tolerance: float = setting(
        0.1,
        "Changes of the replica ratio within this are ignored, as the HPA does: advice must not flap.",
        in_range(0.0, 1.0, hi_open=True),
    )
    scale_max_step_up: int = setting(
        4,
        "Most replicas added by one piece of advice: a forecast error must not multiply a workload.",
        int_range(1, _MANY),
    )
    scale_max_step_down: int = setting(
        1, "Most replicas removed by one piece of advice: shrinking is where a wrong guess hurts.", int_range(1, _MANY)
    )
    scale_default_max_replicas: int = setting(100, "Upper bound when the workload names none.", int_range(1, _MANY))
    scale_down_confirm_ticks: int = setting(
        3, "Ticks a scale-down must persist before it is advised (scale-up needs none).", int_range(1, 1000)
    )
    scale_up_cooldown_seconds: float = setting(
        180.0, "Quiet time after a scale-up: new replicas need to start and be scraped.", _seconds()
    )
    scale_down_cooldown_seconds: float = setting(
        600.0, "Quiet time after a scale-down, longer: load redistributes slowly.", _seconds()
    )
    action_deadline_seconds: int = setting(
        300, "Deadline of scaling and provisioning advice before it is written off.", int_range(1, int(_DAY))
    )
    # ---- provisioning advice --------------------------------------------------------------------------
    provision_default_size_bytes: int = setting(
        10 * GiB, "Claim size when the signature recommends none.", int_range(1, 2**62)
    )
    provision_default_iops: int = setting(
        3000, "IOPS when the signature recommends none (a common SSD-class baseline).", int_range(0, _MANY)
    )
    provision_default_throughput_mbps: int = setting(
        125, "Throughput (MB/s) when the signature recommends none (a common SSD-class baseline).", int_range(0, _MANY)
    )
    provision_cooldown_seconds: float = setting(
        900.0, "After a failed provisioning, wait this long before advising the same claim again.", _seconds()
    )

    def __post_init__(self) -> None:
        check_fields(self)

    def check_relations(self) -> None:
        if self.hysteresis_margin >= self.overload_threshold:
            raise ConfigError(
                f"hysteresis_margin must be below overload_threshold ({self.overload_threshold:g}), "
                f"got {self.hysteresis_margin!r}"
            )
        if self.scale_target_utilization > self.scale_upper_limit:
            raise ConfigError(
                f"scale_target_utilization must not exceed scale_upper_limit ({self.scale_upper_limit:g}), "
                f"got {self.scale_target_utilization!r}"
            )

    @property
    def clear_level(self) -> float:
        """Upper-forecast peak under which an overload warning is cleared (and moves aim for)."""
        return self.overload_threshold - self.hysteresis_margin
