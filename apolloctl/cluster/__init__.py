"""A real Kubernetes control plane on 127.0.0.1, built from the Kubernetes Go modules.

`LocalCluster` is what tests (through the `cluster` fixture), the demo and `apolloctl cluster`
use. See README.md, "Local control plane".
"""

from apolloctl.cluster.configs import COMPLETE_ANNOTATION, ExtenderConfig, ScrapeTarget
from apolloctl.cluster.errors import ComponentError
from apolloctl.cluster.local import ClusterConfig, LocalCluster, probe_recorded, read_state, stop_recorded
from apolloctl.cluster.nodes import create_kwok_nodes, kwok_node, wait_nodes_ready

__all__ = [
    "COMPLETE_ANNOTATION",
    "ClusterConfig",
    "ComponentError",
    "ExtenderConfig",
    "LocalCluster",
    "ScrapeTarget",
    "create_kwok_nodes",
    "kwok_node",
    "probe_recorded",
    "read_state",
    "stop_recorded",
    "wait_nodes_ready",
]
