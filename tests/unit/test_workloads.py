"""The scenario's workload programs: deterministic data, exact resumption, refused corrupt checkpoints.

Most tests run the programs as the pod runner does (`python -m ...` with CHECKPOINT_DIR), signals
and exit codes included; the pure parts (featurising, SGD, checkpoint codec) are checked directly.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from apolloctl.workloads import (
    CHECKPOINT_STEP_FILE,
    DATA_DIR,
    EXIT_TERMINATED,
    EXIT_USAGE,
    MANIFEST_FILE,
    PROGRESS_FILE,
    RESUMED_FROM_FILE,
    TRAINER_DIR,
)
from apolloctl.workloads.checkpoint import Checkpoint, CheckpointStore, CorruptCheckpoint, decode, encode, file_name
from apolloctl.workloads.dataprep import PrepConfig, fingerprint, prepare
from apolloctl.workloads.monitor import describe
from apolloctl.workloads.runtime import UsageError, checkpoint_dir
from apolloctl.workloads.trainer import TrainConfig, accuracy, sgd_step, train

SMALL_PREP = ["--samples", "600", "--signal-length", "128", "--features", "16"]


def _run(module: str, ckpt: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CHECKPOINT_DIR=str(ckpt), HOSTNAME="pod-a")
    return subprocess.run(
        [sys.executable, "-m", f"apolloctl.workloads.{module}", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _start(module: str, ckpt: Path, *args: str, hostname: str = "pod-a") -> subprocess.Popen[str]:
    env = dict(os.environ, CHECKPOINT_DIR=str(ckpt), HOSTNAME=hostname)
    return subprocess.Popen(
        [sys.executable, "-m", f"apolloctl.workloads.{module}", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def prepared(tmp_path: Path) -> Path:
    done = _run("dataprep", tmp_path, *SMALL_PREP)
    assert done.returncode == 0, done.stdout + done.stderr
    return tmp_path


# ---- data-prep -------------------------------------------------------------------------------------


def test_dataprep_is_deterministic_and_learnable() -> None:
    cfg = PrepConfig(samples=1500, signal_length=128, features=16, seed=3)
    a, b = prepare(cfg), prepare(cfg)
    assert a is not None and b is not None
    assert fingerprint(*a) == fingerprint(*b)
    other = prepare(PrepConfig(samples=1500, signal_length=128, features=16, seed=4))
    assert other is not None and fingerprint(*other) != fingerprint(*a)
    x, y = a
    assert x.shape == (1500, 16) and set(np.unique(y)) == {0.0, 1.0}
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-9)
    # The label is a property of the spectrum: a linear model must do far better than chance.
    w = train(x, y, np.zeros(16), 0, 300, TrainConfig(batch=256))
    assert accuracy(x, y, w) > 0.8


def test_dataprep_rejects_bad_arguments() -> None:
    with pytest.raises(UsageError, match="--features"):
        PrepConfig(signal_length=64, features=40)
    with pytest.raises(UsageError, match="--samples"):
        PrepConfig(samples=1)


def test_dataprep_writes_dataset_then_manifest(prepared: Path) -> None:
    manifest = json.loads((prepared / DATA_DIR / MANIFEST_FILE).read_text())
    assert manifest["samples"] == 600 and manifest["features"] == 16
    assert manifest["pod"] == "pod-a" and manifest["cpu_seconds"] > 0
    with np.load(prepared / DATA_DIR / "dataset.npz") as npz:
        assert fingerprint(npz["X"], npz["y"]) == manifest["fingerprint"]


def test_programs_refuse_to_run_without_their_volume(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CHECKPOINT_DIR"}
    for module in ("dataprep", "trainer", "monitor"):
        done = subprocess.run(
            [sys.executable, "-m", f"apolloctl.workloads.{module}"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == EXIT_USAGE, module
        assert "CHECKPOINT_DIR is not set" in done.stderr and "Traceback" not in done.stderr
    with pytest.raises(UsageError, match="not a directory"):
        checkpoint_dir({"CHECKPOINT_DIR": str(tmp_path / "missing")})


# ---- trainer: pure parts ---------------------------------------------------------------------------


def test_resumed_training_is_exactly_the_uninterrupted_run() -> None:
    cfg = PrepConfig(samples=800, signal_length=64, features=8)
    data = prepare(cfg)
    assert data is not None
    x, y = data
    tc = TrainConfig(batch=64)
    straight = train(x, y, np.zeros(8), 0, 40, tc)
    half = train(x, y, np.zeros(8), 0, 15, tc)
    ck = decode(encode(Checkpoint(step=15, weights=half, loss=0.5, fingerprint="f")), expect_step=15, features=8)
    resumed = train(x, y, ck.weights, ck.step, 40, tc)
    assert np.array_equal(straight, resumed)
    # and the steps are real work: each one moves the weights
    w1, loss = sgd_step(x, y, np.zeros(8), 0, tc)
    assert np.abs(w1).sum() > 0 and 0 < loss < 1


def test_checkpoint_codec_refuses_what_does_not_verify() -> None:
    good = encode(Checkpoint(step=7, weights=np.arange(4.0), loss=0.3, fingerprint="abc"))
    assert decode(good, expect_step=7, features=4).fingerprint == "abc"
    with pytest.raises(CorruptCheckpoint, match="its name says 8"):
        decode(good, expect_step=8)
    with pytest.raises(CorruptCheckpoint, match="shape"):
        decode(good, features=5)
    with pytest.raises(CorruptCheckpoint, match="unreadable"):
        decode(good[: len(good) // 2])
    with pytest.raises(CorruptCheckpoint, match="unreadable"):
        decode(b"")
    nan = encode(Checkpoint(step=1, weights=np.array([np.nan, 1.0]), loss=0.3, fingerprint="abc"))
    with pytest.raises(CorruptCheckpoint, match="non-finite"):
        decode(nan)
    # a flipped bit in the stored weights: the zip's CRC catches it before our checksum does
    tampered = bytearray(good)
    tampered[bytes(good).index(np.arange(4.0).tobytes()) + 3] ^= 0xFF
    with pytest.raises(CorruptCheckpoint, match="unreadable"):
        decode(bytes(tampered))
    # a well-formed file whose weights are not the ones its metadata was written with
    buf = io.BytesIO()
    with np.load(io.BytesIO(good)) as npz:
        np.savez(buf, weights=npz["weights"] + 1.0, meta=npz["meta"], checksum=npz["checksum"])
    with pytest.raises(CorruptCheckpoint, match="checksum mismatch"):
        decode(buf.getvalue())


def test_store_falls_back_past_corrupt_and_foreign_checkpoints(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=3)
    for step in (10, 20, 30):
        store.save(Checkpoint(step=step, weights=np.full(3, float(step)), loss=1.0, fingerprint="fp"))
    store.save(Checkpoint(step=40, weights=np.zeros(3), loss=1.0, fingerprint="fp"))
    assert [s for s, _ in store.candidates()] == [40, 30, 20]  # keep=3 pruned step 10
    (tmp_path / file_name(40)).write_bytes(b"torn write")
    (tmp_path / file_name(30)).write_bytes(encode(Checkpoint(30, np.zeros(3), 1.0, "other-dataset")))
    (tmp_path / ".ckpt-0000000050.npz.123.tmp").write_bytes(b"half")  # an interrupted write
    ck, path, refused = store.load_latest(features=3, fingerprint="fp")
    assert ck is not None and ck.step == 20 and path == tmp_path / file_name(20)
    assert [r.file for r in refused] == [file_name(40), file_name(30)]
    assert "unreadable" in refused[0].reason and "another dataset" in refused[1].reason
    assert store.load_latest(features=4, fingerprint="fp")[0] is None


# ---- trainer: the program --------------------------------------------------------------------------


def test_trainer_checkpoints_on_sigterm_exits_143_and_resumes_there(prepared: Path) -> None:
    args = ("--checkpoint-seconds", "0.3", "--batch", "128", "--steps-per-second", "200")
    proc = _start("trainer", prepared, *args)
    store = CheckpointStore(prepared / TRAINER_DIR)
    _wait(lambda: len(store.candidates()) >= 2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == EXIT_TERMINATED, out
    assert "starting from scratch" in out and "checkpointed step" in out
    last = store.candidates()[0][0]
    first_resume = json.loads((prepared / RESUMED_FROM_FILE).read_text())
    assert first_resume["resumed_from"] == -1 and first_resume["pod"] == "pod-a"
    progress = json.loads((prepared / TRAINER_DIR / PROGRESS_FILE).read_text())
    assert progress["step"] == last and progress["final"] is True
    reported = json.loads((prepared / CHECKPOINT_STEP_FILE).read_text())
    assert reported["step"] == last and reported["checkpoint"] == file_name(last) and reported["pod"] == "pod-a"

    # A finite run from there: resumes at the SIGTERM checkpoint, finishes, exits 0.
    done = _run("trainer", prepared, "--steps", str(last + 25), "--batch", "128")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"resumed from step {last} " in done.stdout and f"finished {last + 25} steps" in done.stdout
    resume = json.loads((prepared / RESUMED_FROM_FILE).read_text())
    assert resume["resumed_from"] == last and resume["checkpoint"] == file_name(last)
    assert store.candidates()[0][0] == last + 25


def test_trainer_refuses_a_corrupt_checkpoint_loudly_and_falls_back(prepared: Path) -> None:
    assert _run("trainer", prepared, "--steps", "30", "--batch", "64").returncode == 0
    assert _run("trainer", prepared, "--steps", "60", "--batch", "64").returncode == 0
    newest = prepared / TRAINER_DIR / file_name(60)
    newest.write_bytes(newest.read_bytes()[:100])  # torn by a crash on a filesystem without rename
    done = _run("trainer", prepared, "--steps", "70", "--batch", "64")
    assert done.returncode == 0
    assert f"WARNING: refusing checkpoint {file_name(60)}" in done.stdout
    assert "resumed from step 30 " in done.stdout
    resume = json.loads((prepared / RESUMED_FROM_FILE).read_text())
    assert resume["resumed_from"] == 30 and resume["refused"][0]["file"] == file_name(60)


def test_trainer_waits_for_data_prep_and_stops_cleanly_meanwhile(tmp_path: Path) -> None:
    proc = _start("trainer", tmp_path, "--data-timeout", "60")
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == EXIT_TERMINATED
    assert "waiting for data-prep" in out and not (tmp_path / RESUMED_FROM_FILE).exists()
    done = _run("trainer", tmp_path, "--data-timeout", "0.5")
    assert done.returncode == EXIT_USAGE and "no dataset" in done.stderr


def test_trainer_rejects_bad_arguments(prepared: Path) -> None:
    done = _run("trainer", prepared, "--checkpoint-seconds", "0")
    assert done.returncode == EXIT_USAGE and "--checkpoint-seconds must be > 0" in done.stderr


# ---- monitor ---------------------------------------------------------------------------------------


def test_monitor_reports_progress_and_exits_0_on_sigterm(prepared: Path) -> None:
    assert describe(None, None, False) == "waiting for data-prep's dataset"
    assert describe(None, None, True) == "waiting for the trainer"
    a = {"step": 10, "loss": 0.5, "pid": 1, "updated_at": 100.0, "resumed_from": -1}
    b = {"step": 30, "loss": 0.4, "pid": 1, "updated_at": 102.0, "resumed_from": 5}
    assert describe(b, a, True) == "trainer at step 30, loss 0.4000 (resumed from 5), 10.0 steps/s"
    assert "steps/s" not in describe(b, {**a, "pid": 2}, True)  # another process: no rate across restarts

    assert _run("trainer", prepared, "--steps", "5").returncode == 0
    proc = _start("monitor", prepared, "--interval", "0.2")
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "trainer at step 5" in out
