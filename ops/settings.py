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

    # the Kafka principal a command run by hand on the secured local stack uses (a service's
    # command names its own role before it reads ``kafka``; `up` sets each one's explicitly)
    kafka_role = "operator"

    @cached_property
    def kafka(self) -> KafkaSettings:
        """The environment's Kafka settings; when they name no security and point at the
        secured local stack, that stack's credentials for ``kafka_role`` (so commands in
        another shell need no set-up; never sent to brokers other than the stack's)."""
        kafka = KafkaSettings()
        if kafka.security_protocol != "PLAINTEXT" or kafka.sasl_username is not None:
            return kafka
        from ops.stack.local import LocalStack

        base = StackSettings()
        stack = StackSettings.model_validate(
            {**base.model_dump(), **LocalStack.saved_overrides(base.dir)}
        )
        if stack.security != "sasl_ssl" or kafka.bootstrap_servers != stack.bootstrap_servers:
            return kafka
        if not (stack.keys_dir / "kafka").is_dir():  # that stack never started secured
            return kafka
        return stack.kafka_settings(self.kafka_role)

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
