"""The one error of authentication: each app that installs the backend maps it to its 401.

It is Starlette's ``AuthenticationError``, so ``AuthenticationMiddleware`` hands a refused
token to the app's ``on_error`` instead of failing the request with a 500."""

from __future__ import annotations

from typing import ClassVar

from starlette.authentication import AuthenticationError as StarletteAuthenticationError


class AuthenticationError(StarletteAuthenticationError):
    """A bearer token was missing, malformed or refused; ``code`` says which (stable,
    snake_case: ``token_missing``, ``token_expired``, ...), ``message`` what to do."""

    status: ClassVar[int] = 401

    def __init__(self, message: str, code: str = "token_invalid") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
