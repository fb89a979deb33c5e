"""Apache Kafka in KRaft mode from Maven-resolved jars: resolve, configure, format, command line.

The jars are resolved once by Maven from ``pom.xml`` beside this file into the user cache
(``<cache>/kafka-<version>/libs``); a marker file written after Maven succeeds makes every
later start offline. The broker's data, configuration and logs live in the stack directory.
"""

from __future__ import annotations

import base64
import fcntl
import re
import shutil
import subprocess
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path

from ops.stack.process import StackError
from sealstream.settings import StackSettings

POM = Path(__file__).resolve().parent / "pom.xml"
LOG4J2 = Path(__file__).resolve().parent / "log4j2.xml"
COMPLETE_MARKER = ".complete"

Progress = Callable[[str], None]
_DOWNLOADED = re.compile(r"Downloaded from \S+ \S+/([^/\s]+)")


def kafka_version(pom: Path = POM) -> str:
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom.read_text())
    if match is None:
        raise StackError(f"{pom} does not pin <kafka.version>")
    return match.group(1).strip()


def libs_dir(settings: StackSettings) -> Path:
    return settings.cache_dir / f"kafka-{kafka_version()}" / "libs"


def jars_cached(settings: StackSettings) -> bool:
    return (libs_dir(settings) / COMPLETE_MARKER).exists()


def resolve_jars(settings: StackSettings, progress: Progress | None = None) -> Path:
    """Copy Kafka's runtime jars into the cache with Maven (once); return the directory.

    The marker is written only after Maven succeeded, so an interrupted download is redone;
    with the marker present nothing runs and no network is needed. A lock file keeps two
    stacks started at once (two test sessions) from resolving into the same directory.
    """
    libs = libs_dir(settings)
    if jars_cached(settings):
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError("Maven (mvn) is not on PATH; it resolves the Kafka jars once")
    libs.parent.mkdir(parents=True, exist_ok=True)
    with (libs.parent / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if jars_cached(settings):  # another process finished while we waited
            return libs
        if libs.exists():
            shutil.rmtree(libs)  # a half-finished earlier attempt
        _run_maven(mvn, libs, progress or (lambda message: None))
        if not any(libs.glob("kafka_2.13-*.jar")):
            raise StackError(f"Maven finished but {libs} holds no kafka_2.13 jar")
        (libs / COMPLETE_MARKER).write_text(kafka_version() + "\n")
    return libs


def _run_maven(mvn: str, libs: Path, progress: Progress) -> None:
    """Run copy-dependencies, turning Maven's download and copy lines into progress."""
    argv = [
        mvn,
        "-B",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={libs}",
        "-DincludeScope=runtime",
    ]
    version = kafka_version()
    tail: deque[str] = deque(maxlen=15)
    downloaded = copied = 0
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True
    ) as proc:
        assert proc.stdout is not None  # stdout=PIPE
        for line in proc.stdout:
            tail.append(line.rstrip())
            if match := _DOWNLOADED.search(line):
                downloaded += 1
                progress(f"Maven: {downloaded} files downloaded ({match.group(1)})")
            elif "Copying " in line:
                copied += 1
                progress(f"Maven: copying Kafka {version} jars ({copied})")
    if proc.returncode != 0:
        detail = "\n".join(tail)
        raise StackError(f"Maven failed (exit {proc.returncode}) resolving Kafka jars:\n{detail}")


def java() -> str:
    path = shutil.which("java")
    if path is None:
        raise StackError("java is not on PATH; Kafka needs Java 17 or newer")
    return path


def server_properties(settings: StackSettings, data_dir: Path, node: int = 1) -> str:
    """Broker ``node`` (1-based) of the stack: broker and KRaft controller in one process.

    One broker: a single-voter quorum found through ``controller.quorum.bootstrap.servers``
    (formatted ``--standalone``). Several: a static quorum of every node's controller,
    replication factor 3 for Kafka's own topics and ``min.insync.replicas`` 2, so an
    ``acks=all`` write survives the loss of any one broker."""
    host = settings.host
    port = settings.kafka_ports[node - 1]
    controller = settings.controller_ports[node - 1]
    replicas = settings.replication_factor
    min_isr = 2 if replicas >= 3 else 1
    lines = {
        "process.roles": "broker,controller",
        "node.id": str(node),
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": str(settings.default_partitions),
        "auto.create.topics.enable": "false",
        "default.replication.factor": str(replicas),
        "min.insync.replicas": str(min_isr),
        "offsets.topic.replication.factor": str(replicas),
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": str(min_isr),
        "transaction.state.log.num.partitions": "10",
        "group.initial.rebalance.delay.ms": "0",
        "log.cleaner.min.compaction.lag.ms": "0",
        "share.coordinator.state.topic.replication.factor": str(replicas),
        "share.coordinator.state.topic.min.isr": str(min_isr),
    }
    if settings.security == "sasl_ssl":
        from ops.stack.security import broker_properties

        lines.update(broker_properties(settings, host, port, controller))
    if settings.brokers == 1:
        lines["controller.quorum.bootstrap.servers"] = f"{host}:{controller}"
    else:
        lines["controller.quorum.voters"] = ",".join(
            f"{i}@{host}:{p}" for i, p in enumerate(settings.controller_ports, start=1)
        )
        # a broker that comes back catches up as a follower before it leads again
        lines["unclean.leader.election.enable"] = "false"
        # a broker that dies loses its leaderships after 3 s, not the default 9 (the gateway's
        # writes to its partitions wait that long)
        lines["broker.session.timeout.ms"] = "3000"
        lines["broker.heartbeat.interval.ms"] = "1000"
    return "".join(f"{key}={value}\n" for key, value in lines.items())


def format_storage(
    libs: Path, properties: Path, data_dir: Path, cluster_id: str | None = None
) -> bool:
    """Format the KRaft log directory once; False if it already was (data is kept).

    ``cluster_id``: the id every node of a cluster shares (a static quorum); None for one
    broker, formatted as a standalone controller."""
    if (data_dir / "meta.properties").exists():
        return False
    mode = ["--standalone"] if cluster_id is None else []
    result = subprocess.run(
        [
            java(),
            "-cp",
            f"{libs}/*",
            f"-Dlog4j2.configurationFile={LOG4J2}",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id or _random_cluster_id(),
            "-c",
            str(properties),
            *mode,
        ],
        capture_output=True,
        text=True,
        check=False,
        env={"LOG_DIR": str(data_dir.parent)},
    )
    if result.returncode != 0:
        raise StackError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")
    return True


def cluster_id(stack_dir: Path) -> str:
    """The id the stack's brokers share, made once and kept in the stack directory."""
    path = stack_dir / "kafka" / "cluster.id"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    made = _random_cluster_id()
    path.write_text(made + "\n")
    return made


def _random_cluster_id() -> str:
    """A Kafka Uuid string, as ``StorageTool random-uuid`` prints it, without a JVM start.

    Like Kafka's ``Uuid.randomUuid``, ids starting with ``-`` are redrawn: the formatter's
    argument parser would read one as an option.
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


def broker_command(
    settings: StackSettings, libs: Path, properties: Path, log_dir: Path
) -> list[str]:
    return [
        java(),
        f"-Xms{settings.kafka_heap}",
        f"-Xmx{settings.kafka_heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG4J2}",
        f"-Dkafka.logs.dir={log_dir}",
        "-cp",
        f"{libs}/*",
        "kafka.Kafka",
        str(properties),
    ]
