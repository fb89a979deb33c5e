"""A whole pipeline as a child process: ``sealstream up --keep-stack`` in its own stack
directory and ports, for the fault suite and the end-to-end benchmark (start, stop, the CLI
with the job's settings, its process table, SQL through its query endpoint)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sealstream.settings import KafkaSettings, StackSettings

REPO = Path(__file__).resolve().parents[1]
PORTS = (
    "SEALSTREAM_STACK_KAFKA_PORT", "SEALSTREAM_STACK_CONTROLLER_PORT",
    "SEALSTREAM_STACK_REGISTRY_PORT", "SEALSTREAM_GATEWAY_PORT",
    "SEALSTREAM_CLICKHOUSE_QUERY_PORT", "SEALSTREAM_UP_DASHBOARD_PORT",
    "SEALSTREAM_UP_WORKER_METRICS_PORT", "SEALSTREAM_UP_OBJECTS_METRICS_PORT",
)  # fmt: skip

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout_s: float, what: str, every_s: float = 0.5) -> T:
    """The first truthy value of ``predicate``; AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


class UpJob:
    """``sealstream up --keep-stack`` under ``tmp/stack`` on ``ports`` (one per name in
    :data:`PORTS`, in that order); ``env`` overrides settings of every process."""

    subject = "up-job"  # of the tokens it mints

    def __init__(self, tmp: Path, ports: Sequence[int], **env: str) -> None:
        self.tmp = tmp
        self.dir = tmp / "stack"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SEALSTREAM_")},
            **{name: str(port) for name, port in zip(PORTS, ports, strict=True)},
            "SEALSTREAM_SINK_CLICKHOUSE_MAX_AGE_S": "0.5",
            "SEALSTREAM_SINK_OBJECTS_MAX_AGE_S": "1",
            "SEALSTREAM_SINK_BACKOFF_MAX_S": "2",
            **env,
        }
        self.port = {name: int(self.env[name]) for name in PORTS}
        self.gateway_url = f"http://127.0.0.1:{self.port['SEALSTREAM_GATEWAY_PORT']}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tmp / "up.log"
        self.settings_env: dict[str, str] = dict(self.env)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, timeout_s: float = 240) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ops.cli", "up", "--dir", str(self.dir),
                 "--keep-stack"],
                cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

        def running() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"sealstream up exited ({self.proc.returncode}); see {self.log}")
            return "Ctrl-C stops everything" in self.log.read_text()

        wait_for(running, timeout_s, "up")
        for line in (self.dir / "up.env").read_text().splitlines():
            key, _, value = line.partition("=")
            self.settings_env[key] = value.strip("'")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.kill_left_behind()
        self.cli("stack", "down", "--dir", str(self.dir), check=False)

    def kill_left_behind(self) -> list[str]:
        """SIGKILL the services a stop left running: ``up`` removes its state file once it
        stopped them all, so a file still there names children of an ``up`` that did not get
        that far (seen once in CI: a three-broker fault test's ``up`` did not answer SIGINT
        and its four services outlived the run). Only processes that are still this job's
        (``ops.cli`` in their command line) are killed. Returns their names."""
        killed = []
        for name, service in self.services().items():
            pid = service.get("pid")
            if not isinstance(pid, int):
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:  # gone already
                continue
            if b"ops.cli" in cmdline:
                with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                    os.kill(pid, signal.SIGKILL)
                killed.append(name)
        if killed:
            with self.log.open("a") as out:
                out.write(f"upjob: killed services left running after stop: {killed}\n")
        return killed

    def cli(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "ops.cli", *args],
            cwd=REPO, env=self.settings_env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if check:
            assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        return done

    def kafka_settings(self, user: str = "admin") -> KafkaSettings:
        """How a test's own client reaches this job's brokers (as ``user`` when secured)."""
        from ops.stack.local import LocalStack

        saved = LocalStack.saved_overrides(self.dir)
        return StackSettings.model_validate({"dir": self.dir, **saved}).kafka_settings(user)

    # -- processes --------------------------------------------------------------------------

    def services(self) -> dict[str, dict[str, Any]]:
        try:
            state = json.loads((self.dir / "up.json").read_text())
        except (OSError, ValueError):
            return {}
        return {s["name"]: s for s in state["services"]}

    # -- reading the stores ------------------------------------------------------------------

    def token(
        self,
        tenant: str = "*",
        roles: tuple[str, ...] = ("auditor",),
        scopes: Sequence[str] = ("audit:read", "analytics:read"),
    ) -> str:
        """A token from the job's own keyring (``keys`` under its stack directory); the
        default is an auditor's, which reads every tenant through the query endpoint."""
        from sealstream.auth import Keyring, auth_settings, issue_token
        from sealstream.settings import KeySettings

        auth = auth_settings(KeySettings(dir=self.dir / "keys"))
        return issue_token(
            Keyring.from_settings(auth), auth, self.subject, tenant, list(scopes), list(roles), 3600
        )

    def query(self, sql: str, timeout_s: float = 60) -> list[list[Any]]:
        """Rows of ``sql`` through the ClickHouse sink's query endpoint (tables unqualified)."""
        from sinks.clickhouse.access import endpoint_rows

        url = f"http://127.0.0.1:{self.port['SEALSTREAM_CLICKHOUSE_QUERY_PORT']}/v1/query"
        return endpoint_rows(url, self.token(), sql, timeout_s)
