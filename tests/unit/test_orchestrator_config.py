"""Orchestrator settings, HTTP surface, main, and manifests (least-privilege RBAC, two replicas)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.settings import ConfigError
from orchestrator.app import create_app
from orchestrator.config import OrchestratorSettings, load_settings
from orchestrator.main import main
from orchestrator.runtime import Runtime
from tests.unit.test_orchestrator_controller import FakeKube

MANIFEST = Path(__file__).resolve().parents[2] / "manifests" / "orchestrator" / "orchestrator.yaml"


def test_defaults_are_valid_and_variables_override_them() -> None:
    s = load_settings(environ={})
    assert s.server.workers == 1 and s.leader.enabled and s.apollo.address == ""
    s = load_settings(
        environ={
            "ORCHESTRATOR_CAPS__PER_NODE": "3",
            "ORCHESTRATOR_APOLLO__ADDRESS": "apollo:50051",
            "ORCHESTRATOR_APOLLO__NAMESPACES": "ml,batch",
            "ORCHESTRATOR_TTL_SECONDS_AFTER_FINISHED": "0",
        }
    )
    assert (s.caps.per_node, s.apollo.address, s.apollo.namespaces, s.ttl_seconds_after_finished) == (
        3,
        "apollo:50051",
        ("ml", "batch"),
        0,
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ORCHESTRATOR_SERVER__WORKERS": "2"}, "server.workers"),
        ({"ORCHESTRATOR_CAPS__TOTAL": "0"}, "caps.total"),
        ({"ORCHESTRATOR_APOLLO__ADDRESS": "no-port"}, "apollo.address"),
        ({"ORCHESTRATOR_LEADER__RENEW_DEADLINE_SECONDS": "20"}, "renew_deadline_seconds"),
        ({"ORCHESTRATOR_EVICTION__MAX_BACKOFF_SECONDS": "0.5"}, "eviction.max_backoff_seconds"),
        ({"ORCHESTRATOR_TTL_SECONDS_AFTER_FINISHED": "-1"}, "ttl_seconds_after_finished"),
        ({"ORCHESTRATOR_NOPE": "1"}, "nope"),
    ],
)
def test_bad_settings_stop_start_up_naming_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(environ=env)


def test_main_exits_2_on_a_bad_setting(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ORCHESTRATOR_CAPS__PER_WORKLOAD", "zero")
    assert main([]) == 2
    assert "caps.per_workload" in capsys.readouterr().err


def test_http_surface_health_probes_and_metrics() -> None:
    settings = load_settings(environ={"ORCHESTRATOR_LEADER__ENABLED": "false"})
    kube = FakeKube()
    runtime = Runtime(settings, kube=kube)
    app = create_app(settings, runtime=runtime)
    try:
        client = app.test_client()
        health = client.get("/health").get_json()
        assert health["status"] == "healthy" and health["service"] == "apollo-orchestrator" and health["version"]
        assert client.get("/healthz").status_code == 200
        deadline = time.monotonic() + 5
        while (ready := client.get("/readyz")).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        body: dict[str, Any] = ready.get_json()
        assert ready.status_code == 200 and body["leader"] is True and body["synced"] is True
        assert body["apollo"] == "not configured"
        text = client.get("/metrics").get_data(as_text=True)
        assert "apollo_orchestrator_leader 1.0" in text and "apollo_orchestrator_evictions_refused_by_pdb_total" in text
        assert client.get("/nope").get_json()["code"] == 404  # the shared Status-shaped error body
    finally:
        runtime.stop()
    assert runtime.controller is None and not runtime.is_leader()


def _docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def test_manifest_runs_two_replicas_with_settings_that_load() -> None:
    deployment = next(d for d in _docs() if d["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 2
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e and e["name"].startswith("ORCHESTRATOR_")}
    settings = load_settings(environ=env)
    assert isinstance(settings, OrchestratorSettings) and settings.server.tls
    assert settings.leader.namespace == deployment["metadata"]["namespace"]
    assert container["ports"][0]["name"] == "https"  # what the REST API's Service targets


def test_rbac_is_least_privilege() -> None:
    docs = _docs()
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    grants = {
        (g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
    }
    assert grants[("", "pods")] == {"get", "list", "watch", "create"}  # never delete: evictions only
    assert grants[("", "pods/eviction")] == {"create"}
    assert grants[("", "persistentvolumeclaims")] == {"get"}  # never writes a claim
    assert not any("*" in verbs or "deletecollection" in verbs for verbs in grants.values())
    assert all(r != "*" for _, r in grants)
    lease = next(d for d in docs if d["kind"] == "Role")
    assert lease["metadata"]["namespace"] == "apollo-system"
    named = next(rule for rule in lease["rules"] if "resourceNames" in rule)
    assert named["resourceNames"] == ["apollo-orchestrator"] and set(named["verbs"]) == {"get", "update"}
    assert next(d for d in docs if d["kind"] == "PodDisruptionBudget")["spec"]["minAvailable"] == 1
