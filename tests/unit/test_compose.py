"""docker-compose.yml stays true to the code and to the compose specification.

There is no Docker engine here, so the stack is validated instead of run: the file against the
compose specification (check-jsonschema's vendored schema), every SEALSTREAM_* variable against
the settings models, every command against the CLI, healthchecks and dependencies against each
other, and Prometheus' scrape targets against the metrics ports the services configure.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic_settings import BaseSettings

import sealstream.settings as settings_module

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROMETHEUS_FILE = ROOT / "deploy" / "prometheus" / "prometheus.yml"

# Long-running services are restarted whatever their exit; init jobs only until they succeed.
LONG_RUNNING_RESTART = {"unless-stopped", "always"}
INIT_JOB_RESTART = "on-failure"
TOOLS_PROFILE = "tools"

# For each service running our image: the variable naming the port of its HTTP endpoint
# (its healthcheck target), and the /metrics port Prometheus scrapes, if any.
HTTP_PORT_VARIABLES = (
    "SEALSTREAM_GATEWAY_PORT",
    "SEALSTREAM_REGISTRY_PORT",
    "SEALSTREAM_WORKER_METRICS_PORT",
    "SEALSTREAM_SINK_CLICKHOUSE_METRICS_PORT",
    "SEALSTREAM_SINK_OBJECTS_METRICS_PORT",
)
# metrics port variable -> the variable of the address that port binds
METRICS_PORT_VARIABLES = {
    "SEALSTREAM_GATEWAY_PORT": "SEALSTREAM_GATEWAY_HOST",  # /metrics is on the API port
    "SEALSTREAM_WORKER_METRICS_PORT": "SEALSTREAM_WORKER_METRICS_HOST",
    "SEALSTREAM_SINK_CLICKHOUSE_METRICS_PORT": "SEALSTREAM_SINK_METRICS_HOST",
    "SEALSTREAM_SINK_OBJECTS_METRICS_PORT": "SEALSTREAM_SINK_METRICS_HOST",
}


def load_compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE_FILE.read_text()))


def environment(spec: dict[str, Any]) -> dict[str, str]:
    """A service's environment; compose allows a mapping or a list of KEY=VALUE."""
    env = spec.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def known_variables() -> set[str]:
    from sinks.clickhouse import roles  # a model of its own: what migrate grants on a server

    names: set[str] = set()
    for obj in [*vars(settings_module).values(), roles.AccessSettings]:
        if isinstance(obj, type) and issubclass(obj, BaseSettings) and obj is not BaseSettings:
            prefix = obj.model_config.get("env_prefix", "")
            for field_name in obj.model_fields:
                names.add(f"{prefix}{field_name}".upper())
    return names


def unknown_variables(compose: dict[str, Any]) -> tuple[list[str], int]:
    """(``service: VARIABLE`` for each SEALSTREAM_* variable no settings model reads,
    how many SEALSTREAM_* variables the file sets in all)."""
    known = known_variables()
    used = {
        (service, key)
        for service, spec in compose["services"].items()
        for key in environment(spec)
        if key.startswith("SEALSTREAM_")
    }
    unknown = sorted(f"{service}: {key}" for service, key in used if key not in known)
    return unknown, len(used)


def test_every_compose_variable_is_a_setting() -> None:
    unknown, used = unknown_variables(load_compose())
    assert used, "compose sets no SEALSTREAM_ variables at all?"
    assert unknown == [], f"variables no settings model reads: {unknown}"


def test_the_variable_check_reports_a_variable_nobody_reads() -> None:
    compose = load_compose()
    compose["services"]["gateway"]["environment"]["SEALSTREAM_NOT_A_SETTING"] = "1"
    compose["services"]["worker"]["environment"]["SEALSTREAM_WORKER_METRICS_PORTS"] = "9100"
    unknown, _ = unknown_variables(compose)
    assert unknown == [
        "gateway: SEALSTREAM_NOT_A_SETTING",
        "worker: SEALSTREAM_WORKER_METRICS_PORTS",
    ]
    # the list form of `environment` is checked too
    as_list = {"services": {"x": {"environment": ["SEALSTREAM_NOT_A_SETTING=1"]}}}
    assert unknown_variables(as_list) == (["x: SEALSTREAM_NOT_A_SETTING"], 1)


def test_compose_commands_exist_in_the_cli() -> None:
    from typer.main import get_command

    from ops.cli import app

    cli = get_command(app)
    compose = load_compose()
    for service, spec in compose["services"].items():
        if spec.get("build") and spec.get("command"):
            words = list(spec["command"])
            group = cli.get_command(None, words[0])  # type: ignore[attr-defined]
            assert group is not None, f"{service}: no command {words[0]!r}"
            if len(words) > 1 and hasattr(group, "get_command"):
                assert group.get_command(None, words[1]) is not None, f"{service}: {words}"


def check_compose_schema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip


def test_compose_file_follows_the_compose_specification() -> None:
    result = check_compose_schema(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("service", "key", "value"),
    [
        ("gateway", "ports", "not-a-list"),  # a wrong type
        ("worker", "helthcheck", {"test": ["CMD", "true"]}),  # a key the spec does not have
        ("clickhouse", "restart", ["unless-stopped"]),
    ],
)
def test_the_schema_check_refuses_an_invalid_service(
    tmp_path: Path, service: str, key: str, value: Any
) -> None:
    compose = load_compose()
    copy = tmp_path / "docker-compose.yml"
    copy.write_text(yaml.safe_dump(compose, sort_keys=False))
    assert check_compose_schema(copy).returncode == 0, "the untouched copy must pass"
    compose["services"][service][key] = value
    copy.write_text(yaml.safe_dump(compose, sort_keys=False))
    result = check_compose_schema(copy)
    assert result.returncode != 0, f"accepted {service}.{key}: {value!r}"
    assert f"$.services.{service}" in result.stdout + result.stderr


def one_shot_jobs(compose: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(init jobs, tool jobs): the services that are meant to exit.

    * an init job is a service another one waits for with
      ``condition: service_completed_successfully`` (topics, bucket);
    * a tool job is a service only in the ``tools`` profile, run on demand with
      ``docker compose run --rm`` (schemas).

    Every other service is long-running.
    """
    init = {
        name
        for spec in compose["services"].values()
        for name, dep in (spec.get("depends_on") or {}).items()
        if isinstance(dep, dict) and dep.get("condition") == "service_completed_successfully"
    }
    tools = {
        name
        for name, spec in compose["services"].items()
        if spec.get("profiles") == [TOOLS_PROFILE]
    }
    return init, tools


def healthcheck_port(spec: dict[str, Any]) -> int | None:
    """The port of the http://localhost:PORT/... URL a healthcheck probes, if it probes one."""
    for word in " ".join(map(str, spec["healthcheck"]["test"])).replace("'", " ").split():
        if word.startswith("http://localhost"):
            return urlsplit(word).port
    return None


def test_every_long_running_service_has_a_healthcheck() -> None:
    compose = load_compose()
    services: dict[str, dict[str, Any]] = compose["services"]
    init, tools = one_shot_jobs(compose)
    assert init == {"topics", "bucket"}
    assert tools == {"schemas"}
    assert not init & tools
    for name in init:
        spec = services[name]
        assert spec.get("restart") == INIT_JOB_RESTART, f"{name}: retried until it succeeds"
        assert "healthcheck" not in spec, f"{name} exits; a healthcheck would never pass"
    for name in tools:
        assert "restart" not in services[name], f"{name}: `run --rm` takes no restart policy"
    long_running = set(services) - init - tools
    assert {"kafka", "schema-registry", "clickhouse", "minio", "gateway", "worker",
            "sink-clickhouse", "sink-objects", "prometheus", "grafana"} <= long_running  # fmt: skip
    for name in sorted(long_running):
        spec = services[name]
        check = spec.get("healthcheck")
        assert check and not check.get("disable"), f"{name}: no healthcheck"
        assert check["test"] and check["test"][0] in {"CMD", "CMD-SHELL"}, name
        assert spec.get("restart") in LONG_RUNNING_RESTART, f"{name}: restart {spec.get('restart')}"
    # A service of our image probes the HTTP port its own environment configures.
    for name in sorted(long_running):
        spec = services[name]
        if not spec.get("build"):
            continue
        env = environment(spec)
        ports = {int(env[v]) for v in HTTP_PORT_VARIABLES if v in env}
        assert healthcheck_port(spec) in ports, f"{name}: probes a port it does not serve"
    # What services wait for is there to wait for.
    for name, spec in services.items():
        for dep, how in (spec.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            condition = how.get("condition") if isinstance(how, dict) else None
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health"
            if condition == "service_completed_successfully":
                assert dep in init


def test_the_services_use_the_confluent_registry() -> None:
    services = load_compose()["services"]
    registry = services["schema-registry"]
    assert registry["image"].startswith("confluentinc/cp-schema-registry:")
    tag = registry["image"].split(":", 1)[1]
    assert tag.split(".")[0] in {"7", "8"} and tag.count(".") == 2, f"pin a release: {tag}"
    env = environment(registry)
    assert env["SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["SCHEMA_REGISTRY_LISTENERS"] == "http://0.0.0.0:8081"
    assert "/subjects" in " ".join(registry["healthcheck"]["test"])
    clients = {
        name: environment(spec)["SEALSTREAM_REGISTRY_URL"]
        for name, spec in services.items()
        if "SEALSTREAM_REGISTRY_URL" in environment(spec)
    }
    assert {"gateway", "worker", "sink-clickhouse", "sink-objects", "schemas"} <= set(clients)
    assert set(clients.values()) == {"http://schema-registry:8081"}
    own = services["registry-sealstream"]
    assert own["profiles"] == ["own-registry"]
    assert own["command"] == ["registry", "serve"]
    assert not {p.split(":")[0] for p in own["ports"]} & {
        p.split(":")[0] for p in registry["ports"]
    }


def scrape_targets(prometheus: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(job, host, port) of every target, static or found by DNS (one A record per replica)."""
    targets = []
    for job in prometheus["scrape_configs"]:
        assert set(job) <= {"job_name", "metrics_path", "static_configs", "dns_sd_configs"}, job
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                targets.append((job["job_name"], host, int(port)))
        for dns in job.get("dns_sd_configs", []):
            assert dns.get("type", "SRV") == "A", "compose DNS has A records, no SRV"
            for host in dns["names"]:
                targets.append((job["job_name"], host, int(dns["port"])))
        assert job.get("metrics_path", "/metrics") == "/metrics"
    return targets


def test_prometheus_scrapes_the_metrics_ports_compose_configures() -> None:
    compose = load_compose()
    services = compose["services"]
    targets = scrape_targets(yaml.safe_load(PROMETHEUS_FILE.read_text()))
    assert targets
    for job, host, port in targets:
        assert host in services, f"{job}: {host} is not a compose service"
        env = environment(services[host])
        configured = {
            int(env[var]): host_var
            for var, host_var in METRICS_PORT_VARIABLES.items()
            if var in env
        }
        assert port in configured, (
            f"{job}: {host}:{port}, but {host} serves /metrics on {configured}"
        )
        assert env.get(configured[port]) == "0.0.0.0", f"{host}: /metrics must bind 0.0.0.0"
    # ... and every service that serves metrics is scraped
    serving = {
        name
        for name, spec in services.items()
        if any(v in environment(spec) for v in METRICS_PORT_VARIABLES) and "profiles" not in spec
    }
    assert serving == {host for _, host, _ in targets} == {
        "gateway", "worker", "sink-clickhouse", "sink-objects",
    }  # fmt: skip
    # the mounted file is this one
    mounts = services["prometheus"]["volumes"]
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts


def test_the_image_and_its_context() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "FROM python:3.11-slim" in dockerfile
    assert "WORKDIR /app" in dockerfile and "pip install ." in dockerfile
    assert 'ENTRYPOINT ["sealstream"]' in dockerfile
    for directory in ("config", "schemas", "sealstream", "producers", "streams", "sinks"):
        assert f"COPY {directory} {directory}" in dockerfile
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".sealstream", ".git", "tests/artifacts", "benchmarks/results/tmp"} <= ignored
    assert "**/node_modules" in ignored  # node_modules anywhere (the dashboard's npm packages)
    services = load_compose()["services"]
    for spec in services.values():
        if spec.get("build"):
            assert spec["build"] == "."
            for value in environment(spec).values():
                if value.startswith("/app/"):
                    assert (ROOT / value.removeprefix("/app/")).exists(), value
