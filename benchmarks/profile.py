"""py-spy profiles of the worker, on plain records and on frames, summarised by function.

    python -m benchmarks.profile [--events 60000] [--frames 1,16] [--seconds 12]

For each input shape: a fresh set of topics on the benchmark stack, ``--events`` payment
events (one per record, or frames of n), one ``sealstream worker`` over them, and
``py-spy record --rate 200 --format raw`` of the worker for ``--seconds`` once it has been
running 10 s. Writes ``benchmarks/results/profiles/worker-{plain,frames<n>}.txt`` (which
functions the samples were in: self and inclusive shares; the raw stacks stay in
``benchmarks/results/tmp/profile/``, for a flame graph) and prints the events/s of each run.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.common import RESULTS, STACK_PORT, bench_stack, console, task
from benchmarks.processor import fresh_topics, produce_raw, run_worker
from sealstream.settings import KeySettings

OUT = RESULTS / "profiles"
PY_SPY = Path(sys.executable).with_name("py-spy")
# frames of these are the runtime's and the pipeline's own (the inclusive table)
OWN = ("streams/", "schemas/", "sealstream/", "faust/", "aiokafka/", "mode/")


def summarise(raw: Path, top: int = 25) -> str:
    """The self and inclusive share of each function (line numbers merged) in py-spy's raw
    output, of all samples py-spy took (it leaves idle threads out)."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        total += int(count)
        own[frames[-1]] += int(count)
        for name in set(frames):
            inclusive[name] += int(count)
    lines = [f"{total} samples", "", "## self", ""]
    lines += [f"{100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines += ["", "## inclusive (the pipeline's, faust's and aiokafka's functions)", ""]
    picked = [(name, n) for name, n in inclusive.most_common() if any(o in name for o in OWN)]
    lines += [f"{100 * n / total:5.1f}%  {name}" for name, n in picked[:top]]
    return "\n".join(lines) + "\n"


def profile_worker(events: int, frame: int, seconds: float, name: str) -> float:
    """One worker over ``events`` events (``frame`` per record) under py-spy; its events/s."""
    stack = bench_stack("profile", STACK_PORT)
    work = RESULTS / "tmp" / "profile"
    work.mkdir(parents=True, exist_ok=True)
    raw = work / f"{name}.raw"
    try:
        topics = fresh_topics(stack)
        with task(f"profile: producing {events:,} events ({name})"):
            produce_raw(stack, topics["raw"], events, frame)

        def spy(pid: int) -> None:
            def record() -> None:
                time.sleep(10)
                command = [str(PY_SPY), "record", "--pid", str(pid), "--rate", "200"]
                command += ["--nonblocking", "--format", "raw", "--duration", str(int(seconds))]
                subprocess.run([*command, "-o", str(raw)], check=False, capture_output=True)

            threading.Thread(target=record, daemon=True).start()

        with task(f"profile: worker under py-spy ({name})"):
            keys = KeySettings(dir=work / "keys")
            rate = run_worker(stack, topics, keys, events, work, frame, on_start=spy)
    finally:
        stack.down()
    if raw.exists():
        (OUT / f"{name}.txt").write_text(
            f"# worker, {name}: {rate:,.0f} events/s\n\n" + summarise(raw)
        )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--frames", default="1,16", help="events per record, one run each")
    parser.add_argument("--seconds", type=float, default=12.0)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for frame in (int(f) for f in args.frames.split(",")):
        name = "worker-plain" if frame == 1 else f"worker-frames{frame}"
        rate = profile_worker(args.events, frame, args.seconds, name)
        console.print(f"{name}: {rate:,.0f} events/s -> {OUT / name}.txt")


if __name__ == "__main__":
    main()
