"""JWT authentication, shared by every component that takes a bearer token (the gateway, the
ClickHouse sink's query endpoint, the operator tools that mint local tokens):

- ``tokens``: the keyring, the verifier (strict claims, revocations, a verified-token cache),
  ``issue_token`` and ``auth_settings``;
- ``revocation``: revocations through the compacted topic ``tokens.revoked``;
- ``backend``: the Starlette ``AuthenticationBackend`` each app installs;
- ``errors``: ``AuthenticationError``, which each app maps to its own 401.
"""

from sealstream.auth.backend import BearerBackend, PrincipalUser, bearer_token, principal_of
from sealstream.auth.errors import AuthenticationError
from sealstream.auth.tokens import (
    Keyring,
    KeyringError,
    Principal,
    Revocations,
    TokenVerifier,
    VerificationKey,
    auth_settings,
    issue_token,
)

__all__ = [
    "AuthenticationError",
    "BearerBackend",
    "Keyring",
    "KeyringError",
    "Principal",
    "PrincipalUser",
    "Revocations",
    "TokenVerifier",
    "VerificationKey",
    "auth_settings",
    "bearer_token",
    "issue_token",
    "principal_of",
]
