"""Certificate and configuration generation for the local control plane, checked without processes."""

from __future__ import annotations

import base64
import ipaddress
import ssl
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from apolloctl.cluster import build, configs
from apolloctl.cluster.certs import generate_cluster_pki
from apolloctl.cluster.errors import ComponentError
from apolloctl.cluster.process import Process, ensure_port_free, free_port


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_pki_chain_and_identities(tmp_path: Path) -> None:
    _, pki = generate_cluster_pki(tmp_path)
    ca = _load(pki.ca.cert)
    server = _load(pki.apiserver.cert)
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert "kubernetes.default.svc" in sans.get_values_for_type(x509.DNSName)
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku

    admin = _load(pki.admin.cert)
    admin.verify_directly_issued_by(ca)
    orgs = [a.value for a in admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert orgs == ["system:masters"]
    sched = _load(pki.scheduler.cert)
    assert sched.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:kube-scheduler"
    assert (pki.admin.key.stat().st_mode & 0o777) == 0o600
    # The standard library must accept the pair as a TLS client identity verified by the CA.
    ctx = ssl.create_default_context(cafile=str(pki.ca.cert))
    ctx.load_cert_chain(str(pki.admin.cert), str(pki.admin.key))


def test_issue_rejects_certificate_without_purpose(tmp_path: Path) -> None:
    ca, _ = generate_cluster_pki(tmp_path)
    with pytest.raises(ValueError, match="server and/or client"):
        ca.issue("x", "x")


def test_kubeconfig_embeds_credentials(tmp_path: Path) -> None:
    _, pki = generate_cluster_pki(tmp_path)
    doc = configs.kubeconfig("https://127.0.0.1:6443", pki.ca.cert, pki.admin, "admin")
    cluster = doc["clusters"][0]["cluster"]
    assert cluster["server"] == "https://127.0.0.1:6443"
    assert base64.b64decode(cluster["certificate-authority-data"]) == pki.ca.cert.read_bytes()
    assert base64.b64decode(doc["users"][0]["user"]["client-key-data"]) == pki.admin.key.read_bytes()


def test_scheduler_config_with_extender() -> None:
    ext = configs.ExtenderConfig(url_prefix="https://127.0.0.1:9443/scheduler", ca_pem=b"PEM", weight=3)
    doc = configs.scheduler_config(Path("/x/kc"), (ext,))
    assert doc["apiVersion"] == "kubescheduler.config.k8s.io/v1"
    assert doc["clientConnection"]["kubeconfig"] == "/x/kc"
    rendered = doc["extenders"][0]
    assert rendered["enableHTTPS"] is True and rendered["nodeCacheCapable"] is True
    assert rendered["ignorable"] is True and rendered["weight"] == 3
    assert base64.b64decode(rendered["tlsConfig"]["caData"]) == b"PEM"
    assert "extenders" not in configs.scheduler_config(Path("/x/kc"))


def test_kwok_stages_render_as_yaml_documents() -> None:
    docs = list(yaml.safe_load_all(configs.dump_yaml_documents(configs.kwok_config())))
    names = [d["metadata"]["name"] for d in docs]
    assert names == ["node-initialize", "node-heartbeat", "pod-ready", "containers-complete", "pod-delete"]
    complete = docs[names.index("containers-complete")]["spec"]
    keys = [e["key"] for e in complete["selector"]["matchExpressions"]]
    assert any(configs.COMPLETE_ANNOTATION in k for k in keys)
    assert "exitCode: 0" in complete["next"]["statusTemplate"]


def test_prometheus_file_discovery(tmp_path: Path) -> None:
    cfg = configs.prometheus_config(tmp_path, "2s")
    assert cfg["global"]["scrape_interval"] == "2s"
    assert cfg["scrape_configs"][0]["file_sd_configs"][0]["files"] == [str(tmp_path / "*.json")]
    doc = configs.file_sd_document("apollo", [configs.ScrapeTarget("127.0.0.1:9100", {"node": "n1"})])
    assert doc == [{"targets": ["127.0.0.1:9100"], "labels": {"source": "apollo", "node": "n1"}}]


def test_port_in_use_is_named(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ComponentError, match=rf"kube-apiserver: port 127.0.0.1:{port} is already in use"):
            ensure_port_free("kube-apiserver", port)
    ensure_port_free("kube-apiserver", free_port())


def test_component_exiting_during_startup_names_its_log(tmp_path: Path) -> None:
    proc = Process("etcd", ["sh", "-c", "echo 'fatal: boom' >&2; exit 3"], tmp_path / "etcd.log")
    proc.start()
    with pytest.raises(ComponentError) as err:
        proc.wait_ready(lambda: False, timeout=10)
    msg = str(err.value)
    assert msg.startswith("etcd: exited during start-up with code 3")
    assert "fatal: boom" in msg and str(tmp_path / "etcd.log") in msg


def test_stop_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    proc = Process("x", ["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], tmp_path / "x.log")
    proc.start()
    import time

    deadline = time.monotonic() + 5
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child = int(pidfile.read_text())
    proc.stop(grace=2)
    time.sleep(0.2)
    # Gone, or a zombie waiting for init to reap it: either way no longer running.
    stat = Path(f"/proc/{child}/stat")
    assert not stat.exists() or stat.read_text().split(") ")[1].startswith("Z")


def test_missing_go_toolchain_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APOLLO_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ComponentError, match=r"^go toolchain: not found on PATH"):
        build.build_kube_all(lambda _m: None)
