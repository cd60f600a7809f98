"""The one place that knows Flywheel's topics: name, partitions, message type and key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from google.protobuf.message import Message

from services.genproto.flywheel.v1 import events_pb2 as ev


@dataclass(frozen=True)
class Topic:
    name: str
    message: type[Message]
    partitions: int
    key: str  # the event field used as the Kafka key: order matters only within a key
    description: str
    # Compacted topics keep the latest event per key forever (a catalog, read from the start).
    compacted: bool = False


LABELS_RAW = Topic("flywheel.labels.raw", ev.RawLabel, 3, "example_id", "labels from external producers")
LABELS = Topic("flywheel.labels", ev.LabelEvent, 3, "example_id", "validated, normalised labels")
PREDICTIONS = Topic("flywheel.predictions", ev.PredictionLog, 3, "model", "prediction logs from the gateway")
TRAIN_REQUESTS = Topic("flywheel.train.requests", ev.TrainRequest, 1, "model", "requests to train")
MODELS = Topic("flywheel.models", ev.ModelPublished, 1, "model", "model versions published")
DRIFT = Topic("flywheel.drift", ev.DriftAlert, 1, "model", "lasting drift alerts")
DEADLETTER = Topic("flywheel.deadletter", ev.DeadLetter, 1, "original_topic", "events a consumer rejected")
PROJECTS = Topic("flywheel.projects", ev.ProjectPublished, 1, "name", "project spec versions", compacted=True)

TOPICS: dict[str, Topic] = {
    t.name: t for t in (LABELS_RAW, LABELS, PREDICTIONS, TRAIN_REQUESTS, MODELS, DRIFT, DEADLETTER, PROJECTS)
}


def topic(name: str) -> Topic:
    try:
        return TOPICS[name]
    except KeyError:
        raise KeyError(f"unknown topic {name!r}; known: {', '.join(TOPICS)}") from None


def ensure_topics(
    bootstrap: str,
    topics: list[Topic] | None = None,
    timeout_s: float = 30.0,
    security: Mapping[str, str] | None = None,
) -> None:
    """Create the topics that do not exist yet (idempotent). `security`: the client's SASL/SSL settings."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, **(security or {})})
    wanted = topics or list(TOPICS.values())
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    new = [
        NewTopic(
            t.name,
            num_partitions=t.partitions,
            replication_factor=1,
            config={"cleanup.policy": "compact"} if t.compacted else {},
        )
        for t in wanted
        if t.name not in existing
    ]
    if not new:
        return
    for name, future in admin.create_topics(new, operation_timeout=timeout_s, request_timeout=timeout_s).items():
        try:
            future.result(timeout_s)
        except KafkaException as exc:
            if exc.args and getattr(exc.args[0], "code", lambda: None)() == _topic_exists_code():
                continue
            raise RuntimeError(f"could not create topic {name}: {exc}") from exc


def _topic_exists_code() -> int:
    from confluent_kafka import KafkaError

    return KafkaError.TOPIC_ALREADY_EXISTS
