"""The operator tools' settings: one aggregate of the components' pydantic-settings models.

The root command creates it once (``ctx.obj``) and passes it down. Each model is read from the
environment the first time a tool asks for it, so a command never fails on the settings of a
component it does not use, and ``up`` and ``demo``, which set the environment of the processes
they start, take a fresh aggregate (:meth:`Settings.reloaded`) after doing so.
"""

from __future__ import annotations

from functools import cached_property

from sealstream.auth import auth_settings
from sealstream.settings import (
    AuthSettings,
    ClickHouseSettings,
    GatewaySettings,
    KafkaSettings,
    KeySettings,
    ObjectStoreSettings,
    RegistrySettings,
    SinkSettings,
    StackSettings,
    UpSettings,
    WorkerSettings,
)


class Settings:
    """Every component's settings the operator tools read, each loaded once, when first used."""

    @cached_property
    def kafka(self) -> KafkaSettings:
        return KafkaSettings()

    @cached_property
    def registry(self) -> RegistrySettings:
        return RegistrySettings()

    @cached_property
    def worker(self) -> WorkerSettings:
        return WorkerSettings()

    @cached_property
    def sink(self) -> SinkSettings:
        return SinkSettings()

    @cached_property
    def clickhouse(self) -> ClickHouseSettings:
        return ClickHouseSettings()

    @cached_property
    def objects(self) -> ObjectStoreSettings:
        return ObjectStoreSettings()

    @cached_property
    def keys(self) -> KeySettings:
        return KeySettings()

    @cached_property
    def gateway(self) -> GatewaySettings:
        return GatewaySettings()

    @cached_property
    def auth(self) -> AuthSettings:
        """The auth settings as the environment gives them (the revocation topic)."""
        return AuthSettings()

    @cached_property
    def token_auth(self) -> AuthSettings:
        """The auth settings tokens are minted and verified with: the environment's, or the
        local stack's generated HS256 keyring (created here if allowed)."""
        return auth_settings(self.keys)

    @cached_property
    def stack(self) -> StackSettings:
        return StackSettings()

    @cached_property
    def up(self) -> UpSettings:
        return UpSettings()

    def reloaded(self) -> Settings:
        """A fresh aggregate, for after the environment changed (``up``, ``demo``)."""
        return Settings()
