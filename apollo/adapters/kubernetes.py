"""What APOLLO reads from Kubernetes: node capacity and the pods bound to nodes, followed by watches.

`KubeReader` is the engine's `ClusterReader`: two list-then-watch loops (`common.watch.ListWatch`, raw
JSON through orjson, no client model objects), one over nodes and one over bound pods, feed a
`ClusterCache` that converts each object once per event (`apollo.adapters.kube_objects`). A tick then
reads the cache, which costs nothing while nothing changed: listing 10,000 nodes and 40,000 pods every
30 s through the client's models took tens of seconds per tick and gave the engine a new view each time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from apollo.adapters.cluster_cache import ClusterCache
from apollo.core.domain import PodSignature
from apollo.runtime.reports import TTLMap
from apollo.runtime.sources import ClusterRead
from common.kube import api_client
from common.watch import ListWatch

BOUND_PODS = "spec.nodeName!="


class _Feed(ListWatch):
    """One collection's list-then-watch handing listings and events to the cache."""

    def __init__(
        self,
        name: str,
        list_call: Callable[..., Any],
        on_list: Callable[[list[dict[str, Any]]], None],
        on_event: Callable[[str, dict[str, Any]], None],
        **options: Any,
    ) -> None:
        super().__init__(name, list_call, **options)
        self._on_list = on_list
        self._on_event = on_event

    def on_list(self, items: list[dict[str, Any]]) -> None:
        self._on_list(items)

    def on_event(self, event_type: str, obj: dict[str, Any]) -> None:
        self._on_event(event_type, obj)


class KubeReader:
    """The engine's `ClusterReader`: nodes and bound pods followed by list-then-watch into a cache.

    `read()` answers None until both first listings have arrived (the engine then holds its decisions
    and says "kubernetes not synced"), then the cache's view: the same object until a watch event or an
    insight agent's signature changes something. A watch that fails or expires lists again (ListWatch);
    the cache keeps answering the last state meanwhile. `stop()` returns at once (the watch threads end
    at their next event or bookmark; they are daemons).
    """

    def __init__(
        self,
        core_v1: Any,
        signatures: TTLMap[tuple[str, str], PodSignature],
        *,
        relist_backoff_seconds: float = 2.0,
        watch_timeout_seconds: int = 300,
        request_timeout_seconds: float = 60.0,
    ) -> None:
        self.cache = ClusterCache(signatures)
        options: dict[str, Any] = {
            "relist_backoff_seconds": relist_backoff_seconds,
            "watch_timeout_seconds": watch_timeout_seconds,
            "request_timeout_seconds": request_timeout_seconds,  # a 40,000-pod listing is a big answer
        }
        self.watches = (
            _Feed("kube-nodes", core_v1.list_node, self.cache.replace_nodes, self.cache.apply_node, **options),
            _Feed(
                "kube-pods",
                core_v1.list_pod_for_all_namespaces,
                self.cache.replace_pods,
                self.cache.apply_pod,
                list_kwargs={"field_selector": BOUND_PODS},
                **options,
            ),
        )

    @classmethod
    def connect(cls, kubeconfig: str, signatures: TTLMap[tuple[str, str], PodSignature]) -> KubeReader:
        """From a kubeconfig path, else the pod's service account (the shell's one way to a client)."""
        from kubernetes import client

        return cls(client.CoreV1Api(api_client(kubeconfig)), signatures)

    def start(self) -> KubeReader:
        for watch in self.watches:
            watch.start()
        return self

    def stop(self) -> None:
        for watch in self.watches:
            watch.stop(timeout=0)

    @property
    def synced(self) -> bool:
        return self.cache.synced

    def read(self) -> ClusterRead | None:
        return self.cache.read()
