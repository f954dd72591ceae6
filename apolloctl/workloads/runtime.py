"""What every workload program needs around its computation: its volume, atomic files, signals, logs.

Kept apart from the programs so that each of them reads as its work and nothing else, and so that
the rules that make a checkpoint trustworthy (write a temporary file, fsync, rename, fsync the
directory) exist once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from apolloctl.workloads import CHECKPOINT_ENV, EXIT_USAGE


class UsageError(Exception):
    """The program cannot start as configured (missing volume, bad argument); exits EXIT_USAGE."""


def say(program: str, message: str) -> None:
    """One line on stdout, flushed at once: the container log is how a person follows a workload."""
    stamp = time.strftime("%H:%M:%S", time.localtime())
    print(f"{stamp} {program}: {message}", flush=True)


def checkpoint_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$CHECKPOINT_DIR`` as an existing, writable directory; UsageError naming the variable otherwise.

    The volume is the whole point of these programs: running without it would produce work that is
    lost on the first migration, so they refuse to start instead.
    """
    env = os.environ if environ is None else environ
    raw = env.get(CHECKPOINT_ENV, "").strip()
    if not raw:
        raise UsageError(f"{CHECKPOINT_ENV} is not set: this program keeps its state on the pod's checkpoint volume")
    path = Path(raw)
    if not path.is_dir():
        raise UsageError(f"{CHECKPOINT_ENV}={raw} is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"{CHECKPOINT_ENV}={raw} is not writable")
    return path


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (the entry itself lives in the directory)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a reader sees the old file or the new one, never a torn one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: Path, value: Mapping[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(value, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when it is missing or not a JSON object (a reader must not crash)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


class Termination:
    """SIGTERM/SIGINT set a flag that the program checks between units of work.

    A handler that saved a checkpoint itself could run in the middle of a half-finished step or of
    another checkpoint write; a flag lets the main loop finish the step, save once, and exit.
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self.received_at: float | None = None

    def install(self) -> Termination:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.signal is None:
            self.signal = signum
            self.received_at = time.monotonic()

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def sleep(self, seconds: float) -> bool:
        """Sleep up to `seconds` in short slices; True as soon as termination is requested."""
        deadline = time.monotonic() + seconds
        while not self.requested:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(remaining, 0.05))
        return True


def run_main(program: str, body: Any, argv: list[str] | None) -> int:
    """Run `body(argv)`; a UsageError becomes one line on stderr and EXIT_USAGE, not a traceback."""
    try:
        code: int = body(argv)
    except UsageError as exc:
        print(f"{program}: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    return code
