"""Bearer JWTs as a Starlette ``AuthenticationBackend``: the gateway and the sink's query
endpoint install the same backend, and each maps a refusal to its own 401 answer.

A request without an ``Authorization`` header is let through unauthenticated (health and
metrics need no token); a route that needs a caller asks for one with ``principal_of``, which
refuses with ``token_missing``. A header that is there but wrong is refused at once.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.authentication import AuthCredentials, AuthenticationBackend, BaseUser
from starlette.requests import HTTPConnection
from starlette.responses import Response

from sealstream.auth.errors import AuthenticationError
from sealstream.auth.tokens import Principal, TokenVerifier


def bearer_token(header: str | None) -> str:
    """The token of an ``Authorization: Bearer <JWT>`` header value."""
    if not header:
        raise AuthenticationError("send 'Authorization: Bearer <JWT>'", code="token_missing")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("use the Bearer scheme", code="token_malformed")
    return token.strip()


class PrincipalUser(BaseUser):
    """``request.user`` of an authenticated request."""

    def __init__(self, principal: Principal) -> None:
        self.principal = principal

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.principal.subject

    @property
    def identity(self) -> str:
        return self.principal.subject


_FAILURE = "sealstream.auth.failure"  # the scope key of a verifier that failed (not refused)


class BearerBackend(AuthenticationBackend):
    """Verifies the bearer token with ``verifier`` (anything with ``verify(token)``; or a
    callable returning one, for apps that build theirs at start-up)."""

    def __init__(self, verifier: TokenVerifier | Callable[[], TokenVerifier]) -> None:
        self._verifier = verifier

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        header = conn.headers.get("authorization")
        if header is None:
            return None
        verifier = self._verifier if hasattr(self._verifier, "verify") else self._verifier()
        token = bearer_token(header)
        try:
            principal = verifier.verify(token)
        except AuthenticationError:
            raise
        except Exception as exc:
            # a fault in verifying, not a refusal: the route answers it as its own errors
            conn.scope[_FAILURE] = exc
            return None
        return AuthCredentials(sorted(principal.scopes)), PrincipalUser(principal)


def principal_of(conn: HTTPConnection) -> Principal:
    """The caller, or ``token_missing``: for routes that need one."""
    user = conn.scope.get("user")
    if isinstance(user, PrincipalUser):
        return user.principal
    failure = conn.scope.get(_FAILURE)
    if isinstance(failure, Exception):
        raise failure
    raise AuthenticationError("send 'Authorization: Bearer <JWT>'", code="token_missing")


OnError = Callable[[HTTPConnection, AuthenticationError], Response]
