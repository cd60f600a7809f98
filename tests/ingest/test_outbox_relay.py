"""The outbox relay re-sends only what nobody is publishing: a slow acknowledgement is no duplicate.

The pipeline runs in-process against a real SQLite database, a real object store and a real
broker; the producer is the real one whose `flush` waits until the test lets it go, which is
how a slow broker acknowledgement looks to the pipeline.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

from services.devstack.brokers import Broker
from services.events import EventProducer
from services.ingest.labels import LabelInput
from services.ingest.pipeline import IngestPipeline
from services.ingest.tables import MIGRATIONS
from services.preprocessing import DIGIT_LABELS
from services.storage import Database, ObjectStore, migrate
from tests.ingest.conftest import digit_png
from tests.support.kafka_reader import read_topic


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


def test_relay_leaves_events_in_flight_alone(kafka: Broker, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ingest.db'}"
    migrate(url, [MIGRATIONS])
    db = Database(url)
    producer = SlowAckProducer(kafka.bootstrap)
    pipeline = IngestPipeline(db, ObjectStore(f"file://{tmp_path / 'objects'}"), producer, DIGIT_LABELS)
    prefix = f"relay{uuid.uuid4().hex[:8]}"
    inputs = [
        LabelInput(example_id=f"{prefix}:{i}", label="3", annotator="t", source="api", image=digit_png(i))
        for i in range(20)
    ]
    result: list = []
    submit = threading.Thread(target=lambda: result.append(pipeline.submit(inputs)))
    submit.start()
    try:
        assert producer.in_flush.wait(60), "the submit never reached the publish step"
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
