"""ops/upjob.py: a stop leaves no service of the job running, even when ``up`` never got to
stop them (its state file still names them), and kills nothing that is not the job's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ops.upjob import PORTS, UpJob, wait_for


def _sleeper(*marker: str) -> subprocess.Popen[bytes]:
    """A sleeping child whose command line is readable: Popen returns once the exec closed
    its error pipe, but the kernel sets the new command line a little later (CI read it
    empty once), so wait for it as a real service's would long be."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", *marker])
    cmdline = Path(f"/proc/{proc.pid}/cmdline")
    wait_for(lambda: b"time.sleep" in cmdline.read_bytes(), 10, "the child's exec", 0.01)
    return proc


def test_services_an_interrupted_up_left_running_are_killed(tmp_path: Path) -> None:
    job = UpJob(tmp_path, list(range(40000, 40000 + len(PORTS))))
    orphan, stranger = _sleeper("-m", "ops.cli", "worker"), _sleeper()
    try:
        job.dir.mkdir(parents=True)
        (job.dir / "up.json").write_text(
            json.dumps(
                {
                    "pid": 1,
                    "services": [
                        {"name": "worker-1", "pid": orphan.pid},
                        {"name": "not-ours", "pid": stranger.pid},  # a reused pid
                        {"name": "gone", "pid": None},
                    ],
                }
            )
        )
        assert job.kill_left_behind() == ["worker-1"]
        assert orphan.wait(10) == -9
        assert stranger.poll() is None
        assert "worker-1" in job.log.read_text()
        (job.dir / "up.json").unlink()  # a clean stop removes it: nothing to kill
        assert job.kill_left_behind() == []
    finally:
        for proc in (orphan, stranger):
            proc.kill()
            proc.wait(10)
