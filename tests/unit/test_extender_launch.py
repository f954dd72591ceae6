"""The one launcher (apolloctl.launch) with the real `apollo-extender`: start, probe, HTTPS, stop, bad settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from apolloctl.cluster.errors import ComponentError
from apolloctl.launch import extender_holds_snapshot, launch, loopback_tls, start_extender

# Nothing listens here: the extender starts fail-open and its /readyz says why.
# No cluster either: nothing to watch.
NO_CLUSTER = {"watch_pods": False, "reserve_for_migrations": False}
NO_APOLLO = "127.0.0.1:1"


def test_extender_starts_answers_its_probe_and_stops(tmp_path: Path) -> None:
    service = start_extender(NO_APOLLO, tmp_path / "extender.log", settings=NO_CLUSTER)
    try:
        body = service.wait_ready(timeout=30)
        assert body["status"] == "ok" and body["apollo"] in ("no-snapshot", "snapshot-too-old")
        # The condition the demo waits on is not met without APOLLO: the probe says so within the timeout.
        with pytest.raises(ComponentError, match="holding APOLLO's snapshot"):
            service.wait_ready(extender_holds_snapshot(), timeout=1, what="holding APOLLO's snapshot")
    finally:
        service.stop()
    assert service.process.popen is None
    assert "apollo_address: 127.0.0.1:1" in (tmp_path / "extender.settings.yaml").read_text()


def test_extender_over_https_with_a_loopback_certificate(tmp_path: Path) -> None:
    tls = loopback_tls(tmp_path / "tls", "apollo-extender")
    service = start_extender(NO_APOLLO, tmp_path / "extender.log", settings=NO_CLUSTER, tls=tls)
    try:
        assert service.url.startswith("https://127.0.0.1:")
        assert service.wait_ready(timeout=30)["service"] == "apollo-extender"
        status, body, _ = service.request("POST", "/prioritize", b'{"Pod": {"metadata": {"name": "p"}}}')
        assert status == 400 and b"neither NodeNames nor Nodes" in body
    finally:
        service.stop()


def test_a_bad_setting_fails_at_once_naming_the_log(tmp_path: Path) -> None:
    log = tmp_path / "extender.log"
    service = launch(
        "apollo-extender",
        "EXTENDER",
        {"server": {"bind": "127.0.0.1:1"}, "policy_mode": "sometimes"},
        port=1,
        log_path=log,
    )
    with pytest.raises(ComponentError, match="exited during start-up with code 2") as info:
        service.wait_ready(timeout=30)
    assert str(log) in str(info.value) and "policy_mode" in log.read_text()
