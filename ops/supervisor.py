"""Supervised child processes for ``sealstream up``: the gateway, the workers and both sinks.

Each service is a ``python -m ops.cli ...`` child with its own log file under
``<stack dir>/logs``. A child that exits while the supervisor runs is restarted after a
backoff that doubles per quick crash (reset once it stayed up a minute). ``stop`` sends SIGTERM
to every child (last started first), waits, then SIGKILLs what is left. The state (pids,
restarts, log paths) is written to ``<stack dir>/up.json`` for operators and tests.

Why not supervisord or systemd: they are not Python dependencies a ``pip install`` brings, and
the local stack must run from the repository alone; this is the small part of them ``up``
needs (spawn, watch, back off, stop in order).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealstream.logs import formatter

log = logging.getLogger("sealstream.up")

QUICK_CRASH_S = 60.0


@dataclass
class Service:
    name: str
    args: list[str]  # after ``python -m ops.cli``
    env: dict[str, str] = field(default_factory=dict)
    health_url: str | None = None
    health_tls: Any = None  # an ssl.SSLContext for an https health_url

    # run state
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    next_start: float = 0.0
    backoff_s: float = 1.0
    exits: list[int] = field(default_factory=list)


# the line a service's log gets before each start, in the shape of the service's own lines
_STARTED = formatter("json", service="up")


def _started_line(service: Service) -> bytes:
    record = log.makeRecord(
        log.name, logging.INFO, __file__, 0, "starting %s", (service.name,), None
    )
    return (_STARTED.format(record) + "\n").encode()


class Supervisor:
    def __init__(
        self,
        services: list[Service],
        log_dir: Path,
        state_file: Path,
        base_env: dict[str, str],
        max_backoff_s: float = 30.0,
    ) -> None:
        self.services = services
        self.log_dir = log_dir
        self.state_file = state_file
        self.base_env = base_env
        self.max_backoff_s = max_backoff_s
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        log_dir.mkdir(parents=True, exist_ok=True)

    def log_path(self, service: Service) -> Path:
        return self.log_dir / f"{service.name}.log"

    def _spawn(self, service: Service) -> None:
        with self.log_path(service).open("ab") as out:  # the child keeps its own descriptor
            out.write(_started_line(service))
            out.flush()
            service.proc = subprocess.Popen(
                [sys.executable, "-m", "ops.cli", *service.args],
                env={**self.base_env, **service.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the supervisor, which stops in order
            )
        service.started_at = time.monotonic()
        log.info("%s started (pid %d)", service.name, service.proc.pid)

    def start(self) -> None:
        for service in self.services:
            self._spawn(service)
        self.write_state()
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stopping.wait(0.5):
            changed = False
            with self._lock:
                for service in self.services:
                    proc = service.proc
                    now = time.monotonic()
                    if proc is not None and proc.poll() is not None:
                        code = proc.returncode
                        service.exits.append(code)
                        service.proc = None
                        if now - service.started_at > QUICK_CRASH_S:
                            service.backoff_s = 1.0
                        service.next_start = now + service.backoff_s
                        log.warning(
                            "%s exited with %s; restarting in %.0f s (log: %s)",
                            service.name, code, service.backoff_s, self.log_path(service),
                        )  # fmt: skip
                        service.backoff_s = min(service.backoff_s * 2, self.max_backoff_s)
                        changed = True
                    elif proc is None and now >= service.next_start:
                        service.restarts += 1
                        self._spawn(service)
                        changed = True
            if changed:
                self.write_state()

    def state(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "name": s.name,
                    "pid": s.proc.pid if s.proc is not None else None,
                    "running": s.proc is not None and s.proc.poll() is None,
                    "restarts": s.restarts,
                    "exits": s.exits[-5:],
                    "log": str(self.log_path(s)),
                    "health_url": s.health_url,
                }
                for s in self.services
            ]

    def write_state(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "services": self.state()}, indent=2))
        tmp.replace(self.state_file)

    def stop(self, timeout_s: float = 30.0) -> dict[str, int | None]:
        """SIGTERM every child, last started first; SIGKILL what is still there after
        ``timeout_s``. Returns each service's exit code."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
        codes: dict[str, int | None] = {}
        for service in reversed(self.services):
            if service.proc is not None and service.proc.poll() is None:
                service.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for service in reversed(self.services):
            proc = service.proc
            if proc is None:
                codes[service.name] = None
                continue
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s: SIGKILL", service.name, timeout_s)
                proc.kill()
                proc.wait(10)
            # uvicorn re-raises SIGTERM after its graceful shutdown: that is a clean stop
            code = proc.returncode
            codes[service.name] = 0 if code == -signal.SIGTERM else code
        self.state_file.unlink(missing_ok=True)
        return codes
