"""Every PodMigration the controller knows, from list+watch, with its own writes applied at once.

The cache is what admission counts (caps, duplicates, reservations), so it must see the controller's
own admissions before their watch events come back; it is also what maps a pod event to the
migrations it concerns. Kept apart from the controller's loops because it is plain, locked data with
its own ordering rule (a watch event older than what is held never steps the cache back).
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Iterable
from typing import Any

from apollo_api.podmigration import MIGRATION_ANNOTATION, Phase, PodMigration
from orchestrator import podinfo

Obj = dict[str, Any]


def key_of(obj: Obj | PodMigration) -> str:
    if isinstance(obj, PodMigration):
        return f"{obj.namespace}/{obj.name}"
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def _rv(obj: Obj) -> int:
    text = str((obj.get("metadata") or {}).get("resourceVersion", "") or "")
    return int(text) if text.isdigit() else -1


class MigrationCache:
    """Every PodMigration from list+watch, with the controller's own writes applied as they return.

    A watch event older than what the cache holds (our write came back first) is ignored, so the
    cache never steps back; resourceVersions are compared as integers, which etcd-backed servers use.
    """

    def __init__(self) -> None:
        self._items: dict[str, Obj] = {}
        self._parsed: dict[str, PodMigration] = {}
        self._lock = threading.Lock()
        self.synced = False

    def replace_all(self, items: Iterable[Obj]) -> list[str]:
        with self._lock:
            self._items = {key_of(o): o for o in items}
            self._parsed = {k: PodMigration.from_json(o) for k, o in self._items.items()}
            self.synced = True
            return list(self._items)

    def upsert(self, obj: Obj) -> bool:
        key = key_of(obj)
        with self._lock:
            held = self._items.get(key)
            if held is not None and 0 <= _rv(obj) < _rv(held):
                return False
            self._items[key] = obj
            self._parsed[key] = PodMigration.from_json(obj)
            return True

    def delete(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)
            self._parsed.pop(key, None)

    def get(self, key: str) -> Obj | None:
        with self._lock:
            return self._items.get(key)

    def migrations(self) -> list[PodMigration]:
        with self._lock:
            return list(self._parsed.values())

    def active_keys(self) -> list[str]:
        with self._lock:
            return [k for k, m in self._parsed.items() if m.status.phase not in Phase.FINISHED or m.deletion_timestamp]

    def finished_keys(self) -> list[str]:
        with self._lock:
            return [k for k, m in self._parsed.items() if m.status.phase in Phase.FINISHED]

    def pending_keys(self) -> list[str]:
        with self._lock:
            pending = [m for m in self._parsed.values() if m.status.phase == Phase.PENDING]
        pending.sort(key=lambda m: (m.creation_timestamp, m.name))
        return [key_of(m) for m in pending]

    def phases(self) -> Tally[str]:
        with self._lock:
            return Tally(m.status.phase for m in self._parsed.values() if m.status.phase in Phase.ACTIVE)

    def keys_for_pod(self, pod: Obj) -> list[str]:
        """The active migrations a pod event concerns: its source, a replacement candidate, a bare re-creation."""
        meta = pod.get("metadata") or {}
        namespace = str(meta.get("namespace", ""))
        uid, name = str(meta.get("uid", "")), str(meta.get("name", ""))
        marked = (meta.get("annotations") or {}).get(MIGRATION_ANNOTATION, "")
        _, _, owner = podinfo.controller_ref(pod)
        out = []
        with self._lock:
            for key, m in self._parsed.items():
                if m.namespace != namespace or m.status.phase in Phase.FINISHED:
                    continue
                st = m.status
                if (
                    m.spec.pod_name == name
                    or (uid and st.pod_uid == uid)
                    or marked == m.name
                    or (owner and st.owner_uid == owner)
                ):
                    out.append(key)
        return out
