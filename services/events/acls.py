"""Who may do what on Flywheel's topics, as Kafka ACLs: outsiders write `flywheel.labels.raw` and nothing else.

Flywheel's services share one principal (they read and write every `flywheel.*` topic and commit
their groups' offsets); a label producer's principal may only write `flywheel.labels.raw`, so whoever
holds it cannot publish a model (`flywheel.models`), ask for training (`flywheel.train.requests`) or
forge predictions. Apply with `apply_acls` against a broker that enforces ACLs (SECURITY.md: the
same rules as Strimzi `KafkaUser` resources).
"""

from __future__ import annotations

from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from services.events.topics import LABELS_RAW

ALLOW = AclPermissionType.ALLOW
LITERAL, PREFIXED = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
CLUSTER = "kafka-cluster"  # the cluster resource (confluent_kafka calls its type BROKER)


def flywheel_acls(services: str, producers: str) -> list[AclBinding]:
    """The bindings for the services' principal and the label producers' (`User:<name>` each)."""
    return [
        AclBinding(ResourceType.TOPIC, "flywheel.", PREFIXED, services, "*", AclOperation.ALL, ALLOW),
        AclBinding(ResourceType.GROUP, "*", LITERAL, services, "*", AclOperation.ALL, ALLOW),
        AclBinding(ResourceType.BROKER, CLUSTER, LITERAL, services, "*", AclOperation.DESCRIBE, ALLOW),
        AclBinding(ResourceType.BROKER, CLUSTER, LITERAL, services, "*", AclOperation.IDEMPOTENT_WRITE, ALLOW),
        AclBinding(ResourceType.TOPIC, LABELS_RAW.name, LITERAL, producers, "*", AclOperation.WRITE, ALLOW),
        AclBinding(ResourceType.TOPIC, LABELS_RAW.name, LITERAL, producers, "*", AclOperation.DESCRIBE, ALLOW),
        AclBinding(ResourceType.BROKER, CLUSTER, LITERAL, producers, "*", AclOperation.IDEMPOTENT_WRITE, ALLOW),
    ]


def apply_acls(admin: AdminClient, bindings: list[AclBinding], timeout_s: float = 30.0) -> None:
    """Create the bindings (idempotent: an existing one is left as it is); raise on a refusal."""
    for future in admin.create_acls(bindings, request_timeout=timeout_s).values():
        future.result(timeout_s)
