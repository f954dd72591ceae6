"""The REST API's manifests grant what the API asks the API server for, and what its users need."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


def _docs(name: str) -> dict[tuple[str, str], dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((MANIFESTS / "orchestrator" / name).read_text()) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def _grants(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    }


def test_api_service_account_may_review_tokens_and_access() -> None:
    docs = _docs("api-rbac.yaml")
    grants = _grants(docs[("ClusterRole", "apollo-orchestrator-api")])
    assert ("authentication.k8s.io", "tokenreviews", "create") in grants
    assert ("authorization.k8s.io", "subjectaccessreviews", "create") in grants
    # What orchestrator.api.service.KubeCluster calls, and nothing that deletes or evicts.
    reads = {
        ("", "pods", "get"),
        ("", "pods", "list"),
        ("", "nodes", "get"),
        ("policy", "poddisruptionbudgets", "list"),
    }
    assert reads <= grants
    assert {("apollo.io", "podmigrations", v) for v in ("create", "get", "list", "patch")} <= grants
    assert ("apollo.io", "podmigrations/status", "update") in grants
    assert not {v for _, _, v in grants} & {"delete", "deletecollection", "*"}
    binding = docs[("ClusterRoleBinding", "apollo-orchestrator-api")]
    assert binding["roleRef"]["name"] == "apollo-orchestrator-api"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "apollo-orchestrator", "namespace": "apollo-system"}
    ]


def test_user_roles_cover_the_verbs_the_api_checks() -> None:
    docs = _docs("api-rbac.yaml")
    # The SubjectAccessReview verbs of orchestrator.api.routes: create (POST, batch), get, list, delete (cancel).
    edit = _grants(docs[("ClusterRole", "apollo-migrations-edit")])
    assert {("apollo.io", "podmigrations", v) for v in ("create", "get", "list", "delete")} <= edit
    assert (
        docs[("ClusterRole", "apollo-migrations-edit")]["metadata"]["labels"][
            "rbac.authorization.k8s.io/aggregate-to-edit"
        ]
        == "true"
    )
    view = _grants(docs[("ClusterRole", "apollo-migrations-view")])
    assert {v for _, _, v in view} == {"get", "list", "watch"}


def test_api_is_served_over_https() -> None:
    (service,) = _docs("api-service.yaml").values()
    assert service["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}]
