"""Orchestration policy: planners (migrate, scale, provision) behind one facade, sharing one ledger.

`PolicyEngine` (:mod:`~apollo.core.policy.facade`) is what the runtime drives; `PolicySettings`
(:mod:`~apollo.core.policy.settings`) is embedded whole in APOLLO's settings tree.
"""

from apollo.core.policy.facade import DEFAULT_PLANNERS, PolicyEngine
from apollo.core.policy.ledger import Ledger, request_id
from apollo.core.policy.planner import Planner, PolicyContext, PolicyInput
from apollo.core.policy.provision import pvc_name_for
from apollo.core.policy.settings import PolicySettings

__all__ = [
    "DEFAULT_PLANNERS",
    "Ledger",
    "Planner",
    "PolicyContext",
    "PolicyEngine",
    "PolicyInput",
    "PolicySettings",
    "pvc_name_for",
    "request_id",
]
