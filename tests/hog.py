"""Run a command with a CPU hog beside it: ``python tests/hog.py [--cores N] -- COMMAND...``.

A guarantee that holds only on a quiet machine is a bug, and CI machines are quiet. `make test`
runs the integration and fault suites a second time under this script, so a failure that
depends on timing shows in CI: ``N`` processes (default 1) each burn one core at normal
priority for as long as the command runs. Exit code: the command's.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=1, help="Cores to keep busy.")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    burn = [sys.executable, "-c", "while True: pass"]
    hogs = [subprocess.Popen(burn) for _ in range(args.cores)]
    started = time.monotonic()
    print(f"hog: {args.cores} core(s) busy beside: {' '.join(command)}", flush=True)
    try:
        return subprocess.call(command)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
        print(f"hog: stopped after {time.monotonic() - started:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
