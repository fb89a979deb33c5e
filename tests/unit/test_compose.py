"""docker-compose.yml stays true to the code: every SEALSTREAM_* variable it sets is read."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic_settings import BaseSettings

import sealstream.settings as settings_module

ROOT = Path(__file__).resolve().parents[2]


def known_variables() -> set[str]:
    names: set[str] = set()
    for obj in vars(settings_module).values():
        if isinstance(obj, type) and issubclass(obj, BaseSettings) and obj is not BaseSettings:
            prefix = obj.model_config.get("env_prefix", "")
            for field_name in obj.model_fields:
                names.add(f"{prefix}{field_name}".upper())
    return names


def test_every_compose_variable_is_a_setting() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    known = known_variables()
    used = {
        (service, key)
        for service, spec in compose["services"].items()
        for key in (spec.get("environment") or {})
        if key.startswith("SEALSTREAM_")
    }
    assert used, "compose sets no SEALSTREAM_ variables at all?"
    unknown = sorted(f"{service}: {key}" for service, key in used if key not in known)
    assert unknown == [], f"variables no settings model reads: {unknown}"


def test_compose_commands_exist_in_the_cli() -> None:
    from typer.main import get_command

    from sealstream.cli import app

    cli = get_command(app)
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for service, spec in compose["services"].items():
        if spec.get("build") and spec.get("command"):
            words = list(spec["command"])
            group = cli.get_command(None, words[0])  # type: ignore[attr-defined]
            assert group is not None, f"{service}: no command {words[0]!r}"
            if len(words) > 1 and hasattr(group, "get_command"):
                assert group.get_command(None, words[1]) is not None, f"{service}: {words}"
