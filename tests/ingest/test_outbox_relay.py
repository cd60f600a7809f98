"""The outbox relay re-sends only what nobody is publishing: a slow acknowledgement is no duplicate.

The pipeline runs in-process against a real SQLite database, a real object store and a real
broker; the producer is the real one whose `flush` waits until the test lets it go, which is
how a slow broker acknowledgement looks to the pipeline.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

from services.devstack.brokers import Broker
from services.devstack.ports import free_port
from services.events import EventProducer
from services.genproto.flywheel.v1 import events_pb2 as ev
from services.ingest.labels import LabelInput
from services.ingest.pipeline import IngestPipeline
from services.ingest.tables import MIGRATIONS
from services.projects.catalog import Catalog, Project
from services.storage import Database, ObjectStore, migrate
from tests.ingest.conftest import digit_png
from tests.support.brokers import start_tansu
from tests.support.kafka_reader import read_topic
from tests.support.projects import example_spec


class SlowAckProducer(EventProducer):
    """The real producer; `flush` (waiting for acks) starts only once the test opens the gate."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(bootstrap, client_id="test-slow-acks")
        self.in_flush = threading.Event()
        self.gate = threading.Event()

    def flush(self, timeout_s: float = 30.0) -> None:
        self.in_flush.set()
        self.gate.wait(60)
        super().flush(timeout_s)


def _pipeline(tmp_path: Path, producer: EventProducer, outbox_keep_s: float = 0.0) -> IngestPipeline:
    """A pipeline on a new SQLite database and object store, publishing through `producer`."""
    url = f"sqlite:///{tmp_path / 'ingest.db'}"
    migrate(url, [MIGRATIONS])
    catalog = Catalog([Project(example_spec("digits"), 1, "sha")])
    objects = ObjectStore(f"file://{tmp_path / 'objects'}")
    return IngestPipeline(Database(url), objects, producer, catalog, "digits", outbox_keep_s)


def _submit_in_flight(pipeline: IngestPipeline, producer: SlowAckProducer, prefix: str, count: int) -> tuple:
    """`count` labels submitted from a thread, held in the publish step's flush; (thread, result list)."""
    inputs = [
        LabelInput(example_id=f"{prefix}:{i}", label=str(i % 10), annotator="t", source="api", image=digit_png(i))
        for i in range(count)
    ]
    result: list = []
    submit = threading.Thread(target=lambda: result.append(pipeline.submit(inputs)))
    submit.start()
    assert producer.in_flush.wait(60), "the submit never reached the publish step"
    return submit, result


def test_relay_leaves_events_in_flight_alone(kafka: Broker, tmp_path: Path) -> None:
    producer = SlowAckProducer(kafka.bootstrap)
    pipeline = _pipeline(tmp_path, producer)
    db = pipeline.db
    prefix = f"relay{uuid.uuid4().hex[:8]}"
    submit, result = _submit_in_flight(pipeline, producer, prefix, 20)
    try:
        # Committed to the outbox, not yet acknowledged: the relay (even with no age limit) keeps off.
        assert pipeline.republish_outbox(older_than_s=0) == 0
    finally:
        producer.gate.set()
        submit.join(60)
    assert len(result) == 1 and len(result[0].event_ids) == 20
    assert pipeline.republish_outbox(older_than_s=0) == 0  # acknowledged: deleted, nothing to re-send

    def ours(msgs: list) -> list:
        return [m for m in msgs if (m.key() or b"").decode().startswith(f"{prefix}:")]

    seen = ours(read_topic(kafka.bootstrap, "flywheel.labels", 10**9, stop_when=lambda m: len(ours(m)) >= 20))
    assert len(seen) == 20
    producer.close()
    db.close()


def test_acknowledged_events_go_again_to_a_broker_that_lost_them(tmp_path: Path) -> None:
    """Tansu on memory storage, SIGKILLed and started again on the same port: a new, empty broker
    (a new cluster id). The events the old one acknowledged are kept in the outbox, and the ingest
    started against the new broker (`flywheel up` restarts the services with it) re-sends them."""
    port = free_port()
    brokers = [start_tansu(port, "cluster-old", tmp_path / "tansu.log")]
    url = f"sqlite:///{tmp_path / 'ingest.db'}"
    migrate(url, [MIGRATIONS])
    db = Database(url)
    objects = ObjectStore(f"file://{tmp_path / 'objects'}")
    producers = [EventProducer(f"127.0.0.1:{port}", client_id="test-old-broker")]
    try:
        catalog = Catalog([Project(example_spec("digits"), 1, "sha")])
        pipeline = IngestPipeline(db, objects, producers[0], catalog, "digits", outbox_keep_s=600)
        assert pipeline.refresh_broker() is False  # the first id seen: nothing to compare with
        prefix = f"lost{uuid.uuid4().hex[:8]}"
        inputs = [
            LabelInput(example_id=f"{prefix}:{i}", label="4", annotator="t", source="api", image=digit_png(i))
            for i in range(12)
        ]
        ids = set(pipeline.submit(inputs).event_ids)
        pipeline.flush_acked()
        assert pipeline.republish_outbox(older_than_s=0) == 0  # acknowledged by this broker: kept, not re-sent
        assert pipeline.prune_outbox() == 0

        brokers[0].kill()
        brokers[0].wait(10)
        brokers.append(start_tansu(port, "cluster-new", tmp_path / "tansu.log"))
        assert read_topic(f"127.0.0.1:{port}", "flywheel.labels", 12, timeout_s=5) == []
        producers.append(EventProducer(f"127.0.0.1:{port}", client_id="test-new-broker"))
        restarted = IngestPipeline(db, objects, producers[1], catalog, "digits", outbox_keep_s=600)
        restarted.refresh_broker()
        assert restarted.republish_outbox(older_than_s=0) == 12
        assert restarted.refresh_broker() is False
        assert restarted.republish_outbox(older_than_s=0) == 0  # now acknowledged by the new one

        def ours(msgs: list) -> list:
            return [m for m in msgs if (m.key() or b"").decode().startswith(f"{prefix}:")]

        got = ours(read_topic(f"127.0.0.1:{port}", "flywheel.labels", 10**9, stop_when=lambda m: len(ours(m)) >= 12))
        events = [ev.LabelEvent.FromString(m.value()) for m in got]
        assert {e.meta.event_id for e in events} == ids and len(events) == 12
        restarted.outbox_keep_s = 0.001  # past the keep window: forgotten
        time.sleep(0.01)
        assert restarted.prune_outbox() == 12
    finally:
        for producer in producers:
            producer.close(5)
        db.close()
        for proc in brokers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


class SwitchingProducer(SlowAckProducer):
    """The real producer, but the cluster id it reports is the test's: it turns "new" while a flush waits."""

    cluster = "cluster-a"

    def cluster_id(self, timeout_s: float = 5.0) -> str:
        return self.cluster


def test_events_in_flight_when_the_broker_changed_go_again(kafka: Broker, tmp_path: Path) -> None:
    """The relay learns of a new broker while a submit waits for its acknowledgements: those may come
    from the old broker (its log about to vanish), so the events are marked with the old id and sent
    again. One real broker; only the cluster id it reports is switched (a fake where two brokers behind
    one address cannot be timed from a test: on the cluster it cost 10 labels, tests/k8s/test_failures.py)."""
    producer = SwitchingProducer(kafka.bootstrap)
    pipeline = _pipeline(tmp_path, producer, outbox_keep_s=600)
    assert pipeline.refresh_broker() is False  # cluster-a: the baseline
    submit, result = _submit_in_flight(pipeline, producer, f"switch{uuid.uuid4().hex[:8]}", 12)
    try:
        producer.cluster = "cluster-b"
        assert pipeline.refresh_broker() is True  # what the relay's pass does first
        assert pipeline.republish_outbox(older_than_s=0) == 0  # in flight: the submit's own
    finally:
        producer.gate.set()
        submit.join(60)
    assert result and len(result[0].event_ids) == 12
    pipeline.flush_acked()
    assert pipeline.republish_outbox(older_than_s=0) == 12  # maybe acknowledged by cluster-a: again
    assert pipeline.republish_outbox(older_than_s=0) == 0  # now cluster-b's
    producer.close(5)
    pipeline.db.close()
