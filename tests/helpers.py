"""Small helpers shared by tests (the simulated node exporter lives in apolloctl.sim_metrics)."""

from __future__ import annotations

import time
from typing import Any


def wait_for(predicate: Any, timeout: float = 60.0, interval: float = 0.2, what: str = "condition") -> Any:
    """Poll until `predicate()` returns something truthy and return it; fail with `what` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
