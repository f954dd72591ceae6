"""Trainer: logistic regression by minibatch gradient descent, checkpointed, resumable, honest about it.

Each step draws a minibatch from a generator seeded by (seed, step) and takes one gradient step, so
training is a pure function of the dataset, the arguments and the step number: a run resumed from
the checkpoint of step N continues exactly as an uninterrupted run would have.

Behaviour a migration relies on:

* it waits for data-prep's ``data/manifest.json``, then verifies the dataset against its fingerprint;
* at start it loads the newest checkpoint that verifies (refused ones are named on stdout, with the
  reason, and the next older one is tried), writes ``$CHECKPOINT_DIR/resumed-from.json`` and prints
  ``resumed from step N`` or ``starting from scratch``; -1 means scratch, so a replacement that lost
  its state is visible;
* it checkpoints every ``--checkpoint-seconds`` and, on SIGTERM, once more before it exits with 143:
  an interrupted trainer is not a finished one, and a Job must not count it as succeeded; after each
  checkpoint it rewrites ``$CHECKPOINT_DIR/checkpoint-step.json`` (the step the checkpoint holds);
* after ``--steps`` steps (0 = no limit) it checkpoints and exits 0.

``--steps-per-second`` paces the loop the way a data loader or an accelerator would; the CPU time
measured is then the computation's alone.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one core per container, measured as such
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import numpy.typing as npt

from apolloctl.workloads import (
    CHECKPOINT_STEP_FILE,
    DATA_DIR,
    DATASET_FILE,
    EXIT_TERMINATED,
    MANIFEST_FILE,
    PROGRESS_FILE,
    RESUMED_FROM_FILE,
    TRAINER_DIR,
)
from apolloctl.workloads.checkpoint import Checkpoint, CheckpointStore
from apolloctl.workloads.dataprep import fingerprint
from apolloctl.workloads.runtime import (
    Termination,
    UsageError,
    atomic_write_json,
    checkpoint_dir,
    read_json,
    run_main,
    say,
)

PROGRAM = "trainer"
FloatArray = npt.NDArray[np.float64]
PROGRESS_INTERVAL_SECONDS = 0.5


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 0
    batch: int = 2048
    learning_rate: float = 0.5
    l2: float = 1e-4
    seed: int = 11
    checkpoint_seconds: float = 3.0
    keep: int = 3
    steps_per_second: float = 0.0
    data_timeout_seconds: float = 600.0

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise UsageError(f"--steps must be >= 0, got {self.steps}")
        if self.batch < 1:
            raise UsageError(f"--batch must be >= 1, got {self.batch}")
        if not (self.learning_rate > 0 and np.isfinite(self.learning_rate)):
            raise UsageError(f"--learning-rate must be > 0, got {self.learning_rate}")
        if not (self.l2 >= 0 and np.isfinite(self.l2)):
            raise UsageError(f"--l2 must be >= 0, got {self.l2}")
        if not self.checkpoint_seconds > 0:
            raise UsageError(f"--checkpoint-seconds must be > 0, got {self.checkpoint_seconds}")
        if self.keep < 1:
            raise UsageError(f"--keep must be >= 1, got {self.keep}")
        if self.steps_per_second < 0:
            raise UsageError(f"--steps-per-second must be >= 0, got {self.steps_per_second}")
        if self.data_timeout_seconds <= 0:
            raise UsageError(f"--data-timeout must be > 0, got {self.data_timeout_seconds}")


def _sigmoid(z: FloatArray) -> FloatArray:
    out: FloatArray = 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic
    return out


def sgd_step(x: FloatArray, y: FloatArray, w: FloatArray, step: int, cfg: TrainConfig) -> tuple[FloatArray, float]:
    """Step number `step`: one gradient step on its minibatch; returns new weights and the batch loss."""
    rng = np.random.default_rng([cfg.seed, step])
    idx = rng.integers(0, x.shape[0], size=min(cfg.batch, x.shape[0]))
    xb, yb = x[idx], y[idx]
    p = _sigmoid(xb @ w)
    eps = 1e-12
    loss = float(-np.mean(yb * np.log(p + eps) + (1 - yb) * np.log(1 - p + eps)) + 0.5 * cfg.l2 * float(w @ w))
    grad = xb.T @ (p - yb) / len(idx) + cfg.l2 * w
    return w - cfg.learning_rate * grad, loss


def train(x: FloatArray, y: FloatArray, w: FloatArray, start: int, stop: int, cfg: TrainConfig) -> FloatArray:
    """Steps [start, stop) without I/O: the reference a resumed run must reproduce."""
    for step in range(start, stop):
        w, _ = sgd_step(x, y, w, step, cfg)
    return w


def accuracy(x: FloatArray, y: FloatArray, w: FloatArray) -> float:
    return float(np.mean((x @ w > 0) == (y > 0.5)))


def load_dataset(data_dir: Path) -> tuple[FloatArray, FloatArray, str]:
    """The dataset data-prep finished, verified against its manifest; UsageError when it does not match."""
    manifest = read_json(data_dir / MANIFEST_FILE)
    if manifest is None:
        raise UsageError(f"no readable {MANIFEST_FILE} in {data_dir}")
    try:
        with np.load(data_dir / DATASET_FILE, allow_pickle=False) as npz:
            x = np.asarray(npz["X"], dtype=np.float64)
            y = np.asarray(npz["y"], dtype=np.float64)
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"dataset {data_dir / DATASET_FILE} is unreadable: {exc}") from exc
    fp = fingerprint(x, y)
    if fp != manifest.get("fingerprint"):
        raise UsageError(f"dataset {data_dir / DATASET_FILE} does not match its manifest's fingerprint")
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise UsageError(f"dataset has shapes X {x.shape}, y {y.shape}")
    return x, y, fp


def wait_for_dataset(data_dir: Path, timeout: float, term: Termination) -> tuple[FloatArray, FloatArray, str] | None:
    """Wait for data-prep's manifest (it runs beside us in the same pod); None on termination."""
    deadline = time.monotonic() + timeout
    announced = False
    while not (data_dir / MANIFEST_FILE).exists():
        if not announced:
            say(PROGRAM, f"waiting for data-prep's dataset in {data_dir}")
            announced = True
        if time.monotonic() > deadline:
            raise UsageError(f"no dataset in {data_dir} after {timeout:.0f}s (is data-prep running?)")
        if term.sleep(0.2):
            return None
    return load_dataset(data_dir)


def _parse(argv: list[str] | None) -> TrainConfig:
    p = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n\n")[0])
    d = TrainConfig()
    p.add_argument("--steps", type=int, default=d.steps, help="stop after this many steps (0: until stopped)")
    p.add_argument("--batch", type=int, default=d.batch, help="minibatch rows per step (the work per step)")
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--l2", type=float, default=d.l2, help="L2 regularisation")
    p.add_argument("--seed", type=int, default=d.seed, help="minibatch sampling seed")
    p.add_argument("--checkpoint-seconds", type=float, default=d.checkpoint_seconds, help="checkpoint period")
    p.add_argument("--keep", type=int, default=d.keep, help="checkpoints kept (older ones are deleted)")
    p.add_argument("--steps-per-second", type=float, default=d.steps_per_second, help="pace (0: as fast as CPU)")
    p.add_argument("--data-timeout", type=float, default=d.data_timeout_seconds, help="seconds to wait for data")
    a = p.parse_args(argv)
    return TrainConfig(
        steps=a.steps,
        batch=a.batch,
        learning_rate=a.learning_rate,
        l2=a.l2,
        seed=a.seed,
        checkpoint_seconds=a.checkpoint_seconds,
        keep=a.keep,
        steps_per_second=a.steps_per_second,
        data_timeout_seconds=a.data_timeout,
    )


def main(argv: list[str] | None = None) -> int:
    return run_main(PROGRAM, _main, argv)


def _main(argv: list[str] | None) -> int:
    cfg = _parse(argv)
    root = checkpoint_dir()
    term = Termination().install()
    pod = os.environ.get("HOSTNAME") or socket.gethostname()
    started_at = time.time()
    loaded = wait_for_dataset(root / DATA_DIR, cfg.data_timeout_seconds, term)
    if loaded is None:
        say(PROGRAM, "terminated while waiting for data; no state to save")
        return EXIT_TERMINATED
    x, y, fp = loaded
    store = CheckpointStore(root / TRAINER_DIR, keep=cfg.keep)
    ck, path, refused = store.load_latest(features=x.shape[1], fingerprint=fp)
    for r in refused:
        say(PROGRAM, f"WARNING: refusing checkpoint {r.file}: {r.reason}; falling back to an older one")
    if ck is not None and path is not None:
        step, w, loss = ck.step, ck.weights, ck.loss
        say(PROGRAM, f"resumed from step {step} (checkpoint {path.name}, loss {loss:.4f})")
    else:
        step, w, loss = 0, np.zeros(x.shape[1]), float("nan")
        say(PROGRAM, "starting from scratch: no usable checkpoint" + (f" ({len(refused)} refused)" if refused else ""))
    resumed_from = step if ck is not None else -1
    atomic_write_json(
        root / RESUMED_FROM_FILE,
        {
            "resumed_from": resumed_from,
            "checkpoint": path.name if path is not None else None,
            "refused": [{"file": r.file, "reason": r.reason} for r in refused],
            "pod": pod,
            "pid": os.getpid(),
            "started_at": started_at,
            "written_at": time.time(),
        },
    )

    def save() -> None:
        path = store.save(Checkpoint(step=step, weights=w, loss=loss, fingerprint=fp, extra={"pod": pod}))
        atomic_write_json(
            root / CHECKPOINT_STEP_FILE,
            {
                "step": step,
                "checkpoint": path.name,
                "pod": pod,
                "pid": os.getpid(),
                "started_at": started_at,
                "written_at": time.time(),
            },
        )

    def progress(final: bool = False) -> None:
        atomic_write_json(
            root / TRAINER_DIR / PROGRESS_FILE,
            {
                "step": step,
                "loss": loss,
                "resumed_from": resumed_from,
                "cpu_seconds": time.process_time(),
                "pod": pod,
                "pid": os.getpid(),
                "updated_at": time.time(),
                "final": final,
            },
        )

    saved_step = step
    last_save = last_progress = time.monotonic()
    pace = 1.0 / cfg.steps_per_second if cfg.steps_per_second else 0.0
    next_slot = time.monotonic()
    while not term.requested and (cfg.steps == 0 or step < cfg.steps):
        w, loss = sgd_step(x, y, w, step, cfg)
        step += 1
        now = time.monotonic()
        if now - last_save >= cfg.checkpoint_seconds:
            save()
            saved_step, last_save = step, now
        if now - last_progress >= PROGRESS_INTERVAL_SECONDS:
            progress()
            last_progress = now
        if pace:
            next_slot = max(next_slot + pace, now - pace)  # no burst to "catch up" after a stall
            term.sleep(next_slot - now)
    if step != saved_step:
        save()
    progress(final=True)
    if term.requested:
        say(PROGRAM, f"signal {term.signal}: checkpointed step {step} (loss {loss:.4f}); exiting {EXIT_TERMINATED}")
        return EXIT_TERMINATED
    say(PROGRAM, f"finished {step} steps: loss {loss:.4f}, accuracy {accuracy(x, y, w):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
