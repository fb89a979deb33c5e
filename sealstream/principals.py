"""Kafka principals of the local stack when it is secured (``SEALSTREAM_STACK_SECURITY=sasl_ssl``):
each role's user, its password file, and the client settings a process of that role uses.
The brokers' side (listeners, users, ACLs) is ``ops/stack/security.py``.

Each user's password is in ``<keys dir>/kafka/<user>.secret`` (owner-only); a process is told
the path (``SEALSTREAM_KAFKA_SASL_PASSWORD_FILE``), never the password.
"""

from __future__ import annotations

import contextlib
import secrets
from pathlib import Path

from sealstream.keys import read_private, write_private
from sealstream.settings import KafkaSettings, SecurityProtocol, StackSettings
from sealstream.tls import tls_dir

SCRAM = "SCRAM-SHA-512"
SUPER_USERS = ("broker", "admin")
GATEWAY, WORKER, SINK_CLICKHOUSE, SINK_OBJECTS, REGISTRY, OPERATOR = (
    "gateway", "worker", "sink-clickhouse", "sink-objects", "registry", "operator",
)  # fmt: skip
ROLES = (GATEWAY, WORKER, SINK_CLICKHOUSE, SINK_OBJECTS, REGISTRY, OPERATOR)


def secret_file(keys_dir: Path, user: str) -> Path:
    return keys_dir / "kafka" / f"{user}.secret"


def password(keys_dir: Path, user: str) -> str:
    """``user``'s password, made on first use (owner-only)."""
    path = secret_file(keys_dir, user)
    if not path.exists():
        with contextlib.suppress(FileExistsError):  # another process made it: use theirs
            write_private(path, secrets.token_urlsafe(32).encode())
    return read_private(path).decode().strip()


def client_settings(stack: StackSettings, user: str) -> KafkaSettings:
    """How ``user`` reaches the stack's brokers: SASL_SSL, SCRAM (PLAIN for the super users),
    the stack's CA, the password by file."""
    password(stack.keys_dir, user)
    return KafkaSettings(
        bootstrap_servers=stack.bootstrap_servers,
        replication_factor=stack.replication_factor,
        security_protocol=SecurityProtocol.SASL_SSL,
        sasl_mechanism="PLAIN" if user in SUPER_USERS else SCRAM,
        sasl_username=user,
        sasl_password_file=secret_file(stack.keys_dir, user),
        # read, never made here: a client must not replace the stack's trust anchor
        ssl_ca_location=tls_dir(stack.keys_dir) / "ca.pem",
    )


def client_env(stack: StackSettings, user: str) -> dict[str, str]:
    """The same as environment variables, for a process of ``user``'s role."""
    settings = client_settings(stack, user)
    return {
        "SEALSTREAM_KAFKA_SECURITY_PROTOCOL": settings.security_protocol.value,
        "SEALSTREAM_KAFKA_SASL_MECHANISM": str(settings.sasl_mechanism),
        "SEALSTREAM_KAFKA_SASL_USERNAME": user,
        "SEALSTREAM_KAFKA_SASL_PASSWORD_FILE": str(settings.sasl_password_file),
        "SEALSTREAM_KAFKA_SSL_CA_LOCATION": str(settings.ssl_ca_location),
    }


def role_env(stack: StackSettings, user: str) -> dict[str, str]:
    """:func:`client_env` on a secured stack; nothing on a PLAINTEXT one."""
    return client_env(stack, user) if stack.security == "sasl_ssl" else {}
