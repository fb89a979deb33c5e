"""Registry errors, each carrying the Confluent Schema Registry error code and HTTP status.

    RegistryError (500, 50001)
    ├── SubjectNotFound (404, 40401)
    ├── VersionNotFound (404, 40402)
    ├── SchemaNotFound (404, 40403)
    ├── SubjectSoftDeleted (404, 40404)
    ├── SubjectNotSoftDeleted (404, 40405)
    ├── VersionSoftDeleted (404, 40406)
    ├── VersionNotSoftDeleted (404, 40407)
    ├── SubjectConfigNotFound (404, 40408)
    ├── IncompatibleSchema (409, 409)
    ├── InvalidRequest (ValueError; 422)
    │   ├── InvalidSchema (42201)
    │   ├── InvalidVersion (42202)
    │   └── InvalidCompatibilityLevel (42203)
    └── StoreTimeout (500, 50002)

The HTTP layer turns any of them into Confluent's error body
``{"error_code": <code>, "message": <text>}`` in one handler.
"""

from __future__ import annotations

from typing import ClassVar


class RegistryError(Exception):
    """Root of every error the registry reports to a client."""

    status: ClassVar[int] = 500
    error_code: ClassVar[int] = 50001
    default_message: ClassVar[str] = "Error in the backend data store"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)

    def body(self) -> dict[str, object]:
        return {"error_code": self.error_code, "message": self.message}


class SubjectNotFound(RegistryError):
    status, error_code = 404, 40401

    def __init__(self, subject: str) -> None:
        super().__init__(f"Subject '{subject}' not found.")


class VersionNotFound(RegistryError):
    status, error_code = 404, 40402

    def __init__(self, subject: str, version: int | str) -> None:
        super().__init__(f"Version {version} not found for subject '{subject}'.")


class SchemaNotFound(RegistryError):
    status, error_code = 404, 40403
    default_message = "Schema not found"


class SubjectSoftDeleted(RegistryError):
    status, error_code = 404, 40404

    def __init__(self, subject: str) -> None:
        super().__init__(
            f"Subject '{subject}' was soft deleted. Set permanent=true to delete permanently"
        )


class SubjectNotSoftDeleted(RegistryError):
    status, error_code = 404, 40405

    def __init__(self, subject: str) -> None:
        super().__init__(
            f"Subject '{subject}' was not deleted first before being permanently deleted"
        )


class VersionSoftDeleted(RegistryError):
    status, error_code = 404, 40406

    def __init__(self, subject: str, version: int) -> None:
        super().__init__(
            f"Subject '{subject}' Version {version} was soft deleted. "
            "Set permanent=true to delete permanently"
        )


class VersionNotSoftDeleted(RegistryError):
    status, error_code = 404, 40407

    def __init__(self, subject: str, version: int) -> None:
        super().__init__(
            f"Subject '{subject}' Version {version} was not deleted first "
            "before being permanently deleted"
        )


class SubjectConfigNotFound(RegistryError):
    status, error_code = 404, 40408

    def __init__(self, subject: str) -> None:
        super().__init__(
            f"Subject '{subject}' does not have subject-level compatibility configured"
        )


class IncompatibleSchema(RegistryError):
    status, error_code = 409, 409

    def __init__(self, subject: str, messages: list[str]) -> None:
        self.messages = messages
        detail = "; ".join(messages) if messages else "incompatible"
        super().__init__(
            f"Schema being registered is incompatible with an earlier schema for subject "
            f"'{subject}', details: {detail}"
        )


class InvalidRequest(RegistryError, ValueError):
    status, error_code = 422, 422
    default_message = "Unprocessable entity"


class InvalidSchema(InvalidRequest):
    error_code = 42201
    default_message = "Invalid schema"


class InvalidVersion(InvalidRequest):
    error_code = 42202

    def __init__(self, version: str) -> None:
        super().__init__(
            f"The specified version '{version}' is not a valid version id. "
            'Allowed values are between [1, 2^31-1] and the string "latest"'
        )


class InvalidCompatibilityLevel(InvalidRequest):
    error_code = 42203

    def __init__(self, level: object) -> None:
        super().__init__(
            f"Invalid compatibility level '{level}'. Valid values are NONE, BACKWARD, "
            "BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE"
        )


class StoreTimeout(RegistryError):
    status, error_code = 500, 50002
    default_message = "Operation timed out while writing to the Kafka store"
