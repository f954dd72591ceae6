"""Settings of the local pod runner (``PODRUNNER_*`` variables, or a YAML file with ``--config``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.settings import LOG_LEVEL, ConfigError, Validated, in_range, load, non_empty, non_negative, setting


def _absolute_paths() -> Any:
    def check(name: str, value: Any) -> None:
        for item in value:
            if not isinstance(item, str) or not item.startswith("/"):
                raise ConfigError(f"{name} must list absolute paths, got {item!r}")

    return check


@dataclass(frozen=True)
class RunnerSettings(Validated):
    kubeconfig: str = setting(
        "",
        "The runner talks to the local control plane as its admin; empty means in-cluster credentials, "
        "which a development tool never has, so the CLI requires it.",
    )
    state_dir: str = setting(
        ".run/podrunner",
        "Container logs, per-pod scratch directories (emptyDir, working directories) and ledger.json; "
        "inside the cluster's run directory when the demo starts the runner.",
        non_empty(),
    )
    namespace: str = setting(
        "",
        "Empty watches every namespace: the scenario annotation already selects the pods, and a "
        "migration may move a workload's pods across names but never across namespaces.",
    )
    tick_seconds: float = setting(
        0.2,
        "How often exits are reaped, deadlines checked and pod events applied: a kubelet's PLEG relists "
        "every second; 0.2 s keeps a completed container's report and a deletion's SIGTERM prompt.",
        in_range(0.01, 5.0),
    )
    python: str = setting(
        "",
        "Interpreter for containers whose command is `python`/`python3`; empty means the runner's own, "
        "the virtualenv that has the project installed, as the image's Python does.",
    )
    allowed_volume_roots: tuple[str, ...] = setting(
        (),
        "hostPath/local PV directories must lie under one of these (the cluster's run directory when "
        "the demo starts the runner); empty allows any, as a kubelet would.",
        _absolute_paths(),
    )
    restart_backoff_seconds: float = setting(
        10.0,
        "First delay before restarting a container of a restartPolicy Always/OnFailure pod: the "
        "kubelet's crash-loop back-off starts at 10 s and doubles.",
        in_range(0.0, 300.0),
    )
    max_restart_backoff_seconds: float = setting(
        300.0,
        "Ceiling of the doubling restart back-off: the kubelet's is five minutes.",
        in_range(0.0, 3600.0),
    )
    shutdown_grace_seconds: float = setting(
        10.0,
        "When the runner itself stops, its processes get SIGTERM and this long to save state before SIGKILL.",
        non_negative(),
    )
    log_level: str = setting("INFO", "Starts and stops of processes are worth a line each.", LOG_LEVEL)

    def check_relations(self) -> None:
        if self.max_restart_backoff_seconds < self.restart_backoff_seconds:
            raise ConfigError("max_restart_backoff_seconds must be >= restart_backoff_seconds")

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir)


def load_settings(path: Path | None = None, environ: dict[str, str] | None = None) -> RunnerSettings:
    return load(RunnerSettings, "PODRUNNER", path, environ)
