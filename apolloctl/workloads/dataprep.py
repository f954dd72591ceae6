"""Data preparation: turn raw signals into a feature table on the checkpoint volume, then exit 0.

The work is fixed by the arguments and real: `samples` synthetic signals (a few sinusoids plus
noise, generated chunk by chunk from a seed) go through an FFT, their power spectrum is binned into
`features` log-power features, and the table is standardised. The label says whether the dominant
frequency lies in the upper half of the band (with a little label noise), which a linear model on
these features can learn. CPU time scales with ``samples x signal_length x log(signal_length)``
while the output stays small, so a scenario can make preparation as costly as it wants without
filling a disk.

Output (``$CHECKPOINT_DIR/data/``): ``dataset.npz`` (``X`` float64, ``y`` float64) and then
``manifest.json``, whose presence means the dataset is complete; its ``fingerprint`` is a SHA-256 of
the arrays' contents (not of the file, whose zip timestamps vary), so a re-run with the same
arguments produces the same fingerprint and a trainer can tell whether its checkpoints belong to
this data.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import socket
import sys
import time
from dataclasses import dataclass

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one core per container, measured as such
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import numpy.typing as npt

from apolloctl.workloads import DATA_DIR, DATASET_FILE, EXIT_TERMINATED, MANIFEST_FILE
from apolloctl.workloads.runtime import (
    Termination,
    UsageError,
    atomic_write_bytes,
    atomic_write_json,
    checkpoint_dir,
    run_main,
    say,
)

PROGRAM = "data-prep"
# Signals per batch: bounds memory (about 25 MB at 1,024 samples per signal). Each batch draws from its
# own generator seeded by (seed, first row), so the output depends on the arguments alone.
CHUNK = 1024
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class PrepConfig:
    samples: int = 20_000
    signal_length: int = 1024
    features: int = 32
    seed: int = 7
    label_noise: float = 0.05

    def __post_init__(self) -> None:
        if self.samples < 2:
            raise UsageError(f"--samples must be >= 2, got {self.samples}")
        if self.signal_length < 16:
            raise UsageError(f"--signal-length must be >= 16, got {self.signal_length}")
        bins = self.signal_length // 2 + 1
        if not 2 <= self.features <= bins:
            raise UsageError(f"--features must be in [2, {bins}] for --signal-length {self.signal_length}")
        if not 0.0 <= self.label_noise < 0.5:
            raise UsageError(f"--label-noise must be in [0, 0.5), got {self.label_noise}")


def fingerprint(x: FloatArray, y: FloatArray) -> str:
    """SHA-256 of the arrays' shapes and contents: equal data, equal fingerprint, whatever the file."""
    h = hashlib.sha256()
    for arr in (x, y):
        h.update(str(arr.shape).encode())
        h.update(np.ascontiguousarray(arr, dtype=np.float64).tobytes())
    return h.hexdigest()


def _signals(rng: np.random.Generator, count: int, length: int) -> tuple[FloatArray, FloatArray]:
    """`count` signals of 3 sinusoids plus noise, and each one's dominant frequency (cycles per sample)."""
    t = np.arange(length, dtype=np.float64)
    freqs = rng.uniform(0.01, 0.49, size=(count, 3))
    amps = rng.uniform(0.2, 1.0, size=(count, 3))
    amps[np.arange(count), rng.integers(0, 3, size=count)] = 1.5  # one clearly dominant component
    phases = rng.uniform(0.0, 2 * np.pi, size=(count, 3))
    waves = amps[:, :, None] * np.sin(2 * np.pi * freqs[:, :, None] * t[None, None, :] + phases[:, :, None])
    noise = rng.standard_normal((count, length)) * 0.5
    dominant = freqs[np.arange(count), np.argmax(amps, axis=1)]
    return waves.sum(axis=1) + noise, dominant


def featurize(signals: FloatArray, features: int) -> FloatArray:
    """Binned log power spectrum: `features` contiguous frequency bands, mean power per band."""
    power = np.abs(np.fft.rfft(signals, axis=1)) ** 2
    edges = np.linspace(0, power.shape[1], features + 1).astype(int)
    bands = np.add.reduceat(power, edges[:-1], axis=1) / np.diff(edges)[None, :]
    return np.log1p(bands)


def prepare(cfg: PrepConfig, term: Termination | None = None) -> tuple[FloatArray, FloatArray] | None:
    """The feature table and labels; None when termination was requested part-way."""
    x = np.empty((cfg.samples, cfg.features), dtype=np.float64)
    y = np.empty(cfg.samples, dtype=np.float64)
    for start in range(0, cfg.samples, CHUNK):
        if term is not None and term.requested:
            return None
        rng = np.random.default_rng([cfg.seed, start])
        count = min(CHUNK, cfg.samples - start)
        signals, dominant = _signals(rng, count, cfg.signal_length)
        x[start : start + count] = featurize(signals, cfg.features)
        labels = dominant > 0.25
        flip = rng.random(count) < cfg.label_noise
        y[start : start + count] = np.where(flip, ~labels, labels).astype(np.float64)
    std = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return x, y


def _parse(argv: list[str] | None) -> PrepConfig:
    p = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n\n")[0])
    d = PrepConfig()
    p.add_argument("--samples", type=int, default=d.samples, help="signals to featurise (the amount of work)")
    p.add_argument("--signal-length", type=int, default=d.signal_length, help="samples per signal")
    p.add_argument("--features", type=int, default=d.features, help="frequency bands = feature columns")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--label-noise", type=float, default=d.label_noise)
    a = p.parse_args(argv)
    return PrepConfig(a.samples, a.signal_length, a.features, a.seed, a.label_noise)


def main(argv: list[str] | None = None) -> int:
    return run_main(PROGRAM, _main, argv)


def _main(argv: list[str] | None) -> int:
    cfg = _parse(argv)
    root = checkpoint_dir()
    term = Termination().install()
    out = root / DATA_DIR
    out.mkdir(parents=True, exist_ok=True)
    # A previous, interrupted or different run must not be mistaken for this one's output.
    (out / MANIFEST_FILE).unlink(missing_ok=True)
    say(PROGRAM, f"featurising {cfg.samples} signals of {cfg.signal_length} samples into {cfg.features} features")
    cpu0, wall0 = time.process_time(), time.monotonic()
    result = prepare(cfg, term)
    if result is None:
        say(PROGRAM, "terminated before the dataset was complete; nothing written")
        return EXIT_TERMINATED
    x, y = result
    buf = io.BytesIO()
    np.savez(buf, X=x, y=y)
    atomic_write_bytes(out / DATASET_FILE, buf.getvalue())
    manifest = {
        "samples": cfg.samples,
        "features": cfg.features,
        "signal_length": cfg.signal_length,
        "seed": cfg.seed,
        "fingerprint": fingerprint(x, y),
        "positive_fraction": round(float(y.mean()), 4),
        "cpu_seconds": round(time.process_time() - cpu0, 3),
        "wall_seconds": round(time.monotonic() - wall0, 3),
        "written_at": time.time(),
        "pod": os.environ.get("HOSTNAME") or socket.gethostname(),
    }
    atomic_write_json(out / MANIFEST_FILE, manifest)
    say(PROGRAM, f"dataset ready in {manifest['wall_seconds']}s ({manifest['cpu_seconds']} CPU-s): {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
