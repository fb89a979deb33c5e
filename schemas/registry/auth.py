"""Who may change the registry: HTTP basic authentication, as Confluent Schema Registry
deployments configure it, with two roles.

- ``write``: register schemas, delete subjects and versions, change compatibility or mode;
- ``read``: everything else (lookups, compatibility checks, reads). Reads are open to anyone
  unless ``SEALSTREAM_REGISTRY_AUTH_READS`` asks for credentials on them too.

Users are kept in a JSON file (``SEALSTREAM_REGISTRY_USERS_FILE``, owner-only: see
``sealstream.keys.check_private``) holding for each user its roles and an scrypt hash of its
password, never the password::

    {"users": {"operator": {"roles": ["write"], "salt": "<b64>", "scrypt": "<b64>"}}}

The local stack makes one user, ``operator``, on first start, and keeps its ``user:password``
for clients in ``<keys dir>/registry-operator.secret``; the stages only read, so they get no
credential. Written by hand over Starlette because the rules are the registry's own (which
route is a mutation), and the hashing is the standard library's scrypt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sealstream.keys import InsecureKeyFile, read_private, write_private

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

WRITE, READ = "write", "read"
ROLES = frozenset({WRITE, READ})
OPERATOR = "operator"
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
# the only requests with a body that change nothing: a lookup and a compatibility check
_LOOKUP = re.compile(r"^/subjects/[^/]+/?$")
_CHECK = re.compile(r"^/compatibility/subjects/[^/]+/versions(/[^/]+)?/?$")
REALM = 'Basic realm="sealstream-registry", charset="UTF-8"'


class UsersFileError(ValueError):
    """A users file that cannot be used."""


@dataclass(frozen=True)
class User:
    name: str
    roles: frozenset[str]
    salt: bytes
    digest: bytes

    def check(self, password: str) -> bool:
        got = hashlib.scrypt(password.encode(), salt=self.salt, **_SCRYPT)
        return hmac.compare_digest(got, self.digest)


def hashed(name: str, password: str, roles: list[str]) -> dict[str, Any]:
    """A users-file entry for ``name``: its roles and an scrypt hash of ``password``."""
    unknown = set(roles) - ROLES
    if unknown:
        raise UsersFileError(
            f"unknown roles {sorted(unknown)} for {name!r}; roles: {sorted(ROLES)}"
        )
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return {
        "roles": sorted(roles),
        "salt": base64.b64encode(salt).decode(),
        "scrypt": base64.b64encode(digest).decode(),
    }


def load_users(path: Path) -> dict[str, User]:
    try:
        doc = json.loads(read_private(path))
        return {
            name: User(
                name,
                frozenset(entry["roles"]) & ROLES,
                base64.b64decode(entry["salt"], validate=True),
                base64.b64decode(entry["scrypt"], validate=True),
            )
            for name, entry in doc["users"].items()
        }
    except InsecureKeyFile:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise UsersFileError(
            f'{path}: a users file is JSON {{"users": {{name: {{"roles", "salt", "scrypt"}}}}}}'
        ) from exc


def ensure_operator(users_file: Path, client_file: Path) -> bool:
    """Make the local stack's ``operator`` user once: its hash in ``users_file``, its
    ``operator:<password>`` in ``client_file`` (both owner-only). False if they exist."""
    if users_file.exists() and client_file.exists():
        return False
    password = secrets.token_urlsafe(32)
    for path in (users_file, client_file):
        path.unlink(missing_ok=True)
    write_private(
        users_file,
        json.dumps({"users": {OPERATOR: hashed(OPERATOR, password, [WRITE])}}, indent=2).encode(),
    )
    write_private(client_file, f"{OPERATOR}:{password}".encode())
    return True


def is_mutation(method: str, path: str) -> bool:
    """Whether a request may change the registry, deny-by-default: every method but GET, HEAD
    and OPTIONS does, except ``POST /subjects/{s}`` (a lookup) and ``POST /compatibility/...``
    (a check). A route added later is guarded until it is listed here as a read."""
    if method in ("GET", "HEAD", "OPTIONS"):
        return False
    return not (method == "POST" and (_LOOKUP.match(path) or _CHECK.match(path)))


class BasicAuth:
    """ASGI middleware: 401 (with ``WWW-Authenticate``) for a request that needs credentials and
    has none or wrong ones, 403 for a mutation by a user without ``write``; ``/health`` is open.

    A password check costs an scrypt (tens of ms), run in a thread so the event loop keeps
    serving; headers that passed are remembered (by their SHA-256) so clients that send them
    on every request pay it once."""

    def __init__(self, app: ASGIApp, users: dict[str, User], reads_need_auth: bool) -> None:
        import anyio

        self.app, self.users, self.reads_need_auth = app, users, reads_need_auth
        self._passed: dict[bytes, User] = {}
        # at most 2 password checks at once, on threads of their own: a flood of wrong
        # passwords costs 2 x 16 MiB and queues, instead of filling the thread pool the
        # registry's writes also run on
        self._checks = anyio.CapacityLimiter(2)
        self._nobody = User("", frozenset(), b"\0" * 16, b"\0" * 32)  # same cost, never passes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/health":
            await self.app(scope, receive, send)
            return
        mutation = is_mutation(scope["method"], scope["path"])
        if not mutation and not self.reads_need_auth:
            await self.app(scope, receive, send)
            return
        user = await self._user(scope)
        if user is None:
            what = "changing the registry" if mutation else "reading the registry"
            await _refuse(send, 401, 40101, f"{what} needs credentials: HTTP basic auth of a "
                          "registry user (SEALSTREAM_REGISTRY_BASIC_AUTH_FILE for Sealstream's "
                          "clients; the local stack's operator is in <keys dir>/"
                          "registry-operator.secret)")  # fmt: skip
            return
        if mutation and WRITE not in user.roles:
            await _refuse(send, 403, 40301, f"user {user.name!r} may not change the registry: "
                          f"that needs the {WRITE!r} role")  # fmt: skip
            return
        await self.app(scope, receive, send)

    async def _user(self, scope: Scope) -> User | None:
        import anyio

        header = dict(scope["headers"]).get(b"authorization", b"")
        if header[:6].lower() != b"basic ":
            return None
        seen = hashlib.sha256(header).digest()
        if seen in self._passed:
            return self._passed[seen]
        try:
            name, _, password = (
                base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            return None
        user = self.users.get(name)
        # an unknown name costs the same scrypt: timing does not tell which names exist
        checked = user or self._nobody
        ok = await anyio.to_thread.run_sync(checked.check, password, limiter=self._checks)
        if user is None or not ok:
            return None
        if len(self._passed) >= 256:
            self._passed.clear()
        self._passed[seen] = user
        return user


async def _refuse(send: Send, status: int, code: int, message: str) -> None:
    body = json.dumps({"error_code": code, "message": message}).encode()
    headers = [
        (b"content-type", b"application/vnd.schemaregistry.v1+json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if status == 401:
        headers.append((b"www-authenticate", REALM.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
