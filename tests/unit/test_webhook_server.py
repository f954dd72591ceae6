"""`apollo-webhook` as deployed (gunicorn, TLS), without a cluster: verified TLS, certificate rotation
picked up by the next connection, /mutate over HTTPS, and a bad setting stopping start-up.

The API server it is pointed at does not exist, so the PodMigration watch keeps failing: /readyz says
so, while /mutate keeps admitting (opted-in pods get their claim, with a warning that replacements
cannot be recognised yet).
"""

from __future__ import annotations

import base64
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from cryptography import x509

from apolloctl.cluster.certs import CertificateAuthority
from apolloctl.cluster.configs import dump_yaml, kubeconfig
from apolloctl.cluster.process import free_port, wait_until
from apolloctl.launch import Tls
from bench.webhook_local import LocalWebhook, issue_tls
from common.server import ReloadingSSLContext
from tests.unit.test_webhook_fixtures import replicaset_pod, review


def _serial(webhook: LocalWebhook) -> int:
    """Serial of the certificate a fresh, verified TLS connection is served."""
    ctx = webhook.tls.client_context()
    with (
        socket.create_connection(("127.0.0.1", webhook.port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


def _replace(old: Tls, new: Tls) -> None:
    """Rotate as the kubelet does: each file swapped atomically."""
    os.replace(new.keyfile, old.keyfile)
    os.replace(new.certfile, old.certfile)


@pytest.fixture
def webhook(tmp_path: Path) -> Iterator[LocalWebhook]:
    ca = CertificateAuthority(tmp_path / "pki")
    nowhere = f"https://127.0.0.1:{free_port()}"
    client = ca.issue("client", "nobody", client=True)
    config = tmp_path / "kubeconfig"
    config.write_text(dump_yaml(kubeconfig(nowhere, ca.pair.cert, client, "nobody")))
    hook = LocalWebhook(tmp_path / "webhook.log", ca, config, {"server": {"workers": 1}})
    hook.start(ready=False)
    try:
        yield hook
    finally:
        hook.stop()


def test_tls_mutate_probes_and_certificate_rotation(webhook: LocalWebhook) -> None:
    # Verified TLS (CA bundle, IP SAN), keep-alive across requests.
    assert webhook.service is not None
    conn = webhook.service.connect()
    doc = review(replicaset_pod())
    conn.request("POST", "/mutate", body=orjson.dumps(doc), headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    answer = orjson.loads(resp.read())["response"]
    assert resp.status == 200 and answer["uid"] == doc["request"]["uid"] and answer["patchType"] == "JSONPatch"
    patch = orjson.loads(base64.b64decode(answer["patch"]))
    assert any(op["path"] == "/spec/volumes/-" for op in patch)
    assert "not read yet" in answer["warnings"][0]
    conn.request("POST", "/mutate", body=b"{}", headers={"Content-Type": "application/json"})
    bad = conn.getresponse()
    assert bad.status == 400 and b"kind must be AdmissionReview" in bad.read()

    status, body, _ = webhook.service.request("GET", "/readyz")
    assert status == 503 and b"reason" in body
    assert webhook.service.probe("/healthz") is not None

    before = _serial(webhook)
    assert _serial(webhook) == before  # unchanged files: the same certificate
    _replace(webhook.tls, issue_tls(webhook.ca, "rotated"))
    wait_until(lambda: _serial(webhook) != before, 10, "the rotated certificate to be served")
    # The kept-alive connection opened before the rotation still works.
    conn.request("GET", "/healthz")
    assert conn.getresponse().status == 200
    conn.close()


def test_bad_setting_stops_start_up() -> None:
    env = {**os.environ, "WEBHOOK_MOUNT_PATH": "relative/path"}
    run = subprocess.run(
        [sys.executable, "-m", "webhook.main"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 2 and "mount_path must be a normalised absolute path" in run.stderr


def test_reloading_context_keeps_serving_through_a_half_written_rotation(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path)
    tls = issue_tls(ca, "serve")
    reloading = ReloadingSSLContext(str(tls.certfile), str(tls.keyfile))

    def factory() -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(tls.certfile), str(tls.keyfile))
        return ctx

    first = reloading(None, factory)
    assert reloading(None, factory) is first
    other = issue_tls(ca, "next")
    os.replace(other.keyfile, tls.keyfile)  # key rotated, certificate not yet: the pair does not load
    assert reloading(None, factory) is first and reloading.reloads == 0
    os.replace(other.certfile, tls.certfile)
    second = reloading(None, factory)
    assert second is not first and reloading.reloads == 1
    tls.certfile.unlink()
    assert reloading(None, factory) is second  # unreadable: the last good context keeps serving
