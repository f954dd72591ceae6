"""One container's process: started in its own process group, reaped with its CPU time, signalled as a group.

The runner reaps with ``os.wait4`` rather than ``Popen.poll`` because only ``wait4`` returns the
resource usage of the finished process (user + system CPU seconds, its waited-for children
included), which is what a benchmark compares between a migrated pod and a re-created one. While a
process runs, its CPU time comes from ``/proc/<pid>/stat``. Like a container, the process group is
killed as a whole when its main process exits, and every process dies with the runner
(PR_SET_PDEATHSIG), so an interrupted run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from apolloctl.cluster.process import _die_with_parent
from apolloctl.podrunner.spec import Launch
from apolloctl.podrunner.status import exit_code_of

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process and its reaped children, from /proc; None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
    return (utime + stime + cutime + cstime) / _CLK_TCK


class LocalProcess:
    """A started container process; `poll()` reaps it once and keeps its exit code and CPU time."""

    def __init__(self, launch: Launch, log_path: Path, die_with_parent: bool = True) -> None:
        self.launch = launch
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        cwd = launch.cwd
        if cwd is not None:
            cwd.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} start: {' '.join(launch.argv)}\n".encode())
            out.flush()
            self._popen = subprocess.Popen(
                list(launch.argv),
                env=launch.env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if die_with_parent else None,
            )
        self.pid = self._popen.pid
        self.started_at = time.time()
        self.exit_code: int | None = None
        self.finished_at: float | None = None
        self.cpu_seconds = 0.0

    @property
    def running(self) -> bool:
        return self.exit_code is None

    def poll(self) -> int | None:
        """The exit code once the process has exited (reaping it), else None. Cheap enough per tick."""
        if self.exit_code is not None:
            return self.exit_code
        try:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere: the exit code is lost, report it as killed
            pid, status, usage = self.pid, 137 << 8, None
        if pid == 0:
            live = proc_cpu_seconds(self.pid)
            if live is not None:
                self.cpu_seconds = live
            return None
        self.exit_code = exit_code_of(os.waitstatus_to_exitcode(status))
        self._popen.returncode = self.exit_code  # reaped here: Popen must not wait for it again
        self.finished_at = time.time()
        if usage is not None:
            self.cpu_seconds = usage.ru_utime + usage.ru_stime
        # A container ends with its main process: whatever it left behind in its group goes too.
        self.signal_group(signal.SIGKILL)
        return self.exit_code

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)
