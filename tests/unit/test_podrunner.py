"""The pod runner's pure parts (pod spec to process, exit bookkeeping, terminal status) and its processes."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from apolloctl.cluster import configs
from apolloctl.podrunner.config import load_settings
from apolloctl.podrunner.ledger import Ledger, RunRecord, read_ledger
from apolloctl.podrunner.proc import LocalProcess, proc_cpu_seconds
from apolloctl.podrunner.spec import (
    Launch,
    Mount,
    PodInfo,
    SpecError,
    container_env,
    expand,
    format_exits,
    launch_for,
    mounts_for,
    parse_exits,
    pv_local_path,
    translate_path,
    volume_sources,
    with_exit,
)
from apolloctl.podrunner.status import Exit, exit_code_of, terminal_status
from apolloctl.podrunner.volumes import hostpath_pv
from common.settings import ConfigError


def _pod(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "metadata": {
            "name": "train-abc",
            "namespace": "ml",
            "uid": "u-1",
            "labels": {"app": "train"},
            "annotations": {configs.LOCAL_RUN_ANNOTATION: "true"},
        },
        "spec": {
            "nodeName": "node-1",
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "trainer",
                    "image": "apollo-stack:0.1.0",
                    "command": ["python", "-m", "apolloctl.workloads.trainer"],
                    "args": ["--out", "$(CHECKPOINT_DIR)/model", "$$(NOT_EXPANDED)", "$(UNKNOWN)"],
                    "env": [
                        {"name": "CHECKPOINT_DIR", "value": "/var/ckpt"},
                        {"name": "RUN", "value": "run-$(POD)"},
                        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                        {
                            "name": "CPUS",
                            "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1"}},
                        },
                        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
                    ],
                    "resources": {"limits": {"cpu": "1500m", "memory": "1Gi"}},
                    "volumeMounts": [
                        {"name": "apollo-checkpoint", "mountPath": "/var/ckpt"},
                        {"name": "scratch", "mountPath": "/var/ckpt/tmp"},
                        {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"},
                    ],
                }
            ],
            "volumes": [
                {"name": "apollo-checkpoint", "persistentVolumeClaim": {"claimName": "train-ckpt"}},
                {"name": "scratch", "emptyDir": {}},
                {"name": "kube-api-access", "projected": {"sources": []}},
            ],
            **spec,
        },
        "status": {"phase": "Running", "podIP": "10.244.0.5"},
    }
    return base


def _resolver(kind: str, namespace: str, name: str) -> dict[str, str] | None:
    return {"token": "s3cret"} if (kind, namespace, name) == ("Secret", "ml", "s") else None


def test_pod_info_reads_what_the_runner_acts_on() -> None:
    raw = _pod()
    raw["metadata"]["deletionTimestamp"] = "2030-01-01T00:00:00Z"
    raw["metadata"]["deletionGracePeriodSeconds"] = 7
    raw["status"]["containerStatuses"] = [
        {"name": "trainer", "state": {"terminated": {"exitCode": 143, "reason": "Error"}}, "restartCount": 0}
    ]
    info = PodInfo.from_json(raw)
    assert info.run_locally and info.deleting and info.grace_seconds == 7
    assert info.key == "ml/train-abc" and info.hostname == "train-abc"
    assert info.statuses["trainer"].state == "terminated" and info.statuses["trainer"].exit_code == 143
    assert not info.restarts(1)
    assert PodInfo.from_json(_pod(restartPolicy="OnFailure")).restarts(1)
    assert not PodInfo.from_json(_pod(restartPolicy="OnFailure")).restarts(0)
    assert PodInfo.from_json(_pod(restartPolicy="Always")).restarts(0)
    plain = _pod(terminationGracePeriodSeconds=45)
    plain["metadata"]["annotations"] = {}
    assert PodInfo.from_json(plain).grace_seconds == 45 and not PodInfo.from_json(plain).run_locally


def test_expand_follows_the_kubelet_rules() -> None:
    env = {"A": "1", "B": "x$(A)"}
    assert expand("$(A)-$(B)", env) == "1-x$(A)"  # no recursive expansion
    assert expand("$$(A) $(MISSING) $$", env) == "$(A) $(MISSING) $"


def test_launch_maps_python_volumes_and_environment(tmp_path: Path) -> None:
    info = PodInfo.from_json(_pod())
    dirs = {"apollo-checkpoint": tmp_path / "pv", "scratch": tmp_path / "empty"}
    launch = launch_for(
        info, info.containers[0], dirs, {"PATH": "/usr/bin", "SECRET_OF_RUNNER": "no"}, "/venv/py", _resolver
    )
    assert launch.argv == (
        "/venv/py",
        "-m",
        "apolloctl.workloads.trainer",
        "--out",
        f"{tmp_path / 'pv'}/model",
        "$(NOT_EXPANDED)",
        "$(UNKNOWN)",
    )
    env = launch.env
    assert env["CHECKPOINT_DIR"] == str(tmp_path / "pv")
    assert env["HOSTNAME"] == "train-abc" and env["PATH"] == "/usr/bin" and "SECRET_OF_RUNNER" not in env
    assert env["RUN"] == "run-$(POD)"  # POD is defined after RUN: not visible to it, as in Kubernetes
    assert env["POD"] == "train-abc" and env["APP"] == "train" and env["TOKEN"] == "s3cret"
    assert env["CPUS"] == "2"  # 1.5 cores rounded up, as the kubelet does
    # the longest mount wins; unmapped volumes (the token) are left alone
    assert translate_path("/var/ckpt/tmp/x", launch.mounts) == f"{tmp_path / 'empty'}/x"
    assert launch.local_path("/var/run/secrets/kubernetes.io/serviceaccount") is None
    assert launch.local_path("/var/ckptx") is None


def test_launch_refuses_what_it_cannot_honour(tmp_path: Path) -> None:
    info = PodInfo.from_json(_pod())
    no_cmd = {"name": "main", "image": "x"}
    with pytest.raises(SpecError, match="container main: no command"):
        launch_for(info, no_cmd, {}, {}, "py")
    missing_key = {
        "name": "m",
        "command": ["x"],
        "env": [{"name": "K", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}],
    }
    with pytest.raises(SpecError, match="env K: ConfigMap ml/c has no key 'k'"):
        launch_for(info, missing_key, {}, {}, "py", _resolver)
    optional = {
        "name": "m",
        "command": ["x"],
        "env": [{"name": "K", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k", "optional": True}}}],
    }
    assert "K" not in launch_for(info, optional, {}, {}, "py", _resolver).env
    odd_field = {
        "name": "m",
        "command": ["x"],
        "env": [{"name": "F", "valueFrom": {"fieldRef": {"fieldPath": "status.phase"}}}],
    }
    with pytest.raises(SpecError, match=r"fieldRef 'status\.phase' is not supported"):
        launch_for(info, odd_field, {}, {}, "py")
    escape = {"name": "m", "command": ["x"], "volumeMounts": [{"name": "v", "mountPath": "/d", "subPath": "../up"}]}
    with pytest.raises(SpecError, match="subPath"):
        mounts_for(escape, {"v": tmp_path})
    env_from = {"name": "m", "command": ["x"], "envFrom": [{"secretRef": {"name": "s"}, "prefix": "S_"}]}
    assert container_env(info, env_from, {}, _resolver)["S_token"] == "s3cret"


def test_volume_sources_and_pv_paths(tmp_path: Path) -> None:
    sources = volume_sources(PodInfo.from_json(_pod()))
    assert sources["apollo-checkpoint"].kind == "pvc" and sources["apollo-checkpoint"].claim == "train-ckpt"
    assert sources["scratch"].kind == "emptyDir" and sources["kube-api-access"].kind == "projected"
    pv = hostpath_pv("pv-a", tmp_path / "a", labels={"for": "x"})
    assert (tmp_path / "a").is_dir() and pv_local_path(pv) == str((tmp_path / "a").resolve())
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain" and pv["spec"]["storageClassName"] == ""
    assert pv_local_path({"spec": {"local": {"path": "/mnt/disk"}}}) == "/mnt/disk"
    assert pv_local_path({"spec": {"csi": {"driver": "x"}}}) is None
    mounts = mounts_for({"volumeMounts": [{"name": "v", "mountPath": "/data/", "subPath": "job1"}]}, {"v": tmp_path})
    assert mounts == (Mount("/data", tmp_path / "job1"),)


def test_exit_annotation_round_trip() -> None:
    assert parse_exits("loader, trainer=143,") == {"loader": 0, "trainer": 143}
    assert format_exits({"loader": 0, "trainer": 143}) == "loader,trainer=143"
    assert with_exit("loader", "trainer", 1) == "loader,trainer=1"
    assert with_exit("loader", "loader", 2) == "loader"  # the first report stands
    with pytest.raises(ValueError, match="bad exit code"):
        parse_exits("x=abc")


def test_terminal_status_is_what_a_kubelet_reports() -> None:
    raw = _pod()
    raw["spec"]["containers"] = [
        {"name": "data-prep", "image": "i"},
        {"name": "trainer", "image": "i"},
        {"name": "monitor", "image": "i"},
    ]
    raw["status"]["containerStatuses"] = [
        {
            "name": "data-prep",
            "restartCount": 0,
            "state": {
                "terminated": {
                    "exitCode": 0,
                    "reason": "Completed",
                    "startedAt": "2030-01-01T00:00:00Z",
                    "finishedAt": "2030-01-01T00:00:05Z",
                }
            },
        },
        {"name": "trainer", "restartCount": 0, "state": {"running": {}}},
        {"name": "monitor", "restartCount": 0, "state": {"running": {}}},
    ]
    patch = terminal_status(PodInfo.from_json(raw), {"trainer": Exit(143, 1e9, 1e9 + 60)}, 1e9 + 61)
    status = patch["status"]
    assert status["phase"] == "Failed"
    states = {c["name"]: c["state"]["terminated"] for c in status["containerStatuses"]}
    assert states["data-prep"] == {
        "exitCode": 0,
        "reason": "Completed",
        "startedAt": "2030-01-01T00:00:00Z",
        "finishedAt": "2030-01-01T00:00:05Z",
    }
    assert states["trainer"]["exitCode"] == 143 and states["trainer"]["reason"] == "Error"
    assert states["trainer"]["finishedAt"] == "2001-09-09T01:47:40Z"
    assert states["monitor"]["exitCode"] == 137 and states["monitor"]["reason"] == "ContainerStatusUnknown"
    assert {c["type"] for c in status["conditions"]} == {"Ready", "ContainersReady"}
    ok = terminal_status(PodInfo.from_json(raw), {"trainer": Exit(0, 1, 2), "monitor": Exit(0, 1, 2)}, 3)
    assert ok["status"]["phase"] == "Succeeded"
    assert exit_code_of(-signal.SIGTERM) == 143 and exit_code_of(3) == 3


def test_kwok_stages_leave_locally_run_pods_to_the_runner() -> None:
    stages = {s["metadata"]["name"]: s["spec"] for s in configs.kwok_config()}
    delete_keys = [e["key"] for e in stages["pod-delete"]["selector"]["matchExpressions"]]
    assert any(configs.LOCAL_RUN_ANNOTATION in k for k in delete_keys)
    template = stages["containers-complete"]["next"]["statusTemplate"]
    assert "reason: Error" in template and "phase: {{ if not $all }}Running" in template


# ---- processes ---------------------------------------------------------------------------------


def _launch(tmp_path: Path, *argv: str) -> Launch:
    return Launch("c", tuple(argv), {"PATH": "/usr/bin:/bin"}, tmp_path / "cwd")


def test_local_process_reports_cpu_time_and_exit_code(tmp_path: Path) -> None:
    busy = "import time\nt=time.process_time()\nwhile time.process_time()-t<0.3: pass\nraise SystemExit(4)"
    proc = LocalProcess(_launch(tmp_path, sys.executable, "-c", busy), tmp_path / "log" / "c.log")
    deadline = time.monotonic() + 30
    while proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert proc.exit_code == 4 and proc.poll() == 4
    assert proc.cpu_seconds >= 0.3 and proc.finished_at is not None
    assert (tmp_path / "cwd").is_dir() and "start:" in (tmp_path / "log" / "c.log").read_text()


def test_local_process_group_dies_together(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    proc = LocalProcess(_launch(tmp_path, "sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"), tmp_path / "c.log")
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    child = int(pidfile.read_text())
    assert proc.poll() is None and proc_cpu_seconds(proc.pid) is not None
    proc.signal_group(signal.SIGTERM)
    while proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert proc.exit_code == 128 + signal.SIGTERM
    time.sleep(0.2)
    stat = Path(f"/proc/{child}/stat")
    assert not stat.exists() or stat.read_text().split(") ")[1].startswith("Z")


def test_ledger_is_readable_from_another_process(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.json")
    rec = ledger.add(RunRecord("ml", "p", "u1", "n", "trainer", 1, cpu_seconds=1.5))
    ledger.add(RunRecord("ml", "p", "u1", "n", "data-prep", 1, cpu_seconds=2.0))
    ledger.add(RunRecord("ml", "q", "u2", "n", "trainer", 1, cpu_seconds=0.25))
    ledger.flush()
    assert ledger.cpu_seconds() == 3.75 and ledger.cpu_seconds(uid="u1") == 3.5
    assert ledger.cpu_seconds(container="trainer") == 1.75
    rec.exit_code = 143
    ledger.touch()
    ledger.flush()
    runs = read_ledger(tmp_path / "ledger.json")
    assert [r["container"] for r in runs] == ["trainer", "data-prep", "trainer"] and runs[0]["exit_code"] == 143
    assert json.loads((tmp_path / "ledger.json").read_text())["updated_at"] > 0
    assert read_ledger(tmp_path / "missing.json") == []


def test_settings_are_checked(tmp_path: Path) -> None:
    s = load_settings(environ={"PODRUNNER_ALLOWED_VOLUME_ROOTS": "/a,/b", "PODRUNNER_TICK_SECONDS": "0.5"})
    assert s.allowed_volume_roots == ("/a", "/b") and s.tick_seconds == 0.5
    with pytest.raises(ConfigError, match="allowed_volume_roots must list absolute paths"):
        load_settings(environ={"PODRUNNER_ALLOWED_VOLUME_ROOTS": "relative"})
    with pytest.raises(ConfigError, match="max_restart_backoff_seconds"):
        load_settings(environ={"PODRUNNER_RESTART_BACKOFF_SECONDS": "20", "PODRUNNER_MAX_RESTART_BACKOFF_SECONDS": "5"})


def test_cli_refuses_to_start_without_a_kubeconfig(tmp_path: Path) -> None:
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("PODRUNNER_")}
    done = subprocess.run(
        [sys.executable, "-m", "apolloctl.podrunner"], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 2 and "PODRUNNER_KUBECONFIG" in done.stderr
    env["PODRUNNER_KUBECONFIG"] = str(tmp_path / "nope")
    done = subprocess.run(
        [sys.executable, "-m", "apolloctl.podrunner"], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 2 and "does not exist" in done.stderr
    env["PODRUNNER_TICK_SECONDS"] = "-1"
    done = subprocess.run(
        [sys.executable, "-m", "apolloctl.podrunner"], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 2 and "tick_seconds" in done.stderr
