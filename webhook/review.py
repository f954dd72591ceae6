"""admission.k8s.io/v1 AdmissionReview: the request as the webhook needs it, and the response it sends.

Pure: bytes in, a typed request or a precise `InvalidArgument` out; a response document from a uid, a
patch and warnings. Malformed input (not JSON, not an AdmissionReview, another API version, not a pod,
a pod without containers, an oversized body) is refused with a message naming what is wrong, which the
HTTP layer answers with 400. Anything the webhook cannot do for reasons of its own is not refused here:
it is answered `allowed: true` without a patch, with a warning (see `webhook.admit`).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from common.errors import InvalidArgument

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
# Kubernetes truncates long warnings and asks for short ones; ours name the webhook so a user sees who spoke.
WARNING_PREFIX = "apollo-webhook: "
MAX_WARNING_CHARS = 256
MAX_WARNINGS = 16


@dataclass(frozen=True)
class AdmissionRequest:
    """The fields of `request` the webhook uses; `pod` is the object as it would be stored."""

    uid: str
    operation: str
    namespace: str
    name: str
    dry_run: bool
    pod: dict[str, Any]


def too_large(size: int, limit: int) -> InvalidArgument:
    return InvalidArgument(f"request body of {size} bytes exceeds the limit of {limit} bytes", field="body")


def _mapping(value: Any, field: str, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"{field} must be {what}, got {type(value).__name__}", field=field)
    return value


def parse_review(body: bytes, max_bytes: int) -> AdmissionRequest:
    """The AdmissionReview's request; InvalidArgument naming the field when it is not a usable pod review."""
    if len(body) > max_bytes:
        raise too_large(len(body), max_bytes)
    if not body:
        raise InvalidArgument("empty body: expected an admission.k8s.io/v1 AdmissionReview", field="body")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"body is not JSON: {exc}", field="body") from exc
    review = _mapping(doc, "body", "an AdmissionReview object")
    kind = review.get("kind")
    if kind != KIND:
        raise InvalidArgument(f"kind must be {KIND}, got {kind!r}", field="kind")
    version = review.get("apiVersion")
    if version != API_VERSION:
        raise InvalidArgument(
            f"apiVersion must be {API_VERSION} (register the webhook with admissionReviewVersions: [v1]), "
            f"got {version!r}",
            field="apiVersion",
        )
    request = _mapping(review.get("request"), "request", "an object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise InvalidArgument("request.uid must be a non-empty string", field="request.uid")
    resource = request.get("resource") or {}
    req_kind = request.get("kind") or {}
    if not isinstance(resource, Mapping) or not isinstance(req_kind, Mapping):
        raise InvalidArgument("request.kind and request.resource must be objects", field="request.kind")
    if resource.get("group", "") != "" or resource.get("resource") != "pods" or request.get("subResource"):
        what = "/".join(str(p) for p in (resource.get("group"), resource.get("resource")) if p)
        sub = f" subresource {request['subResource']}" if request.get("subResource") else ""
        raise InvalidArgument(f"only pods are handled, got {what or 'no resource'}{sub}", field="request.resource")
    if req_kind.get("kind") not in (None, "Pod"):
        raise InvalidArgument(f"only Pod objects are handled, got {req_kind.get('kind')!r}", field="request.kind")
    operation = request.get("operation")
    if not isinstance(operation, str) or not operation:
        raise InvalidArgument("request.operation must be a non-empty string", field="request.operation")
    namespace = request.get("namespace") or ""
    if not isinstance(namespace, str):
        raise InvalidArgument("request.namespace must be a string", field="request.namespace")
    pod: dict[str, Any] = {}
    if operation != "DELETE":
        obj = _mapping(request.get("object"), "request.object", "a Pod object")
        if obj.get("kind", "Pod") != "Pod":
            raise InvalidArgument(f"request.object must be a Pod, got {obj.get('kind')!r}", field="request.object")
        for key in ("metadata", "spec"):
            if obj.get(key) is not None and not isinstance(obj.get(key), Mapping):
                raise InvalidArgument(f"request.object.{key} must be an object", field=f"request.object.{key}")
        spec = obj.get("spec") or {}
        containers = spec.get("containers")
        if not isinstance(containers, list) or not containers:
            raise InvalidArgument("the pod has no containers", field="request.object.spec.containers")
        for i, container in enumerate([*containers, *(spec.get("initContainers") or [])]):
            if not isinstance(container, Mapping) or not isinstance(container.get("name"), str):
                raise InvalidArgument(
                    f"container {i} must be an object with a name", field="request.object.spec.containers"
                )
        pod = dict(obj)
    name = request.get("name") or (pod.get("metadata") or {}).get("name") or ""
    return AdmissionRequest(
        uid=uid,
        operation=operation,
        namespace=str(namespace or (pod.get("metadata") or {}).get("namespace") or ""),
        name=str(name),
        dry_run=bool(request.get("dryRun", False)),
        pod=pod,
    )


def _warning(text: str) -> str:
    text = WARNING_PREFIX + " ".join(text.split())
    return text if len(text) <= MAX_WARNING_CHARS else text[: MAX_WARNING_CHARS - 3] + "..."


def review_response(uid: str, patch: Sequence[Mapping[str, Any]] = (), warnings: Sequence[str] = ()) -> bytes:
    """The AdmissionReview answer: always allowed; a base64 JSONPatch when there is something to change."""
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(orjson.dumps(list(patch))).decode()
    if warnings:
        response["warnings"] = [_warning(w) for w in warnings[:MAX_WARNINGS]]
    return orjson.dumps({"apiVersion": API_VERSION, "kind": KIND, "response": response})
