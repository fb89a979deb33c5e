"""Detached processes with pid files: start, find, stop, and tell a stale pid file apart.

A pid file holds the pid; the process counts as ours only if it is alive and its command line
still contains the marker we started it with (a reused pid belongs to someone else).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

# Popen objects of processes this interpreter started: kept so they are reaped (no zombies,
# no "still running" warnings) while the detached process outlives the call that started it.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class StackError(RuntimeError):
    """Root of the local stack's errors; the message says what to do."""


@dataclass(frozen=True)
class ManagedProcess:
    name: str
    pid_file: Path
    log_file: Path
    marker: str  # a string that must appear in /proc/<pid>/cmdline
    cwd: Path  # the process runs in this directory (tells two stacks' processes apart)

    def pid(self) -> int | None:
        """The pid if the process is running and is ours, else None (stale files removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        _reap(pid)  # our own child that exited is a zombie until reaped
        if not _cmdline_contains(pid, self.marker) or not _runs_in(pid, self.cwd):
            self.pid_file.unlink(missing_ok=True)
            return None
        return pid

    def start(self, argv: list[str], env: dict[str, str]) -> int:
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.cwd,
                start_new_session=True,
            )
        _CHILDREN[proc.pid] = proc
        # Between fork and exec the child's command line is still ours: wait for the exec so
        # that pid() recognises the process (and never mistakes it for a stale pid file).
        deadline = time.monotonic() + 5
        while not _cmdline_contains(proc.pid, self.marker) and time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            time.sleep(0.01)
        self.pid_file.write_text(f"{proc.pid}\n")
        return proc.pid

    def exited(self) -> bool:
        pid = self.pid()
        return pid is None or _is_zombie(pid)

    def stop(self, timeout_s: float = 30.0) -> bool:
        """SIGTERM, wait, then SIGKILL. True if it was running."""
        pid = self.pid()
        if pid is None:
            return False
        _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not _alive(pid):
                break
            time.sleep(0.1)
        else:
            _signal(pid, signal.SIGKILL)
            for _ in range(50):
                if not _alive(pid):
                    break
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> bool:
        """SIGKILL at once (fault tests)."""
        pid = self.pid()
        if pid is None:
            return False
        _signal(pid, signal.SIGKILL)
        for _ in range(100):
            if not _alive(pid):
                break
            time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _reap(pid: int) -> None:
    """Collect the exit status if we started the process (else it stays a zombie).

    Only Popen objects we hold are polled: a bare ``waitpid`` could steal the status of an
    unrelated child that happens to have a reused pid.
    """
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[pid]


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def _alive(pid: int) -> bool:
    _reap(pid)
    return Path(f"/proc/{pid}").exists() and not _is_zombie(pid)


def _runs_in(pid: int, directory: Path) -> bool:
    try:
        return Path(f"/proc/{pid}/cwd").resolve() == directory.resolve()
    except OSError:
        return False


def _cmdline_contains(pid: int, marker: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return marker in cmdline and not _is_zombie(pid)
