"""The one error type the local control plane raises: it always names a component and its log."""

from __future__ import annotations

from pathlib import Path


class ComponentError(RuntimeError):
    """A component could not be built, started or reached.

    The message is one line naming the component and the log file to read, because that is the
    first thing a developer needs when start-up fails in CI.
    """

    def __init__(self, component: str, problem: str, log: Path | None = None) -> None:
        self.component = component
        self.problem = problem
        self.log = log
        where = f"; see {log}" if log is not None else ""
        super().__init__(f"{component}: {problem}{where}")
