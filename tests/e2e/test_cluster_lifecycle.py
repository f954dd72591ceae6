"""Start-up failures and the CLI lifecycle, on real components."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from apolloctl.cluster import ClusterConfig, ComponentError, LocalCluster

pytestmark = pytest.mark.e2e


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and not stat.read_text().split(") ")[1].startswith("Z")


def test_component_failing_at_startup_is_named_and_nothing_is_left(tmp_path: Path) -> None:
    started: list[int] = []
    cluster = LocalCluster(
        ClusterConfig(run_dir=tmp_path, extra_args={"prometheus": ("--no-such-flag",)}),
        log=lambda _m: None,
    )
    original_spawn = cluster._spawn

    def spawn(name: str, argv: list[str]):  # type: ignore[no-untyped-def]
        proc = original_spawn(name, argv)
        assert proc.pid is not None
        started.append(proc.pid)
        return proc

    cluster._spawn = spawn  # type: ignore[method-assign]
    with pytest.raises(ComponentError) as err:
        cluster.start()
    assert err.value.component == "prometheus"
    assert str(err.value).startswith("prometheus: exited during start-up")
    assert str(tmp_path / "logs" / "prometheus.log") in str(err.value)
    assert len(started) == 6  # etcd, apiserver, controller-manager, scheduler, kwok, prometheus
    assert not [pid for pid in started if _alive(pid)]


def test_cli_up_status_kubeconfig_down(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "apolloctl.cli", "--run-dir", str(run_dir), *args],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    up = cli("cluster", "up")
    try:
        assert up.returncode == 0, up.stderr
        status = cli("cluster", "status")
        assert status.returncode == 0, status.stdout + status.stderr
        for component in (
            "etcd",
            "kube-apiserver",
            "kube-scheduler",
            "kube-controller-manager",
            "kwok",
            "prometheus",
        ):
            assert f"{component} " in status.stdout
        kubeconfig = cli("cluster", "kubeconfig")
        assert kubeconfig.stdout.strip() == str(run_dir / "kubeconfig")
        assert (run_dir / "kubeconfig").exists()
    finally:
        down = cli("cluster", "down")
    assert down.returncode == 0 and "stopped" in down.stdout
    after = cli("cluster", "status")
    assert after.returncode == 1 and "no cluster recorded" in after.stdout
