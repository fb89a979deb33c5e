"""Kafka security for the local stack (``SEALSTREAM_STACK_SECURITY=sasl_ssl``): TLS listeners
with certificates from the stack's CA, SASL authentication, the KRaft standard authorizer, and
least-privilege ACLs for one principal per role.

Listeners: clients and brokers use ``SASL_SSL`` on the Kafka port, the KRaft controllers
``SASL_SSL`` on the controller port. Two kinds of users:

- ``broker`` and ``admin`` (super users): SASL/PLAIN users declared in each broker's
  ``server.properties`` (owner-only), because they must exist before the cluster's metadata
  does: brokers and controllers talk as ``broker``; the stack creates users and ACLs as
  ``admin``.
- one SCRAM-SHA-512 user per role, created by the stack through the Admin API, with the ACLs of
  :func:`acls` (a role's topics, groups and transactional ids, nothing else).

Passwords and client settings per role: ``sealstream/principals.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sealstream.keys import read_private
from sealstream.principals import (
    GATEWAY,
    OPERATOR,
    REGISTRY,
    ROLES,
    SCRAM,
    SINK_CLICKHOUSE,
    SINK_OBJECTS,
    SUPER_USERS,
    WORKER,
    password,
)  # fmt: skip
from sealstream.settings import KafkaSettings, StackSettings, TopicSettings
from sealstream.tls import ensure_ca, issue


def _pem_value(pem: bytes) -> str:
    """A PEM block as one Java-properties value (``\\n`` escapes the line breaks)."""
    return pem.decode().strip().replace("\n", "\\n")


def broker_properties(
    stack: StackSettings, host: str, port: int, controller: int
) -> dict[str, str]:
    """The lines a broker of a secured stack adds to (and overrides in) its properties."""
    keys = stack.keys_dir
    ca = ensure_ca(keys)
    cert = issue(keys, "kafka", server_hosts=[host])
    plain_users = " ".join(f'user_{u}="{password(keys, u)}"' for u in SUPER_USERS)
    jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="broker" password="{password(keys, "broker")}" {plain_users};'
    )
    scram_jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    return {
        "listeners": f"SASL_SSL://{host}:{port},CONTROLLER://{host}:{controller}",
        "advertised.listeners": f"SASL_SSL://{host}:{port}",
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SASL_SSL",
        "inter.broker.listener.name": "SASL_SSL",
        "sasl.enabled.mechanisms": f"{SCRAM},PLAIN",
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.sasl_ssl.plain.sasl.jaas.config": jaas,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram_jaas,
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": jaas,
        "ssl.keystore.type": "PEM",
        "ssl.keystore.certificate.chain": _pem_value(cert.cert.read_bytes()),
        "ssl.keystore.key": _pem_value(read_private(cert.key)),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.certificates": _pem_value(ca.cert.read_bytes()),
        "ssl.endpoint.identification.algorithm": "https",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": ";".join(f"User:{u}" for u in SUPER_USERS),
    }


@dataclass(frozen=True)
class Grant:
    """``operations`` on a resource (``topic``, ``group``, ``transactional_id``, ``cluster``)
    named ``name`` (a prefix when ``prefixed``)."""

    resource: str
    name: str
    operations: tuple[str, ...]
    prefixed: bool = False
    deny: bool = False  # Kafka applies a DENY before any ALLOW


def acls(topics: TopicSettings | None = None) -> dict[str, list[Grant]]:
    """Each role's grants. Reading a topic includes describing it; every role may use
    consumer groups named ``sealstream-*`` (its readers make throwaway ones)."""
    t = topics or TopicSettings()
    read, write = ("READ", "DESCRIBE"), ("WRITE", "DESCRIBE")
    groups = Grant("group", "sealstream-", ("READ", "DESCRIBE"), prefixed=True)

    def topic(name: str, ops: tuple[str, ...]) -> Grant:
        return Grant("topic", name, ops)

    sink = [
        *(
            topic(n, read)
            for n in (
                t.signed,
                t.decisions,
                t.raw_dlq,
                t.checkpoints,
                t.receipts,
                t.dlq_replays,
                t.signed_dlq,
                t.revocations,
            )  # revocations: the query endpoint's tokens
        ),
        topic(t.signed_dlq, write),  # a row its store refuses is dead-lettered
        groups,
    ]
    worker_app = "sealstream-processor-"  # faust: changelog topics, transactional ids
    grants: dict[str, list[Grant]] = {
        GATEWAY: [
            *(topic(n, write) for n in (t.raw, t.decisions, t.receipts)),
            *(topic(n, read) for n in (t.receipts, t.revocations, t.tenants)),
            *(topic(n, ("DESCRIBE_CONFIGS",)) for n in (t.raw, t.signed, t.raw_dlq)),
            groups,
        ],
        WORKER: [
            *(topic(n, read) for n in (t.raw, t.signed, t.dlq_replays, t.tenants, t.revocations)),
            *(topic(n, write) for n in (t.signed, t.raw_dlq, t.checkpoints)),
            *(topic(n, ("DESCRIBE_CONFIGS",)) for n in (t.signed, t.raw_dlq)),  # record limits
            Grant("topic", worker_app, ("ALL",), prefixed=True),
            Grant("transactional_id", worker_app, ("WRITE", "DESCRIBE"), prefixed=True),
            Grant("group", "sealstream-processor", ("READ", "DESCRIBE"), prefixed=True),
            groups,
        ],
        SINK_CLICKHOUSE: [
            *sink,
            topic(t.decisions, write),  # its query endpoint audits every query it answers
        ],
        SINK_OBJECTS: sink,
        REGISTRY: [topic(t.schemas, (*read, "WRITE", "DESCRIBE_CONFIGS")), groups],
        OPERATOR: [
            Grant("topic", "*", ("READ", "DESCRIBE", "DESCRIBE_CONFIGS")),  # every topic
            # replaying a dead letter writes it back to events.raw: the operator may write there
            *(topic(n, write) for n in (t.raw, t.dlq_replays, t.revocations, t.tenants)),
            topic(t.decisions, write),  # operator actions are audited like every decision
            # dead-letter replays and purges are transactional (streams/dlq.py ReplayWriter)
            Grant("transactional_id", "sealstream-dlq-replay-", ("WRITE", "DESCRIBE"), True),
            groups,
        ],
    }
    # every role may make throwaway groups under sealstream-, but none may join or commit in
    # the long-lived group of another (a commit there would make that stage skip records)
    owned = {WORKER: "sealstream-processor", SINK_CLICKHOUSE: "sealstream-sink-clickhouse",
             SINK_OBJECTS: "sealstream-sink-objects"}  # fmt: skip
    for role, role_grants in grants.items():
        for owner, group in owned.items():
            if owner != role:  # the operator may still look at their offsets (verify does)
                ops = ("READ",) if role == OPERATOR else ("READ", "DESCRIBE")
                role_grants.append(Grant("group", group, ops, deny=True))
    return grants


def apply(admin_settings: KafkaSettings, stack: StackSettings) -> None:
    """Create (or update) each role's SCRAM user and its ACLs; idempotent."""
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        AclBinding,
        AclOperation,
        AclPermissionType,
        AdminClient,
        ResourcePatternType,
        ResourceType,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialAlteration,
        UserScramCredentialUpsertion,
    )

    admin = AdminClient(admin_settings.client_config())
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
    upserts: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(u, info, password(stack.keys_dir, u).encode()) for u in ROLES
    ]
    for future in admin.alter_user_scram_credentials(upserts).values():
        future.result(30)
    kinds: dict[str, Any] = {
        "topic": ResourceType.TOPIC,
        "group": ResourceType.GROUP,
        "transactional_id": ResourceType.TRANSACTIONAL_ID,
        "cluster": ResourceType.BROKER,
    }
    wanted = {
        (kinds[g.resource], g.name, g.prefixed, f"User:{user}", op, g.deny)
        for user, grants in acls().items()
        for g in grants
        for op in g.operations
    }  # a set: the same grant twice (a topic read and written) is refused by the client
    bindings = [
        AclBinding(
            kind,
            name,
            ResourcePatternType.PREFIXED if prefixed else ResourcePatternType.LITERAL,
            principal,
            "*",
            AclOperation[op],
            AclPermissionType.DENY if deny else AclPermissionType.ALLOW,
        )
        for kind, name, prefixed, principal, op, deny in sorted(wanted, key=str)
    ]
    for future in admin.create_acls(bindings).values():
        future.result(30)
