"""The local stack: Kafka (KRaft; one broker, or a cluster of several with ``brokers``) and the
schema registry as detached processes.

Layout of the stack directory::

    kafka/server.properties  kafka/data/      broker 1's configuration and log dirs
    kafka-2/..., kafka-3/...                  the other brokers' (a cluster), kafka/cluster.id
    logs/kafka.log  logs/registry.log         process output (logs/kafka-2.log, ...)
    keys/registry-users.json                  who may change the registry (hashed)
    keys/registry-operator.secret             the operator's ``user:password`` for clients
    run/kafka.pid   run/registry.pid          pid files (run/kafka-2.pid, ...)
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from ops.stack import kafka as runtime
from ops.stack.process import ManagedProcess, StackError
from schemas.registry.auth import ensure_operator
from sealstream.keys import write_private
from sealstream.principals import REGISTRY, role_env
from sealstream.settings import StackSettings
from sealstream.topics import ensure_topics, pipeline_topics


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int | None
    address: str
    healthy: bool


class LocalStack:
    """The stack in ``settings.dir``: ``up``/``down``/``status`` for the CLI and the main job;
    ``restart_broker``/``restart_registry``/``kill_broker`` for fault tests."""

    def __init__(self, settings: StackSettings, progress: Callable[[str], None] | None = None):
        self.settings = settings
        self.dir = settings.dir.resolve()
        self.progress = progress or (lambda message: None)
        run, logs = self.dir / "run", self.dir / "logs"
        self.brokers = [
            ManagedProcess(name, run / f"{name}.pid", logs / f"{name}.log", "kafka.Kafka", self.dir)
            for name in (broker_name(node) for node in range(1, settings.brokers + 1))
        ]
        self.kafka = self.brokers[0]
        self.registry = ManagedProcess(
            "registry", run / "registry.pid", logs / "registry.log", "schemas.registry", self.dir
        )

    # -- the stack's own record of its settings ------------------------------------------

    STATE_FILE = "stack.json"

    def save_settings(self) -> None:
        """Remember ports and options so later `status`/`down`/`logs` find this stack."""
        data = self.settings.model_dump(
            mode="json",
            include={
                "host",
                "kafka_port",
                "controller_port",
                "registry_port",
                "kafka_heap",
                "security",
                "default_partitions",
                "brokers",
                "more_kafka_ports",
                "more_controller_ports",
            },
        )
        (self.dir / self.STATE_FILE).write_text(json.dumps(data, indent=2) + "\n")

    def _check_same_settings(self) -> None:
        """A running stack keeps its ports: asking for others would wait on the wrong ones."""
        saved = self.saved_overrides(self.dir)
        wanted = self.settings.model_dump(mode="json", include=set(saved))
        changed = {k: (saved[k], v) for k, v in wanted.items() if saved[k] != v}
        if changed:
            detail = ", ".join(f"{k} {old} (asked for {new})" for k, (old, new) in changed.items())
            raise StackError(
                f"the stack in {self.dir} is running with {detail}; "
                "run `sealstream stack down` first to change its settings"
            )

    @classmethod
    def saved_overrides(cls, directory: Path) -> dict[str, Any]:
        try:
            data = json.loads((directory / cls.STATE_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    # -- addresses ----------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return self.settings.bootstrap_servers

    @property
    def registry_url(self) -> str:
        return self.settings.registry_url

    # -- health -------------------------------------------------------------------------

    def live_brokers(self, timeout_s: float = 2.0) -> set[int] | None:
        """The node ids in the cluster's metadata, or None if no broker answers."""
        try:
            # librdkafka reports "connection refused" through the logger: while waiting for the
            # broker to start that is expected, so it goes to a logger that drops it.
            admin = AdminClient(
                self.settings.kafka_settings().client_config(
                    socket_timeout_ms=int(timeout_s * 1000), logger=_QUIET
                )
            )
            return set(admin.list_topics(timeout=timeout_s).brokers)
        except KafkaException:
            return None

    def kafka_healthy(self, timeout_s: float = 2.0) -> bool:
        """Every broker of the stack is in the cluster's metadata."""
        live = self.live_brokers(timeout_s)
        return live is not None and set(range(1, len(self.brokers) + 1)) <= live

    def partition_leaders(self, timeout_s: float = 10.0) -> dict[int, int]:
        """Per broker node id, how many partitions it leads (for fault tests)."""
        admin = AdminClient(self.settings.kafka_settings().client_config(logger=_QUIET))
        counts: dict[int, int] = {}
        for topic in admin.list_topics(timeout=timeout_s).topics.values():
            for partition in topic.partitions.values():
                if partition.leader >= 0:
                    counts[partition.leader] = counts.get(partition.leader, 0) + 1
        return counts

    def registry_healthy(self, timeout_s: float = 2.0) -> bool:
        try:
            return httpx.get(f"{self.registry_url}/subjects", timeout=timeout_s).status_code == 200
        except httpx.HTTPError:
            return False

    def status(self) -> list[ComponentStatus]:
        registry_pid = self.registry.pid()
        live = self.live_brokers() or set()
        host = self.settings.host
        brokers = [
            ComponentStatus(
                process.name,
                pid,
                f"{host}:{port}",
                pid is not None and node in live,
            )
            for node, (process, port) in enumerate(
                zip(self.brokers, self.settings.kafka_ports, strict=True), start=1
            )
            for pid in [process.pid()]
        ]
        return [
            *brokers,
            ComponentStatus(
                "registry",
                registry_pid,
                self.registry_url,
                registry_pid is not None and self.registry_healthy(),
            ),
        ]

    # -- lifecycle ------------------------------------------------------------------------

    def up(self) -> list[ComponentStatus]:
        """Start whatever is not running; wait until both answer. Idempotent."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.running():
            self._check_same_settings()
        else:
            self.save_settings()
        self._start_kafka()
        self.progress("creating topics")
        ensure_topics(
            self.settings.kafka_settings(), pipeline_topics(self.settings.default_partitions)
        )
        if self.settings.security == "sasl_ssl":
            from ops.stack.security import apply

            self.progress("creating Kafka users and ACLs")
            apply(self.settings.kafka_settings("admin"), self.settings)
        self._start_registry()
        return self.status()

    def running(self) -> bool:
        """Whether any of the stack's processes is alive (healthy or not)."""
        return any(p.pid() is not None for p in self.brokers) or self.registry.pid() is not None

    def down(self) -> bool:
        """Stop the registry, then Kafka (controlled shutdown). True if anything was running."""
        stopped_registry = self.registry.stop(timeout_s=15)
        stopped_kafka = [b.stop(timeout_s=60) for b in reversed(self.brokers)]
        return stopped_registry or any(stopped_kafka)

    def restart_broker(self, node: int = 1) -> None:
        """Controlled shutdown of broker ``node`` (if it runs), start it, wait until the
        cluster has every broker again."""
        self.brokers[node - 1].stop(timeout_s=60)
        self._start_kafka()

    def restart_registry(self) -> None:
        """Stop the registry (if it runs), start it, wait until it answers."""
        self.registry.stop(timeout_s=15)
        self._start_registry()

    def kill_broker(self, node: int = 1) -> None:
        """SIGKILL broker ``node``, no controlled shutdown (a crash); ``restart_broker``
        recovers."""
        self.brokers[node - 1].kill()

    # -- internals ------------------------------------------------------------------------

    def _check_port_free(self, port: int, owner: str) -> None:
        # Binding (not connecting) tells whether the port is taken: a connect to a free port in
        # the ephemeral range can "succeed" by connecting to itself.
        # A process that was just killed may still hold it while it exits (a JVM with a large
        # heap takes seconds under load): give it a few seconds before calling it taken.
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((self.settings.host, port))
                    return
                except OSError:
                    if time.monotonic() < deadline:
                        time.sleep(0.25)
                        continue
                raise StackError(
                    f"port {port} on {self.settings.host} is in use by another process; stop it "
                    f"or choose another port for {owner} (see `sealstream stack up --help`)"
                    + _ephemeral_hint(port)
                ) from None

    def _start_kafka(self) -> None:
        """Start every broker that is not running; wait until all are in the cluster."""
        stopped = [n for n, p in enumerate(self.brokers, start=1) if p.pid() is None]
        if stopped:
            if not runtime.jars_cached(self.settings):
                self.progress(f"resolving Apache Kafka {runtime.kafka_version()} jars with Maven")
            libs = runtime.resolve_jars(self.settings, self.progress)
            shared = runtime.cluster_id(self.dir) if len(self.brokers) > 1 else None
            for node in stopped:
                self._start_broker(node, libs, shared)
        self._wait("kafka", self.kafka, self.kafka_healthy, self.brokers)

    def _start_broker(self, node: int, libs: Path, cluster_id: str | None) -> None:
        name = broker_name(node)
        for port, owner in (
            (self.settings.kafka_ports[node - 1], f"Kafka ({name})"),
            (self.settings.controller_ports[node - 1], f"the KRaft controller of {name}"),
        ):
            self._check_port_free(port, owner)
        kafka_dir = self.dir / name
        data = kafka_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        properties = kafka_dir / "server.properties"  # owner-only: a secured one holds secrets
        properties.unlink(missing_ok=True)
        write_private(properties, runtime.server_properties(self.settings, data, node).encode())
        if runtime.format_storage(libs, properties, data, cluster_id):
            self.progress(f"formatted a new KRaft log directory for {name}")
        self.progress(f"starting Kafka ({name})")
        self.brokers[node - 1].start(
            runtime.broker_command(self.settings, libs, properties, self.dir / "logs"),
            env={**os.environ},
        )

    def _start_registry(self) -> None:
        if self.registry.pid() is not None:
            self._wait("registry", self.registry, self.registry_healthy)
            return
        self._check_port_free(self.settings.registry_port, "the schema registry")
        self.progress("starting the schema registry")
        reg = self.settings.registry_settings()
        assert reg.users_file is not None and reg.basic_auth_file is not None
        if ensure_operator(reg.users_file, reg.basic_auth_file):
            self.progress(f"made the registry's operator credential ({reg.basic_auth_file})")
        env = {
            **os.environ,
            "SEALSTREAM_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "SEALSTREAM_REGISTRY_USERS_FILE": str(reg.users_file),
            **role_env(self.settings, REGISTRY),
            "SEALSTREAM_REGISTRY_HOST": reg.host,
            "SEALSTREAM_REGISTRY_PORT": str(reg.port),
            "SEALSTREAM_REGISTRY_TOPIC": reg.topic,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [_project_root(), os.environ.get("PYTHONPATH")])
            ),
        }
        env.pop("KAFKA_BOOTSTRAP", None)
        self.registry.start([sys.executable, "-m", "schemas.registry"], env=env)
        self._wait("registry", self.registry, self.registry_healthy)

    def _wait(
        self,
        name: str,
        process: ManagedProcess,
        healthy: Callable[[], bool],
        processes: list[ManagedProcess] | None = None,
    ) -> None:
        deadline = time.monotonic() + self.settings.start_timeout_s
        while time.monotonic() < deadline:
            if healthy():
                return
            for each in processes or [process]:
                if each.exited():
                    raise StackError(
                        f"{each.name} exited during start-up; see {each.log_file}:\n"
                        + _tail(each.log_file)
                    )
            time.sleep(0.25)
        raise StackError(
            f"{name} did not answer within {self.settings.start_timeout_s:.0f} s; "
            f"see {process.log_file}"
        )


def broker_name(node: int) -> str:
    """``kafka`` for the first broker (as a one-broker stack has always called it), then
    ``kafka-2``, ``kafka-3``, ..."""
    return "kafka" if node == 1 else f"kafka-{node}"


_QUIET = logging.getLogger("ops.stack.probe")
_QUIET.setLevel(logging.CRITICAL)
_QUIET.propagate = False


def _ephemeral_hint(port: int) -> str:
    """Why a port can be taken although no server uses it: clients got it as a source port."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return ""
    if not low <= port <= high:
        return ""
    return (
        f"; {port} lies in the kernel's ephemeral range {low}-{high}, where clients retrying a "
        f"connection to it can hold it as their own source port: prefer a port below {low}"
    )


def _project_root() -> str:
    return str(Path(__file__).resolve().parents[2])


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
