"""The deployable manifests, rendered from the kustomize layout, are accepted by a real kube-apiserver.

Every object of the base and of the local overlay goes through server-side apply with
``dryRun=All`` and ``fieldValidation=Strict``: the API server runs defaulting, schema validation
(unknown or misspelt fields are errors), admission and, for the CRD, structural-schema checks,
without persisting anything. Only the namespace is created for real, because namespaced objects
cannot be dry-run into a namespace that does not exist; it is removed afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, dynamic

from apolloctl.kustomize import render
from tests.conftest import ClusterHandle
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e
MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
FIELD_MANAGER = "apollo-manifests-test"


def _apply_dry_run(dyn: Any, objs: list[dict[str, Any]]) -> list[str]:
    """Server-side apply each object with dryRun=All; the failures, one line each."""
    failures = []
    for obj in objs:
        meta = obj["metadata"]
        what = f"{obj['kind']} {meta.get('namespace', '')}/{meta['name']}"
        try:
            resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
            dyn.server_side_apply(
                resource,
                body=obj,
                namespace=meta.get("namespace"),
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
                dry_run="All",
                query_params=[("fieldValidation", "Strict")],
            )
        except Exception as exc:  # collect every failure, not just the first
            body = getattr(exc, "body", None) or str(exc)
            failures.append(f"{what}: {body}"[:600])
    return failures


@pytest.fixture(scope="module")
def apollo_namespace(cluster: ClusterHandle) -> Iterator[str]:
    """apollo-system, created for real (removed afterwards unless it was there before)."""
    name = "apollo-system"

    def phase() -> str | None:
        try:
            return str(cluster.core.read_namespace(name).status.phase)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    wait_for(lambda: phase() != "Terminating", what=f"namespace {name} to finish terminating")
    created = phase() is None
    if created:
        cluster.core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    if created:
        with contextlib.suppress(client.ApiException):
            cluster.core.delete_namespace(name)


@pytest.mark.parametrize("layout", ["base", "overlays/local"])
def test_manifests_pass_server_side_dry_run(cluster: ClusterHandle, apollo_namespace: str, layout: str) -> None:
    objs = render(MANIFESTS / layout)
    namespaces = [o["metadata"]["name"] for o in objs if o["kind"] == "Namespace"]
    assert namespaces == [apollo_namespace]
    dyn = dynamic.DynamicClient(cluster.api)  # type: ignore[no-untyped-call]
    failures = _apply_dry_run(dyn, objs)
    assert not failures, "\n".join(failures)
    # dry run means nothing was stored
    with pytest.raises(client.ApiException) as missing:
        cluster.apps.read_namespaced_deployment("apollo", apollo_namespace)
    assert missing.value.status == 404


def test_a_misspelt_field_is_caught(cluster: ClusterHandle) -> None:
    """The check above can fail: strict validation rejects what kubectl apply would reject."""
    objs = render(MANIFESTS)
    sa = next(o for o in objs if o["kind"] == "ServiceAccount")
    broken = {**sa, "metadata": {**sa["metadata"], "namespace": "default"}, "automountServiceAccountTokn": False}
    dyn = dynamic.DynamicClient(cluster.api)  # type: ignore[no-untyped-call]
    failures = _apply_dry_run(dyn, [broken])
    assert len(failures) == 1 and "automountServiceAccountTokn" in failures[0]
