"""Gateway errors: each becomes one HTTP answer with a machine-readable code.

    GatewayError (500, internal_error)
    ├── AuthorizationError (403)           policy said no (reason code from the policy)
    ├── NotFound (404)                     receipt or resource unknown (for this tenant)
    ├── RequestTooLarge (413)              body or batch over the configured limits
    ├── UnsupportedMediaType (415)         the body is not JSON (Content-Type)
    ├── RecordRefused (413)                Kafka can never take the event (too large, invalid)
    ├── RateLimited (429, retry_after)     token bucket empty
    ├── InvalidRequest (ValueError; 400)   malformed JSON, nesting too deep
    │   └── ValidationFailed (422)         envelope or payload does not match its schema
    └── Unavailable (503, retry_after)     Kafka or the registry cannot take the write now

Authentication failures are ``sealstream.auth.AuthenticationError`` (the shared backend's
own), answered 401 by the app.

Every error carries ``code`` (stable, snake_case), ``message`` (what to do about it) and, where
it applies, ``field`` (a JSON path into the request).
"""

from __future__ import annotations

from typing import Any, ClassVar


class GatewayError(Exception):
    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.field = field

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


class AuthorizationError(GatewayError):
    status = 403
    default_code = "forbidden"


class NotFound(GatewayError):
    status = 404
    default_code = "not_found"


class RequestTooLarge(GatewayError):
    status = 413
    default_code = "request_too_large"


class UnsupportedMediaType(GatewayError):
    status = 415
    default_code = "unsupported_media_type"


class RecordRefused(GatewayError):
    """Kafka refused the record for good: a retry of the same event cannot succeed."""

    status = 413
    default_code = "event_too_large"


class RateLimited(GatewayError):
    status = 429
    default_code = "rate_limited"

    def __init__(
        self,
        message: str,
        retry_after_s: float,
        code: str | None = None,
        verdict: Any = None,
    ) -> None:
        super().__init__(message, code)
        self.retry_after_s = retry_after_s
        self.verdict = verdict  # the limiter's Verdict, for the RateLimit-* headers


class InvalidRequest(GatewayError, ValueError):
    status = 400
    default_code = "invalid_request"


class ValidationFailed(InvalidRequest):
    status = 422
    default_code = "validation_failed"


class Unavailable(GatewayError):
    status = 503
    default_code = "unavailable"

    def __init__(self, message: str, retry_after_s: float = 5.0, code: str | None = None) -> None:
        super().__init__(message, code)
        self.retry_after_s = retry_after_s
