"""The `MutatingWebhookConfiguration` that registers the webhook, derived from its settings (pure).

One function builds it for every caller (the manifest in `manifests/webhook/` is checked against it by a
unit test; end-to-end tests and the benchmark register it on the local control plane with a URL), so the
selectors the API server applies and the selection the webhook makes cannot drift apart.

What keeps unrelated pods from ever being sent (the webhook is on the create path of every pod that is):

* `rules`: pod CREATE only;
* `namespaceSelector`: not the excluded namespaces (the control plane's own);
* `objectSelector`: the pod carries the opt-in label. A replacement created by a controller carries its
  template's labels, and a bare pod the orchestrator re-creates carries the original's, so an opted-in
  pod's replacement is sent; a pod that never opted in is never sent, replacement or not.

A label selector rather than a CEL `matchCondition` because the API server evaluates it on every pod
create in the cluster: on the local control plane (`bench.webhook`) the CEL condition (which also
accepted pods carrying the `apollo.io/migration` annotation) cost about 1.5 ms of API-server CPU per
pod, as much as the webhook call itself, while matching labels costs next to nothing.

And what keeps the webhook from ever blocking a pod: `failurePolicy: Ignore` with a short timeout, and
`sideEffects: NoneOnDryRun` (claims are created only for real requests). `reinvocationPolicy: IfNeeded`
lets the webhook see a pod again after later webhooks changed it; its patch is idempotent.
"""

from __future__ import annotations

import base64
from typing import Any

from webhook.config import WebhookSettings

NAME = "apollo-webhook"
WEBHOOK_NAME = "pods.webhook.apollo.io"
TIMEOUT_SECONDS = 2


def object_selector(settings: WebhookSettings) -> dict[str, Any]:
    """Only opted-in pods."""
    return {"matchLabels": {settings.opt_in_label: settings.opt_in_value}}


def namespace_selector(settings: WebhookSettings) -> dict[str, Any]:
    """Every namespace but the excluded ones (by the name label the API server sets on each namespace)."""
    if not settings.excluded_namespaces:
        return {}
    excluded = list(settings.excluded_namespaces)
    return {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": excluded}]}


def url_client_config(url: str, ca_pem: bytes) -> dict[str, Any]:
    """Direct URL (the local control plane reaches the webhook on 127.0.0.1)."""
    return {"url": url, "caBundle": base64.b64encode(ca_pem).decode()}


def service_client_config(namespace: str, service: str, path: str = "/mutate", port: int = 443) -> dict[str, Any]:
    """Through a Service; the CA bundle is injected by whoever issues the certificate (cert-manager)."""
    return {"service": {"namespace": namespace, "name": service, "path": path, "port": port}}


def webhook_configuration(
    settings: WebhookSettings,
    client_config: dict[str, Any],
    *,
    name: str = NAME,
    timeout_seconds: int = TIMEOUT_SECONDS,
) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "apollo"}},
        "webhooks": [
            {
                "name": WEBHOOK_NAME,
                "admissionReviewVersions": ["v1"],
                "clientConfig": client_config,
                "rules": [
                    {
                        "operations": ["CREATE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods"],
                        "scope": "Namespaced",
                    }
                ],
                "namespaceSelector": namespace_selector(settings),
                "objectSelector": object_selector(settings),
                "matchPolicy": "Equivalent",
                "failurePolicy": "Ignore",
                "sideEffects": "NoneOnDryRun",
                "timeoutSeconds": timeout_seconds,
                "reinvocationPolicy": "IfNeeded",
            }
        ],
    }
