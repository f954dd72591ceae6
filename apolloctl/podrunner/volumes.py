"""PersistentVolumes whose data lives in a local directory, which the pod runner can map.

The local control plane has no storage provisioner: a claim binds only to a PV created beforehand.
A ``hostPath`` PV without node affinity binds to a claim on any node, and since every kwok node is
this machine, the directory behind it is the same wherever the pod lands, which is what a
checkpoint that follows a migrated pod needs (a ``local`` PV, pinned to one node, could not follow).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def hostpath_pv(
    name: str,
    directory: Path,
    *,
    size: str = "1Gi",
    storage_class: str = "",
    labels: dict[str, str] | None = None,
    access_modes: tuple[str, ...] = ("ReadWriteOnce",),
    claim: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """A Retain-policy hostPath PV over `directory` (created if missing), ready for `create_persistent_volume`.

    `storage_class` "" matches claims that ask for no class, which is what a claim created without
    one gets on a cluster without a default StorageClass (the local one has none). `claim`
    (namespace, name) reserves the volume for that claim alone (a pre-bound ``claimRef``), so the
    claim a webhook creates later binds to this volume and no other claim can take it.
    """
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    pv: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": dict(labels or {})},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": list(access_modes),
            # A checkpoint must outlive its claim being deleted by mistake: the data stays.
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": storage_class,
            "volumeMode": "Filesystem",
            "hostPath": {"path": str(directory), "type": "DirectoryOrCreate"},
        },
    }
    if claim is not None:
        pv["spec"]["claimRef"] = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "namespace": claim[0],
            "name": claim[1],
        }
    return pv
