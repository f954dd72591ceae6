"""Checkpoints that are either whole or refused: atomic writes, self-checking contents, loud fallback.

A checkpoint is one ``ckpt-<step>.npz`` file holding the model's weights, a JSON ``meta`` record
(step, loss, dataset fingerprint, writer) and a SHA-256 over both. It is written to a temporary file,
fsynced and renamed, so a crash or SIGKILL mid-write leaves the previous checkpoint as the newest.
On load, every candidate is checked (readable zip, expected keys and shapes, checksum, step equal to
the file name, same dataset); a candidate that fails is reported with its reason and the next older
one is tried. Resuming silently from garbage, or silently from scratch, is what this module exists
to prevent.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from apolloctl.workloads.runtime import atomic_write_bytes

FloatArray = npt.NDArray[np.float64]
_NAME = re.compile(r"^ckpt-(\d{10})\.npz$")
FORMAT = 1


class CorruptCheckpoint(Exception):
    """A checkpoint file that must not be resumed from; the message says why."""


@dataclass
class Checkpoint:
    step: int
    weights: FloatArray
    loss: float
    fingerprint: str
    extra: dict[str, Any] = field(default_factory=dict)


def file_name(step: int) -> str:
    return f"ckpt-{step:010d}.npz"


def _checksum(weights: FloatArray, meta_json: str) -> str:
    h = hashlib.sha256()
    h.update(meta_json.encode())
    h.update(str(weights.shape).encode())
    h.update(np.ascontiguousarray(weights, dtype=np.float64).tobytes())
    return h.hexdigest()


def encode(ck: Checkpoint) -> bytes:
    """The bytes of one checkpoint file (no pickles: arrays and strings only)."""
    if ck.step < 0:
        raise ValueError(f"checkpoint step must be >= 0, got {ck.step}")
    meta = json.dumps(
        {"format": FORMAT, "step": ck.step, "loss": ck.loss, "fingerprint": ck.fingerprint, **ck.extra},
        sort_keys=True,
    )
    weights = np.ascontiguousarray(ck.weights, dtype=np.float64)
    buf = io.BytesIO()
    np.savez(buf, weights=weights, meta=np.array(meta), checksum=np.array(_checksum(weights, meta)))
    return buf.getvalue()


def decode(data: bytes, *, expect_step: int | None = None, features: int | None = None) -> Checkpoint:
    """Parse and verify one checkpoint file's bytes; CorruptCheckpoint naming the first problem."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            missing = {"weights", "meta", "checksum"} - set(npz.files)
            if missing:
                raise CorruptCheckpoint(f"missing {', '.join(sorted(missing))}")
            weights = np.asarray(npz["weights"], dtype=np.float64)
            meta_json = str(npz["meta"][()])
            checksum = str(npz["checksum"][()])
    except CorruptCheckpoint:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise CorruptCheckpoint(f"unreadable ({type(exc).__name__}: {exc})") from exc
    if _checksum(weights, meta_json) != checksum:
        raise CorruptCheckpoint("checksum mismatch")
    try:
        meta = json.loads(meta_json)
        step, loss, fp = int(meta["step"]), float(meta["loss"]), str(meta["fingerprint"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptCheckpoint(f"bad metadata ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise CorruptCheckpoint(f"unknown format {meta.get('format')!r}")
    if expect_step is not None and step != expect_step:
        raise CorruptCheckpoint(f"holds step {step}, its name says {expect_step}")
    if weights.ndim != 1 or (features is not None and weights.shape[0] != features):
        raise CorruptCheckpoint(f"weights of shape {weights.shape}, expected ({features},)")
    if not np.all(np.isfinite(weights)):
        raise CorruptCheckpoint("non-finite weights")
    extra = {k: v for k, v in meta.items() if k not in ("format", "step", "loss", "fingerprint")}
    return Checkpoint(step=step, weights=weights, loss=loss, fingerprint=fp, extra=extra)


@dataclass(frozen=True)
class Refusal:
    """A checkpoint skipped on load, and why (reported by the trainer, kept in resumed-from.json)."""

    file: str
    reason: str


class CheckpointStore:
    """The checkpoints of one trainer in one directory: save atomically, keep the newest `keep`."""

    def __init__(self, directory: Path, keep: int = 3) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = directory
        self.keep = keep
        directory.mkdir(parents=True, exist_ok=True)

    def candidates(self) -> list[tuple[int, Path]]:
        """(step, path) of every checkpoint file, newest first; temporary files are not candidates."""
        found = []
        for path in self.directory.iterdir():
            m = _NAME.match(path.name)
            if m:
                found.append((int(m.group(1)), path))
        return sorted(found, reverse=True)

    def save(self, ck: Checkpoint) -> Path:
        path = self.directory / file_name(ck.step)
        atomic_write_bytes(path, encode(ck))
        for _, old in self.candidates()[self.keep :]:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
        return path

    def load_latest(self, *, features: int, fingerprint: str) -> tuple[Checkpoint | None, Path | None, list[Refusal]]:
        """The newest checkpoint that verifies and belongs to this dataset, its path, and every refusal."""
        refused: list[Refusal] = []
        for step, path in self.candidates():
            try:
                ck = decode(path.read_bytes(), expect_step=step, features=features)
            except (CorruptCheckpoint, OSError) as exc:
                refused.append(Refusal(path.name, str(exc)))
                continue
            if ck.fingerprint != fingerprint:
                refused.append(Refusal(path.name, "written for another dataset (fingerprint differs)"))
                continue
            return ck, path, refused
        return None, None, refused
