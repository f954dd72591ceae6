"""The README's main job, end to end: its own local cluster, APOLLO, the extender, kube-scheduler."""

from __future__ import annotations

from pathlib import Path

import pytest

from apolloctl.demo import run_demo

pytestmark = pytest.mark.e2e


def test_demo_keeps_pods_off_the_node_apollo_predicts_will_overload(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_demo(tmp_path / "demo") == 0
    out = capsys.readouterr().out
    assert "node-0 score" in out and "(overload predicted)" in out
    assert "pods per node: node-0 0," in out and "cluster stopped" in out
