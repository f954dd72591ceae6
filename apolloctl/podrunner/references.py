"""What a pod refers to, read from the API server: its volumes as local directories, its ConfigMaps and Secrets.

A claim maps to the directory of the ``hostPath`` or ``local`` PV it is bound to (only inside the
allowed roots); an emptyDir to a directory of the pod's own under the runner's state directory.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from apolloctl.podrunner.kube_calls import api_status, json_body
from apolloctl.podrunner.spec import PodInfo, SpecError, pv_local_path, volume_sources


class NotReady(Exception):
    """Something the pod needs is not there yet (an unbound claim): try again on a later tick."""


class References:
    """Reads what pods refer to through one API client; `volume_dirs` for a pod, `resolve` for env references."""

    def __init__(self, core_v1: Any, state_dir: Path, roots: tuple[Path, ...]) -> None:
        self.core = core_v1
        self.state_dir = state_dir
        self.roots = roots

    def volume_dirs(self, info: PodInfo) -> dict[str, Path]:
        """Volume name -> local directory (created), for the volumes the runner maps; NotReady or SpecError."""
        out: dict[str, Path] = {}
        for source in volume_sources(info).values():
            if source.kind == "emptyDir":
                path = self.state_dir / "pods" / info.uid / "volumes" / source.name
            elif source.kind == "pvc":
                path = self.claim_dir(info.namespace, source.name, source.claim)
            else:
                continue
            path.mkdir(parents=True, exist_ok=True)
            out[source.name] = path
        return out

    def claim_dir(self, namespace: str, volume: str, claim: str) -> Path:
        """The directory behind the PV `claim` is bound to: NotReady until it is bound, SpecError if unusable."""
        try:
            pvc = json_body(self.core.read_namespaced_persistent_volume_claim(claim, namespace, _preload_content=False))
        except Exception as exc:
            if api_status(exc) == 404:
                raise NotReady(f"volume {volume}: claim {claim} does not exist yet") from exc
            raise
        pv_name = (pvc.get("spec") or {}).get("volumeName")
        if (pvc.get("status") or {}).get("phase") != "Bound" or not pv_name:
            raise NotReady(f"volume {volume}: claim {claim} is not bound yet")
        pv = json_body(self.core.read_persistent_volume(pv_name, _preload_content=False))
        local = pv_local_path(pv)
        if local is None:
            raise SpecError(
                f"volume {volume}: PV {pv_name} is neither hostPath nor local; the local runner maps only those"
            )
        path = Path(local).resolve()
        if self.roots and not any(path == r or r in path.parents for r in self.roots):
            raise SpecError(f"volume {volume}: PV {pv_name} path {local} is outside the allowed volume roots")
        return path

    def resolve(self, kind: str, namespace: str, name: str) -> Mapping[str, str] | None:
        """A ConfigMap's or a Secret's data (Secrets decoded), None when it does not exist: for env references."""
        read = self.core.read_namespaced_config_map if kind == "ConfigMap" else self.core.read_namespaced_secret
        try:
            obj = json_body(read(name, namespace, _preload_content=False))
        except Exception as exc:
            if api_status(exc) == 404:
                return None
            raise
        data = {str(k): str(v) for k, v in (obj.get("data") or {}).items()}
        if kind == "Secret":
            data = {k: base64.b64decode(v).decode(errors="replace") for k, v in data.items()}
        return data
