"""Manifests parse, and the scheduler configuration matches what the extender serves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2] / "manifests"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_every_manifest_parses_with_kind_and_name() -> None:
    files = sorted(ROOT.rglob("*.yaml"))
    assert files
    for path in files:
        for doc in _docs(path):
            assert doc.get("kind"), path
            if doc["kind"] != "KubeSchedulerConfiguration":
                assert (doc.get("metadata") or {}).get("name"), path


def test_scheduler_config_is_safe_by_default() -> None:
    (cfg,) = _docs(ROOT / "extender" / "scheduler-config.yaml")
    (ext,) = cfg["extenders"]
    assert ext["ignorable"] is True and ext["nodeCacheCapable"] is True
    assert ext["filterVerb"] == "filter" and ext["prioritizeVerb"] == "prioritize"


def test_extender_rbac_is_read_only_on_pods() -> None:
    role = next(d for d in _docs(ROOT / "extender" / "extender.yaml") if d["kind"] == "ClusterRole")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
        {"apiGroups": ["apollo.io"], "resources": ["podmigrations"], "verbs": ["list", "watch"]},  # reservations
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]},
    ]


def test_apollo_rbac_is_read_only_and_config_loads(tmp_path: Path) -> None:
    from apollo.config import load_settings

    docs = _docs(ROOT / "apollo" / "apollo.yaml")
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes", "pods"], "verbs": ["list", "watch"]}]
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    path = tmp_path / "apollo.yaml"
    path.write_text(cm["data"]["apollo.yaml"])
    settings = load_settings(path, environ={})
    assert settings.kubernetes.enabled and settings.policy.dry_run
