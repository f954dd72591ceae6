"""The story's and the migration benchmark's pure parts: the seed's Job, the load model, the figures."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from apollo_api.podmigration import CHECKPOINT_LABEL
from apolloctl.cluster.configs import LOCAL_RUN_ANNOTATION
from apolloctl.scenario import (
    APP,
    APP_LABEL,
    NODE_CPU,
    LoadModel,
    WorkloadShape,
    demo_apollo_settings,
    pod_requests,
    seed_job,
    story_apollo_settings,
)
from bench.migration_results import _quantile, markdown, summarise
from bench.migration_runs import Run, _duration


def _template(job: dict[str, Any]) -> dict[str, Any]:
    template: dict[str, Any] = job["spec"]["template"]
    return template


def test_seed_job_opted_in() -> None:
    job = seed_job("train", WorkloadShape(samples=100, steps_per_second=5, checkpoint_seconds=1.5))
    t = _template(job)
    assert "nodeSelector" not in t["spec"]
    assert _template(seed_job(node_selector={"a": "b"}))["spec"]["nodeSelector"] == {"a": "b"}
    assert t["metadata"]["labels"] == {APP_LABEL: APP, CHECKPOINT_LABEL: "true"}
    assert t["metadata"]["annotations"] == {LOCAL_RUN_ANNOTATION: "true"}
    spec = t["spec"]
    assert spec["restartPolicy"] == "Never" and "volumes" not in spec  # the webhook attaches the claim
    assert [c["name"] for c in spec["containers"]] == ["data-prep", "trainer", "monitor"]
    trainer = spec["containers"][1]
    assert trainer["command"][:3] == ["python", "-m", "apolloctl.workloads.trainer"]
    assert "--checkpoint-seconds" in trainer["command"] and "1.5" in trainer["command"]
    assert all("env" not in c for c in spec["containers"])
    # an eviction never counts against the Job
    (rule,) = job["spec"]["podFailurePolicy"]["rules"]
    assert rule == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
    assert job["spec"]["backoffLimit"] == 0


def test_native_job_keeps_its_state_on_an_emptydir() -> None:
    spec = _template(seed_job("nat", checkpoint=False))["spec"]
    assert CHECKPOINT_LABEL not in _template(seed_job("nat", checkpoint=False))["metadata"]["labels"]
    assert spec["volumes"] == [{"name": "scratch", "emptyDir": {}}]
    for c in spec["containers"]:
        assert c["env"] == [{"name": "CHECKPOINT_DIR", "value": "/scratch"}]
        assert c["volumeMounts"] == [{"name": "scratch", "mountPath": "/scratch"}]


def test_requests_of_the_pod_and_of_its_replacement() -> None:
    pod = {"spec": _template(seed_job())["spec"]}
    cpu, mem = pod_requests(pod)
    assert cpu == pytest.approx(2.1) and mem == pytest.approx((1 + 1 + 0.125) * 2**30)
    replacement = {"spec": {"containers": pod["spec"]["containers"][1:]}}
    assert pod_requests(replacement)[0] == pytest.approx(1.1)


class _Raw:
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.data = json.dumps({"items": items}).encode()


class _Core:
    """The one call LoadModel makes, answering with pods as the API server would (raw JSON)."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.selectors: list[str] = []

    def list_pod_for_all_namespaces(self, label_selector: str, _preload_content: bool) -> _Raw:
        self.selectors.append(label_selector)
        return _Raw(self.items)


def _pod(node: str, phase: str = "Running") -> dict[str, Any]:
    return {"spec": {"nodeName": node, **_template(seed_job())["spec"]}, "status": {"phase": phase}}


def test_load_model_adds_scenario_pods_and_ramps() -> None:
    core = _Core([_pod("a"), _pod("b", phase="Pending")])
    exporter = SimpleNamespace(cpu={}, memory={})
    load = LoadModel(core, exporter, {"a": (0.2, 0.1), "b": (0.3, 0.1)}, noise=0.0, capacity={"b": (4.0, 2.0**34)})  # type: ignore[arg-type]
    assert core.selectors == [f"{APP_LABEL}={APP}"]
    assert exporter.cpu["a"] == pytest.approx(0.2 + 2.1 / NODE_CPU, abs=1e-4)
    assert exporter.cpu["b"] == pytest.approx(0.3)  # a Pending pod uses nothing yet
    ramp = load.ramp("b", per_second=0.1, peak=0.9)
    ramp.t0 -= 100  # long past: the ramp has reached its peak
    load.run_once()
    assert exporter.cpu["b"] == pytest.approx(0.9)
    core.items = [_pod("b")]  # the pod moved: its load goes with it, as a share of its new node
    load.run_once()
    assert exporter.cpu["a"] == pytest.approx(0.2) and exporter.cpu["b"] == 1.0  # 0.9 + 2.1/4, clamped
    assert len(load.history) == 3


def test_load_model_noise_is_seeded_and_small() -> None:
    def series(seed: int) -> list[float]:
        exporter = SimpleNamespace(cpu={}, memory={})
        load = LoadModel(_Core([]), exporter, {"a": (0.5, 0.5)}, noise=0.01, seed=seed)  # type: ignore[arg-type]
        out = []
        for _ in range(50):
            load.run_once()
            out.append(exporter.cpu["a"])
        return out

    a, b = series(1), series(1)
    assert a == b and series(2) != a
    assert max(abs(v - 0.5) for v in a) < 0.1 and len(set(a)) > 10


def test_story_settings_are_valid_apollo_settings(tmp_path: Path) -> None:
    from apollo.config import ApolloSettings
    from common.settings import build

    settings = story_apollo_settings("http://127.0.0.1:9090", tmp_path / "kubeconfig")
    built = build(ApolloSettings, settings)
    assert built.kubernetes.enabled and built.policy.require_checkpoint
    demo = demo_apollo_settings({"prometheus": settings["prometheus"], "forecast": {"step_seconds": 1.0}}, tmp_path)
    assert demo["forecast"] == {"step_seconds": 1.0, "mode": "predictive", "warmup_samples": 5}
    assert demo["policy"] == settings["policy"]
    build(ApolloSettings, demo)


# ---- the benchmark's figures ------------------------------------------------------------------------


def _run(kind: str, **kw: Any) -> Run:
    base: dict[str, Any] = {"job": "j", "pod": "p", "source": "n0", "pre_step": 100}
    return Run(kind, **(base | kw))


def test_summary_compares_the_two_paths() -> None:
    runs = [
        _run("migration", evict_to_running_s=10.0, back_to_step_s=11.0, cpu_seconds=0.4, cpu_request=1.1,
             memory_request=1.0, phase="Succeeded", resumed_from=180, last_checkpoint=180, claim_bound=True,
             migration_duration_s=12.0),
        _run("migration", evict_to_running_s=12.0, back_to_step_s=13.0, cpu_seconds=0.6, cpu_request=1.1,
             memory_request=1.0, phase="Failed", resumed_from=-1, last_checkpoint=150, claim_bound=False,
             migration_duration_s=30.0),
        _run("native", evict_to_running_s=10.0, back_to_step_s=22.0, cpu_seconds=2.0, cpu_request=2.1,
             memory_request=2.0),
        _run("native", evict_to_running_s=10.4, back_to_step_s=26.0, cpu_seconds=2.0, cpu_request=2.1,
             memory_request=2.0),
    ]  # fmt: skip
    r = summarise(runs, WorkloadShape(), quick=True, wall_s=100.0)
    assert r["migrations"] == 2 and r["succeeded"] == 1
    assert r["evict_to_running_p50_s"] == 11.0 and r["native_evict_to_running_p50_s"] == 10.2
    assert r["cpu_request_saving"] == pytest.approx(1 - 1.1 / 2.1, abs=1e-3)
    assert r["memory_request_saving"] == 0.5
    assert r["cpu_seconds_saving"] == 0.75
    assert r["cold_start_reduction"] == pytest.approx(1 - 12.0 / 24.0, abs=1e-3)
    assert r["resumed_from_checkpoint"] == 1 and r["lost_checkpoints"] == 1 and r["lost_pvcs"] == 1
    assert r["max_migration_duration_s"] == 30.0 and r["migration_ttl_s"] == 300.0
    assert len(r["runs"]) == 4 and r["machine"]["cpus"]
    table = markdown(r)
    assert "| migrations succeeded | 1 / 2 |" in table and "--quick" in table and "CPUs" in table


def test_quantiles_and_durations() -> None:
    assert _quantile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert _quantile([1.0, 2.0], 0.95) == pytest.approx(1.95)
    assert math.isnan(_quantile([math.nan], 0.5))
    assert _duration("13.8s") == 13.8 and _duration("1m2.5s") == 62.5 and _duration("1h") == 3600
