"""What every benchmark needs: a machine description and its own local stack."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from sealstream.settings import StackSettings
from sealstream.stack.local import LocalStack

RESULTS = Path(__file__).resolve().parent / "results"
console = Console()


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def bench_stack(name: str, base_port: int) -> LocalStack:
    """A local stack under benchmarks/results/tmp/<name>, up, with the schemas registered.

    Ports start at ``base_port`` (Kafka), +1 (controller), -1000 (registry), apart from the
    defaults and from other benchmarks.
    """
    stack = LocalStack(
        StackSettings(
            dir=RESULTS / "tmp" / name / "stack",
            kafka_port=base_port,
            controller_port=base_port + 1,
            registry_port=base_port - 1000,
        ),
        progress=console.log,
    )
    stack.up()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "sealstream.cli",
            "schemas",
            "register",
            "--registry-url",
            stack.registry_url,
        ],
        check=True,
        capture_output=True,
    )
    return stack
