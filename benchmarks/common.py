"""What every benchmark needs: a machine description, its own local stack, medians of
repeated runs and progress that nests under ``python -m benchmarks``.

Ports: Kafka listeners (and controllers, at +1) in 29300-29399, HTTP servers (registries,
gateways, endpoints) in 28300-28399, apart from the developer defaults and the tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, TaskID

from ops.stack.local import LocalStack
from sealstream.settings import StackSettings

RESULTS = Path(__file__).resolve().parent / "results"
console = Console()

STACK_PORT = 29300  # the shared bench stack: Kafka 29300, controller 29301, registry 28300
GATEWAY_PORT = 28310
BASELINE_PORT = 28311
E2E_KAFKA_PORT = 29310  # `sealstream up` of the end-to-end benchmark, HTTP ports from 28320
E2E_HTTP_PORT = 28320
PLAIN_STACK_PORT = 29330  # a PLAINTEXT twin of the bench stack, beside it: 29330-29331, 28330


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def describe(m: dict[str, Any]) -> str:
    """One line for every table and figure: what the numbers were measured on."""
    return (
        f"{m['cpu_count']} CPUs ({m['processor']}), {m['memory_gib']} GiB, {m['platform']}, "
        f"Python {m['python']}"
    )


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One figure per field: the median of the runs for numbers, the first run's value
    otherwise; the runs themselves are kept under ``runs``."""
    if not runs:
        raise ValueError("no runs")
    out: dict[str, Any] = {}
    for key, first in runs[0].items():
        values = [r.get(key) for r in runs]
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        out[key] = round(statistics.median(numbers), 4) if len(numbers) == len(runs) else first
    if len(runs) > 1:
        out["runs"] = runs
    return out


class Task:
    """One line of the progress display."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self.progress, self.id = progress, task

    def advance(self, n: float = 1) -> None:
        self.progress.advance(self.id, n)

    def update(self, **fields: Any) -> None:
        self.progress.update(self.id, **fields)


_live: Progress | None = None


@contextlib.contextmanager
def live() -> Iterator[Progress]:
    """The one progress display of ``python -m benchmarks``: every :func:`task` joins it."""
    global _live
    with Progress(console=console) as progress:
        _live = progress
        try:
            yield progress
        finally:
            _live = None


@contextlib.contextmanager
def task(description: str, total: float | None = None) -> Iterator[Task]:
    """A progress line: on the umbrella's display when one runs (and removed when done),
    else on a display of its own (a part run alone)."""
    if _live is not None:
        tid = _live.add_task(description, total=total)
        try:
            yield Task(_live, tid)
        finally:
            _live.remove_task(tid)
        return
    with Progress(console=console) as progress:
        yield Task(progress, progress.add_task(description, total=total))


def bench_stack(name: str, base_port: int, security: str = "sasl_ssl") -> LocalStack:
    """A local stack under benchmarks/results/tmp/<name>, up, with the schemas registered;
    secured as the default stack is, unless ``security="plaintext"``.

    Ports start at ``base_port`` (Kafka), +1 (controller), -1000 (registry), apart from the
    defaults and from other benchmarks.
    """
    stack = LocalStack(
        StackSettings(
            dir=RESULTS / "tmp" / name / "stack",
            kafka_port=base_port,
            controller_port=base_port + 1,
            registry_port=base_port - 1000,
            security=security,
        ),
        progress=console.log,
    )
    stack.up()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ops.cli",
            "schemas",
            "register",
            "--registry-url",
            stack.registry_url,
        ],
        check=True,
        capture_output=True,
        env={
            **os.environ,
            "SEALSTREAM_REGISTRY_BASIC_AUTH_FILE": str(stack.settings.registry_operator_file),
        },
    )
    return stack


def kafka_config(stack: LocalStack, **overrides: Any) -> dict[str, Any]:
    """librdkafka configuration of a benchmark's own client: the stack's admin (a super user,
    as the benchmarks make their own topics and groups), over SASL_SSL when it is secured."""
    return stack.settings.kafka_settings("admin").client_config(**overrides)


def kafka_env(stack: LocalStack) -> dict[str, str]:
    """The same as environment variables, for a process a benchmark starts."""
    from sealstream.principals import role_env

    return {
        "SEALSTREAM_KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap,
        **role_env(stack.settings, "admin"),
    }


def save(out: Path, name: str, result: dict[str, Any], markdown: str) -> None:
    """``<out>/<name>.json`` (the result as measured) and ``<out>/<name>.md``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown)


def start_service(
    argv: list[str], env: dict[str, str], ready_url: str, log: Path, name: str
) -> subprocess.Popen[bytes]:
    """Start an HTTP service as a child process and wait (60 s at most) until ``ready_url``
    answers 200; SystemExit, pointing at ``log``, if it exits or never gets ready."""
    import time

    import httpx

    proc = subprocess.Popen(argv, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(ready_url, timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited; see {log}")
        time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"{name} did not become ready; see {log}")
