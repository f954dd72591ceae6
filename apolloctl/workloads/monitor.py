"""Monitor: keeps running beside the trainer and reports its progress from the shared volume.

Every ``--interval`` seconds it reads the trainer's ``progress.json`` and prints the step, the loss and
the rate since the last report, or what it is still waiting for. It never writes to the volume. On
SIGTERM it exits 0: it holds no state, so there is nothing to save and nothing to mark as failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from apolloctl.workloads import DATA_DIR, MANIFEST_FILE, PROGRESS_FILE, TRAINER_DIR
from apolloctl.workloads.runtime import Termination, UsageError, checkpoint_dir, read_json, run_main, say

PROGRAM = "monitor"


def describe(progress: dict[str, Any] | None, previous: dict[str, Any] | None, data_ready: bool) -> str:
    """One status line from the trainer's latest and previous progress records."""
    if progress is None:
        return "waiting for the trainer" if data_ready else "waiting for data-prep's dataset"
    step, loss = int(progress.get("step", 0)), float(progress.get("loss", float("nan")))
    line = f"trainer at step {step}, loss {loss:.4f}"
    resumed = int(progress.get("resumed_from", -1))
    if resumed >= 0:
        line += f" (resumed from {resumed})"
    if previous is not None and previous.get("pid") == progress.get("pid"):
        dt = float(progress.get("updated_at", 0.0)) - float(previous.get("updated_at", 0.0))
        if dt > 0:
            line += f", {(step - int(previous.get('step', 0))) / dt:.1f} steps/s"
    return line


def _main(argv: list[str] | None) -> int:
    p = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n\n")[0])
    p.add_argument("--interval", type=float, default=5.0, help="seconds between reports")
    args = p.parse_args(argv)
    if not args.interval > 0:
        raise UsageError(f"--interval must be > 0, got {args.interval}")
    root: Path = checkpoint_dir()
    term = Termination().install()
    previous: dict[str, Any] | None = None
    while True:
        progress = read_json(root / TRAINER_DIR / PROGRESS_FILE)
        say(PROGRAM, describe(progress, previous, (root / DATA_DIR / MANIFEST_FILE).exists()))
        previous = progress
        if term.sleep(args.interval):
            say(PROGRAM, f"signal {term.signal}: stopping")
            return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(PROGRAM, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
