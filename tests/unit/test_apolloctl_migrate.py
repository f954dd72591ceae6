"""`apolloctl migrate` / `apolloctl migrations`: both backends give the API's answers, printed like kubectl.

The REST backend talks HTTP to the real Flask app (served on 127.0.0.1), the kubeconfig backend runs
the same service over the in-memory API server of `test_migration_api`; `--wait` is checked against a
migration whose steps appear one poll at a time.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from apollo_api.podmigration import Phase
from apolloctl.cli import build_parser
from apolloctl.migrate import _run, cmd_cancel, cmd_list, cmd_migrate, cmd_show
from apolloctl.migrate_backends import ApiError, Backend, KubeBackend, RestBackend
from apolloctl.migrate_views import age, follow, table
from common.http import ThreadedServer
from orchestrator.api.service import MigrationService
from tests.unit.test_migration_api import FakeCluster, Harness, make_harness, node, pod


@pytest.fixture
def world() -> FakeCluster:
    cluster = FakeCluster()
    for name in ("node-a", "node-b"):
        cluster.nodes[name] = node(name)
    cluster.add_pod(pod("train-0", namespace="default", owner=("Job", "train")))
    for i in range(2):
        cluster.add_pod(pod(f"w-{i}", namespace="default", labels={"app": "w"}))
    cluster.add_pod(pod("agent", namespace="default", labels={"app": "w"}, owner=("DaemonSet", "agent")))
    return cluster


@pytest.fixture
def harness(world: FakeCluster) -> Harness:
    return make_harness(world)


@pytest.fixture
def served(harness: Harness) -> Iterator[str]:
    server = ThreadedServer(harness.app, "127.0.0.1:0").start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


@pytest.fixture(params=["rest", "kube"])
def backend(request: pytest.FixtureRequest, world: FakeCluster) -> Backend:
    if request.param == "rest":
        url = request.getfixturevalue("served")
        return RestBackend(url, token="good")
    return KubeBackend(MigrationService(world), user="tester")


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def run(handler: Any, backend: Backend, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = handler(parse(*argv), backend, out)
    return code, out.getvalue()


def test_migrate_creates_and_prints_the_id(backend: Backend, world: FakeCluster) -> None:
    code, out = run(cmd_migrate, backend, "migrate", "train-0", "--to", "node-b")
    assert code == 0
    (obj,) = world.migrations.values()
    mid = f"default.{obj['metadata']['name']}"
    assert out.strip() == f"{mid}: migrating default/train-0 to node-b"
    assert obj["spec"]["targetNode"] == "node-b" and obj["spec"]["timeoutSeconds"] == 300


def test_migrate_refusal_is_an_api_error_naming_the_field(backend: Backend, world: FakeCluster) -> None:
    with pytest.raises(ApiError) as err:
        run(cmd_migrate, backend, "migrate", "train-0", "--to", "node-a")
    assert err.value.status == 422 and err.value.field == "target_node"
    with pytest.raises(ApiError) as err:
        run(cmd_migrate, backend, "migrate", "ghost", "--to", "node-b")
    assert err.value.status == 404 and err.value.field == "pod_name"
    assert world.migrations == {}


def test_batch_dry_run_prints_the_plan_and_skips(backend: Backend, world: FakeCluster) -> None:
    code, out = run(cmd_migrate, backend, "migrate", "--from", "node-a", "-l", "app=w", "--dry-run")
    assert code == 0 and world.migrations == {}
    lines = out.splitlines()
    assert lines[0] == "would move 2 pod(s) off node-a; 1 skipped; nothing was created"
    assert lines[1].split() == ["POD", "MIGRATION", "WAITS", "FOR"]
    assert lines[2].split() == ["default/w-0", "(dry", "run)", "-"]
    assert lines[-1].startswith("skipped default/agent: pod belongs to DaemonSet agent")


def test_batch_creates_one_migration_per_pod(backend: Backend, world: FakeCluster) -> None:
    code, out = run(cmd_migrate, backend, "migrate", "--from", "node-a", "-l", "app=w", "-n", "default")
    assert code == 0
    assert sorted(m["spec"]["podName"] for m in world.migrations.values()) == ["w-0", "w-1"]
    assert out.splitlines()[0].startswith("moving 2 pod(s) off node-a")


def test_list_show_cancel(backend: Backend, world: FakeCluster) -> None:
    run(cmd_migrate, backend, "migrate", "train-0", "--to", "node-b")
    (key,) = world.migrations
    name = key[1]
    code, out = run(cmd_list, backend, "migrations", "list")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["ID", "POD", "PHASE", "SOURCE", "TARGET", "AGE", "DURATION"]
    # The source is known once the controller has captured the pod (none here) unless the request named it.
    assert lines[1].split()[:5] == [f"default.{name}", "train-0", "Pending", "-", "node-b"]
    code, out = run(cmd_list, backend, "migrations", "list", "-n", "elsewhere")
    assert out.strip() == "No migrations found in namespace elsewhere."
    code, out = run(cmd_show, backend, "migrations", "show", name)
    assert f"ID:              default.{name}" in out and "Pod:             default/train-0" in out
    code, out = run(cmd_cancel, backend, "migrations", "cancel", f"default.{name}")
    assert code == 0 and out.startswith(f"default.{name}: cancelled (Cancelled)")
    assert world.migrations[key]["status"]["phase"] == Phase.CANCELLED


def test_rest_backend_reports_401_with_the_servers_message(served: str) -> None:
    with pytest.raises(ApiError) as err:
        RestBackend(served, token="").list({})
    assert err.value.status == 401 and "bearer token" in err.value.message


def test_unreachable_server_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("migrations", "list", "--server", "http://127.0.0.1:9")
    assert _run(cmd_list)(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("apolloctl: cannot reach http://127.0.0.1:9") and "Traceback" not in err


def test_neither_server_nor_kubeconfig_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("APOLLO_API_URL", raising=False)
    assert _run(cmd_list)(parse("migrations", "list")) == 2
    assert "nowhere to go" in capsys.readouterr().err


def test_pod_and_selector_together_are_refused(backend: Backend) -> None:
    with pytest.raises(ApiError, match="not both"):
        run(cmd_migrate, backend, "migrate", "train-0", "--from", "node-a", "-l", "a=b")
    with pytest.raises(ApiError, match="--from NODE with -l"):
        run(cmd_migrate, backend, "migrate", "-l", "a=b")


class Scripted:
    """A backend whose migration advances one recorded step per GET, as a controller would."""

    def __init__(self, final: str) -> None:
        self.final = final
        self.polls = 0
        self.steps = ["accepted", "captured", "evicted", "running", "finished"]

    def get(self, migration_id: str) -> dict[str, Any]:
        self.polls += 1
        shown = self.steps[: min(self.polls, len(self.steps))]
        done = len(shown) == len(self.steps)
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        steps = [
            {"step": s, "time": (t0 + timedelta(seconds=i)).isoformat(), "seconds_since_previous": 1.0 if i else None}
            for i, s in enumerate(shown)
        ]
        phase = {0: Phase.PENDING, 1: Phase.PENDING, 2: Phase.CAPTURING, 3: Phase.EVICTING, 4: Phase.RESCHEDULING}
        status = self.final if done else "running"
        return {
            "migration_id": migration_id,
            "status": status,
            "phase": {"completed": Phase.SUCCEEDED, "failed": Phase.FAILED}[self.final] if done else phase[len(shown)],
            "message": "" if not done else f"{self.final} message",
            "details": {"steps": steps, "duration": 4.0, "new_pod_name": "p-2", "replacement_node": "node-b"},
        }


@pytest.mark.parametrize(("final", "code"), [("completed", 0), ("failed", 1)])
def test_wait_prints_each_step_once_and_exits_by_outcome(final: str, code: int) -> None:
    out = io.StringIO()
    backend: Any = Scripted(final)
    assert follow(backend, "ns.m", out, sleep=lambda s: None) == code
    text = out.getvalue()
    for step in ("accepted", "captured", "evicted", "running", "finished"):
        assert text.count(f"  {step} ") == 1, text
    assert text.index("captured") < text.index("evicted") < text.index("running")
    assert "phase Evicting" in text
    if final == "completed":
        assert text.strip().endswith("ns.m completed in 4.0s: p-2 on node-b")
    else:
        assert text.strip().endswith("ns.m failed")


def test_wait_gives_up_after_its_timeout() -> None:
    class Stuck:
        def get(self, migration_id: str) -> dict[str, Any]:
            return {"migration_id": migration_id, "status": "running", "phase": Phase.EVICTING, "details": {}}

    ticks = iter(range(100))
    out = io.StringIO()
    stuck: Any = Stuck()
    assert follow(stuck, "ns.m", out, timeout=5, clock=lambda: float(next(ticks)), sleep=lambda s: None) == 1
    assert "still Evicting after 5s" in out.getvalue()


def test_age_and_table_read_like_kubectl() -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    assert [age((now - timedelta(seconds=s)).isoformat(), now) for s in (5, 119, 120, 7199, 7200, 172800)] == [
        "5s",
        "119s",
        "2m",
        "119m",
        "2h",
        "2d",
    ]
    assert age(None, now) == "<unknown>"
    assert table([["a", "bb"], ["ccc", "d"]], ("X", "Y")) == "X     Y\na     bb\nccc   d"
