"""The layers contract (pyproject.toml ``[tool.importlinter]``) holds for the tree, and it is
not a contract that cannot fail: a copy of the packages with one deliberate upward import,
inside a function as the hidden crossings used to be, breaks it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("benchmarks", "ops", "producers", "streams", "sinks", "schemas", "sealstream")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    command = Path(sys.executable).parent / "lint-imports"
    return subprocess.run(
        [str(command), "--config", str(root / "pyproject.toml")],
        cwd=root, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(root)},
    )  # fmt: skip


def copy_tree(target: Path) -> Path:
    for name in PACKAGES:
        shutil.copytree(ROOT / name, target / name, ignore=shutil.ignore_patterns("node_modules"))
    shutil.copy(ROOT / "pyproject.toml", target / "pyproject.toml")
    return target


def test_the_tree_keeps_its_layers() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 kept, 0 broken" in done.stdout


def test_an_upward_import_inside_a_function_breaks_the_contract(tmp_path: Path) -> None:
    tree = copy_tree(tmp_path)
    (tree / "sealstream" / "upward.py").write_text(
        "def cli() -> object:\n    from ops.cli import main\n\n    return main\n"
    )
    done = lint_imports(tree)
    assert done.returncode != 0
    assert "BROKEN" in done.stdout and "sealstream.upward -> ops.cli" in done.stdout


def test_a_stage_importing_another_breaks_the_contract(tmp_path: Path) -> None:
    tree = copy_tree(tmp_path)
    (tree / "sinks" / "crossing.py").write_text("from producers.app import create_app\n")
    done = lint_imports(tree)
    assert done.returncode != 0
    assert "sinks.crossing -> producers.app" in done.stdout
