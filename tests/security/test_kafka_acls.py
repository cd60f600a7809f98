"""Finding 11 on a real Apache Kafka with SASL/PLAIN and its authorizer: the Kafka security settings reach
every client a service makes, and with Flywheel's ACLs (services/events/acls.py) an outside label
producer can write `flywheel.labels.raw` and nothing else, while a client without credentials gets
nothing at all."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

from services.devstack.brokers import kafka_jars_present, start_apache_kafka
from services.devstack.ports import free_port
from services.events import EventProducer, ensure_topics
from services.events.acls import apply_acls, flywheel_acls
from services.events.codec import new_meta
from services.events.producer import ProduceFailed
from services.events.topics import LABELS, LABELS_RAW, MODELS
from services.genproto.flywheel.v1 import events_pb2 as ev
from tests.ingest.conftest import digit_png
from tests.support.credentials import service_env
from tests.support.kafka_reader import read_topic
from tests.support.projects import example_spec, publish_spec
from tests.support.required import unavailable
from tests.support.waiting import wait_until


def _sasl(user: str, password: str) -> dict[str, str]:
    return {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": user,
        "sasl.password": password,
    }


def test_f11_outsiders_write_raw_labels_only_and_services_speak_sasl(tmp_path: Path) -> None:
    if not kafka_jars_present():
        unavailable("Apache Kafka jars missing: run `make kafka-jars`")
    users = {"admin": secrets.token_hex(16), "flywheel": secrets.token_hex(16), "labeler": secrets.token_hex(16)}
    broker = start_apache_kafka(tmp_path, sasl_users=users)
    ingest = None
    try:
        ensure_topics(broker.bootstrap, security=broker.extra)
        apply_acls(
            AdminClient({"bootstrap.servers": broker.bootstrap, **broker.extra}),
            flywheel_acls("User:flywheel", "User:labeler"),
        )

        # No credentials: not even the topic list.
        with pytest.raises(KafkaException):
            AdminClient({"bootstrap.servers": broker.bootstrap, "socket.timeout.ms": 3000}).list_topics(timeout=5)

        # The label producer's principal writes the raw labels topic, and no other.
        run = uuid.uuid4().hex[:6]
        label = ev.RawLabel(
            meta=new_meta("outsider", event_id=run),
            example_id=f"acl-{run}",
            label="7",
            annotator="a",
            data=digit_png(7),
        )

        def delivered() -> bool:  # new ACLs reach the broker's authorizer a moment after they are created
            producer = EventProducer(broker.bootstrap, client_id="outsider", **_sasl("labeler", users["labeler"]))
            producer.send(LABELS_RAW.name, label)
            try:
                producer.flush(10)
            except ProduceFailed:
                return False
            return True

        wait_until(delivered, 60, message="the label producer's write to flywheel.labels.raw")
        labeler = EventProducer(broker.bootstrap, client_id="outsider", **_sasl("labeler", users["labeler"]))
        forged = ev.ModelPublished(meta=new_meta("outsider"), model="digits", version="666", stage="production")
        labeler.send(MODELS.name, forged)
        with pytest.raises(ProduceFailed, match=r"(?i)authoriz"):
            labeler.flush(30)
        plain = Producer({"bootstrap.servers": broker.bootstrap, **_sasl("labeler", "wrong password")})
        plain.produce(LABELS_RAW.name, b"x")
        assert plain.flush(5) == 1  # never delivered

        # Ingest, given the services' principal through FLYWHEEL_KAFKA_*, consumes it and publishes the label
        # (of the digits project, which the trainer's registry would have published).
        publish_spec(broker.bootstrap, example_spec("digits"), **_sasl("flywheel", users["flywheel"]))
        http = free_port()
        env = {
            **os.environ,
            "FLYWHEEL_HOME": str(tmp_path / "home"),
            "FLYWHEEL_KAFKA_BOOTSTRAP": broker.bootstrap,
            "FLYWHEEL_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "FLYWHEEL_KAFKA_SASL_MECHANISM": "PLAIN",
            "FLYWHEEL_KAFKA_SASL_USERNAME": "flywheel",
            "FLYWHEEL_KAFKA_SASL_PASSWORD": users["flywheel"],
            "FLYWHEEL_INGEST_HTTP_PORT": str(http),
            "FLYWHEEL_INGEST_GRPC_PORT": str(free_port()),
            "FLYWHEEL_LOG_LEVEL": "WARNING",
            **service_env("ingest"),
        }
        log = (tmp_path / "ingest.log").open("wb")
        ingest = subprocess.Popen([sys.executable, "-m", "services.ingest"], env=env, stdout=log, stderr=log)
        wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{http}/readyz").status_code == 200, 120, proc=ingest, message="ingest"
        )
        services = _sasl("flywheel", users["flywheel"])
        out = read_topic(broker.bootstrap, LABELS.name, want=1, timeout_s=90, config=services)
        assert {m.key() for m in out} == {f"acl-{run}".encode()}
        assert read_topic(broker.bootstrap, MODELS.name, want=1, timeout_s=5, config=services) == []
    finally:
        if ingest is not None:
            ingest.send_signal(signal.SIGTERM)
            assert ingest.wait(60) == 0
        broker.stop()
