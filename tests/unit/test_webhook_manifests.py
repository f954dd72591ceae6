"""manifests/webhook/: the registration is what `webhook.registration` derives from the deployed settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from webhook.config import load_settings
from webhook.registration import service_client_config, webhook_configuration

ROOT = Path(__file__).resolve().parents[2] / "manifests" / "webhook"


def _docs(name: str) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all((ROOT / name).read_text()) if d}


def _deployed_settings(tmp_path: Path) -> Any:
    path = tmp_path / "webhook.yaml"
    path.write_text(_docs("webhook.yaml")["ConfigMap"]["data"]["webhook.yaml"])
    return load_settings(path, environ={})


def test_registration_matches_the_deployed_settings(tmp_path: Path) -> None:
    settings = _deployed_settings(tmp_path)
    manifest = _docs("webhook.yaml")["MutatingWebhookConfiguration"]
    generated = webhook_configuration(settings, service_client_config("apollo-system", "apollo-webhook"))
    assert manifest["webhooks"] == generated["webhooks"]
    (hook,) = manifest["webhooks"]
    assert hook["failurePolicy"] == "Ignore" and hook["sideEffects"] == "NoneOnDryRun"
    assert hook["reinvocationPolicy"] == "IfNeeded" and hook["timeoutSeconds"] <= 5
    assert hook["rules"][0]["operations"] == ["CREATE"] and hook["rules"][0]["resources"] == ["pods"]
    assert "apollo-system" in hook["namespaceSelector"]["matchExpressions"][0]["values"]
    assert hook["objectSelector"] == {"matchLabels": {settings.opt_in_label: settings.opt_in_value}}


def test_deployment_serves_tls_from_the_mounted_secret(tmp_path: Path) -> None:
    settings = _deployed_settings(tmp_path)
    docs = _docs("webhook.yaml")
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert settings.server.tls and settings.server.bind.endswith(":8443")
    assert Path(settings.server.certfile).parent == Path(mounts["tls"])
    assert Path(settings.server.keyfile).parent == Path(mounts["tls"])
    secret = next(v for v in pod["volumes"] if v["name"] == "tls")["secret"]["secretName"]
    assert secret == _docs("certificate.yaml")["Certificate"]["spec"]["secretName"]
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    service = docs["Service"]["spec"]
    assert service["ports"] == [{"name": "https", "port": 443, "targetPort": "https"}]
    assert docs["Service"]["metadata"]["name"] + "." in _docs("certificate.yaml")["Certificate"]["spec"]["dnsNames"][0]


def test_rbac_is_least_privilege() -> None:
    role = _docs("webhook.yaml")["ClusterRole"]
    assert role["rules"] == [
        {"apiGroups": ["apollo.io"], "resources": ["podmigrations"], "verbs": ["list", "watch"]},
        {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["create"]},
    ]
