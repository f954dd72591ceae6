"""Storage provisioning advice: a fast claim for I/O-heavy pods on nodes without free fast storage.

One piece of advice per claim, ever: a claim the pod already mounts, one provisioned before, one in flight
or one advised this tick is never advised again; a failed one is retried after a cool-down. The claim is
named by the rule the whole stack shares (`apollo_api.podmigration.checkpoint_claim_name`), so the webhook,
the orchestrator and APOLLO always mean the same claim.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from apollo.core.decisions import Action, PolicyDecision, PolicyOutput, Priority, ProvisioningTarget, Skip
from apollo.core.domain import FAST_STORAGE_CLASSES, NodeInsight, RunningPod
from apollo.core.policy.ledger import InFlight
from apollo.core.policy.planner import PolicyContext, PolicyInput
from apollo_api.podmigration import checkpoint_claim_name


def pvc_name_for(pod: RunningPod) -> str:
    """The pod's checkpoint claim: ``<workload-or-pod>-ckpt``, as the webhook and the orchestrator name it."""
    return checkpoint_claim_name(pod.name, pod.owner_kind, pod.owner_name)


class ProvisionPlanner:
    """PROVISION advice; remembers the claims it saw provisioned."""

    actions = frozenset({Action.PROVISION})

    def __init__(self, ctx: PolicyContext) -> None:
        self.ctx = ctx
        self.provisioned: set[str] = set()
        self._wanting: tuple[Sequence[RunningPod], list[RunningPod]] | None = None

    def plan(self, tick: PolicyInput) -> PolicyOutput:
        decisions: list[PolicyDecision] = []
        skipped: list[Skip] = []
        seen: set[str] = set()
        for pod in self._io_heavy(tick.pods):
            decision, why = self._provision(pod, tick.insights, tick.now, seen)
            if decision is not None:
                decisions.append(decision)
            elif why:
                skipped.append(Skip(Action.PROVISION, pod.key, why))
        return PolicyOutput(tuple(decisions), tuple(skipped))

    def _io_heavy(self, pods: Sequence[RunningPod]) -> list[RunningPod]:
        """The I/O-heavy pods (only they can need storage) in key order, kept while the pod list is the same
        object: a tick without pod changes does not walk tens of thousands of pods again."""
        cached = self._wanting
        if cached is None or cached[0] is not pods:
            wanting = [p for p in pods if p.signature is not None and p.signature.io_heavy]
            cached = self._wanting = (pods, sorted(wanting, key=lambda p: p.key))
        return cached[1]

    def finish(self, entry: InFlight, success: bool, now: float) -> None:
        if success:
            self.provisioned.add(entry.subject)
        else:
            self.ctx.ledger.cool(f"provision:{entry.subject}", now + self.ctx.settings.provision_cooldown_seconds)

    def _provision(
        self, pod: RunningPod, insights: Mapping[str, NodeInsight], now: float, seen: set[str]
    ) -> tuple[PolicyDecision | None, str]:
        st, sig = self.ctx.settings, pod.signature
        if sig is None or not sig.io_heavy:
            return None, ""
        insight = insights.get(pod.node)
        lacks_fast = insight is not None and not insight.has_fast_storage
        if not (lacks_fast or sig.storage_class in FAST_STORAGE_CLASSES):
            return None, ""
        pvc = sig.storage_pvc_name or pvc_name_for(pod)
        key = f"{pod.namespace}/{pvc}"
        why = self._exclusion(pod, pvc, key, now, seen)
        seen.add(key)
        if why:
            return None, why
        tier = sig.storage_class if sig.storage_class in FAST_STORAGE_CLASSES else "STORAGE_CLASS_FAST"
        target = ProvisioningTarget(
            pvc, pod.namespace, tier,
            sig.storage_size_bytes or st.provision_default_size_bytes,
            sig.storage_iops or st.provision_default_iops,
            sig.storage_throughput_mbps or st.provision_default_throughput_mbps,
        )  # fmt: skip
        cause = (
            f"node {pod.node} has no free fast storage" if lacks_fast else f"signature recommends {sig.storage_class}"
        )
        decision = PolicyDecision(
            request_id=self.ctx.request_id(Action.PROVISION, f"{key}|{tier}|{target.size_bytes}", now),
            action=Action.PROVISION,
            created_at=now,
            dry_run=st.dry_run,
            priority=Priority.MEDIUM,
            reason=f"provision {key} ({tier}) for {pod.key}: {sig.io_pattern}, {cause}",
            contributing_factors=(sig.io_pattern, cause),
            deadline_seconds=st.action_deadline_seconds,
            provisioning=target,
        )
        return self.ctx.issue(decision, key, now, pod.workload_key), ""

    def _exclusion(self, pod: RunningPod, pvc: str, key: str, now: float, seen: set[str]) -> str:
        if pvc in pod.pvc_names or key in self.provisioned:
            return f"{key} already exists"
        if key in seen or self.ctx.ledger.busy(key):
            return f"{key} already requested"
        left = self.ctx.ledger.cooling(f"provision:{key}", now)
        return f"{key} cooling down for {left:.0f}s after a failure" if left > 0 else ""
