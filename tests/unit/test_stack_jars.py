"""Jar resolution without the network: a stand-in `mvn` on PATH plays Maven."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

from ops.stack import kafka as runtime
from ops.stack.process import StackError
from sealstream.settings import StackSettings
from tests.patching import this_thread

FAKE_MVN = """#!{python}
import sys
from pathlib import Path

Path({calls!r}).open("a").write(" ".join(sys.argv[1:]) + "\\n")
out = Path(next(a.split("=", 1)[1] for a in sys.argv if a.startswith("-DoutputDirectory=")))
print("[INFO] Downloaded from central: https://repo/org/x/kafka_2.13-9.jar (1 kB at 1 kB/s)")
if {fail}:
    print("[ERROR] Could not resolve dependencies for project io.sealstream")
    sys.exit(1)
out.mkdir(parents=True, exist_ok=True)
for name in ("kafka_2.13-9.jar", "kafka-clients-9.jar"):
    print(f"[INFO] Copying {{name}} to {{out / name}}")
    (out / name).write_bytes(b"jar")
"""


def _fake_mvn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "mvn-calls.txt"
    mvn = bin_dir / "mvn"
    mvn.write_text(FAKE_MVN.format(python=sys.executable, calls=str(calls), fail=fail))
    mvn.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    return calls


def test_maven_runs_once_then_the_cache_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _fake_mvn(tmp_path, monkeypatch)
    settings = StackSettings(cache_dir=tmp_path / "cache")
    messages: list[str] = []

    libs = runtime.resolve_jars(settings, messages.append)

    assert libs == tmp_path / "cache" / f"kafka-{runtime.kafka_version()}" / "libs"
    assert (libs / runtime.COMPLETE_MARKER).exists() and (libs / "kafka_2.13-9.jar").exists()
    assert "dependency:copy-dependencies" in calls.read_text()
    assert f"-DoutputDirectory={libs}" in calls.read_text()
    assert any("downloaded (kafka_2.13-9.jar)" in m for m in messages)
    assert any("copying" in m for m in messages)

    calls.unlink()
    assert runtime.resolve_jars(settings) == libs
    assert not calls.exists()  # marker present: Maven is not run again


def test_a_half_finished_download_is_redone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _fake_mvn(tmp_path, monkeypatch)
    settings = StackSettings(cache_dir=tmp_path / "cache")
    libs = runtime.libs_dir(settings)
    libs.mkdir(parents=True)
    (libs / "truncated.jar").write_bytes(b"half")  # an interrupted earlier run, no marker

    runtime.resolve_jars(settings)

    assert calls.exists()
    assert not (libs / "truncated.jar").exists()
    assert runtime.jars_cached(settings)


def test_maven_failure_leaves_no_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_mvn(tmp_path, monkeypatch, fail=True)
    settings = StackSettings(cache_dir=tmp_path / "cache")
    with pytest.raises(StackError, match=r"Maven failed \(exit 1\)[\s\S]*Could not resolve"):
        runtime.resolve_jars(settings)
    assert not runtime.jars_cached(settings)


def test_missing_maven_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StackError, match="Maven"):
        runtime.resolve_jars(StackSettings(cache_dir=tmp_path / "cache"))


def test_missing_java_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StackError, match="java is not on PATH"):
        runtime.java()


def test_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    draws = iter([uuid.UUID(bytes=b"\xf8" + b"\0" * 15), uuid.UUID(int=42)])
    monkeypatch.setattr(runtime.uuid, "uuid4", this_thread(uuid.uuid4, lambda: next(draws)))
    cluster_id = runtime._random_cluster_id()
    assert len(cluster_id) == 22 and not cluster_id.startswith("-")
    assert cluster_id == "AAAAAAAAAAAAAAAAAAAAKg"  # the second draw
