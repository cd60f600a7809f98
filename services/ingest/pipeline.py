"""The ingest pipeline: validate → store objects → SQL rows + outbox (one commit) → publish.

Nothing is half-written: objects are stored before the rows that point at them, rows and the
events describing them commit in one transaction, and events leave the outbox only after the
broker acknowledged them.  A crash anywhere re-publishes the same events (deterministic ids)
at the next start, so a consumer that keeps event ids sees each fact once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from services.events import EventProducer
from services.events.codec import SCHEMA_VERSION, deterministic_id, encode
from services.events.producer import ProduceFailed
from services.events.topics import LABELS
from services.genproto.flywheel.v1 import events_pb2 as ev
from services.ingest.errors import InvalidInput, Unavailable, UnknownAnnotation
from services.ingest.labels import CREATED, DELETED, UPDATED, LabelInput, ValidLabel, validate
from services.ingest.metrics import ACCEPTED, BATCH_SIZE, REJECTED, stage
from services.ingest.tables import labels, outbox
from services.projects.catalog import Catalog
from services.storage import Database, ObjectStore

log = logging.getLogger(__name__)

ACTION_CODES = {
    CREATED: ev.LABEL_ACTION_CREATED,
    UPDATED: ev.LABEL_ACTION_UPDATED,
    DELETED: ev.LABEL_ACTION_DELETED,
}
CHUNK = 500
MAX_ACKED = 20_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class SubmitResult:
    event_ids: list[str]
    # Deletes of annotations ingest never stored, skipped when the caller asked to skip them.
    skipped: list[str]


class IngestPipeline:
    def __init__(
        self,
        db: Database,
        objects: ObjectStore,
        producer: EventProducer,
        catalog: Catalog,
        default_project: str = "",
        outbox_keep_s: float = 0.0,
    ) -> None:
        self.db = db
        self.objects = objects
        self.producer = producer
        self.catalog = catalog
        self.default_project = default_project
        self._codecs: dict = {}  # one InputCodec per project version
        self._publish_lock = threading.Lock()
        # Acknowledged events stay in the outbox this long, marked with the broker that took them:
        # a broker on memory storage restarted (a new cluster id) has lost them, and they go again.
        self.outbox_keep_s = outbox_keep_s
        self._broker = ""  # the cluster id of the broker we publish to, refreshed by the relay
        # Look for events acknowledged by another broker: once at start, and when the id changes
        # (not on every relay pass: the kept events can be many, and that query reads them all).
        self._resend_lost = True
        # (event id, cluster id that acknowledged it) whose outbox rows are still to mark or delete
        self._acked: list[tuple[str, str]] = []
        # Event ids from their SQL commit until their outbox rows are deleted: the main path owns
        # them (publishing, or acknowledged and due for deletion), so the relay leaves them alone.
        self._pending: set[str] = set()
        self._acked_lock = threading.Lock()

    # -- validation -------------------------------------------------------------------------
    def validate(self, inputs: Sequence[LabelInput]) -> list[ValidLabel]:
        """Validate every label; raise InvalidInput for the first bad one (nothing is written)."""
        with stage("validate"):
            try:
                return [self.validate_one(i) for i in inputs]
            except InvalidInput:
                REJECTED.labels(inputs[0].source if inputs else "unknown").inc()
                raise

    def validate_one(self, inp: LabelInput, with_input: bool = True) -> ValidLabel:
        return validate(inp, self.catalog, self.default_project, codecs=self._codecs, with_input=with_input)

    # -- the write path ---------------------------------------------------------------------
    def submit(self, inputs: Sequence[LabelInput], skip_unknown_deletes: bool = False) -> SubmitResult:
        return self.submit_valid(self.validate(inputs), skip_unknown_deletes)

    def submit_valid(self, items: Sequence[ValidLabel], skip_unknown_deletes: bool = False) -> SubmitResult:
        if not items:
            return SubmitResult([], [])
        BATCH_SIZE.observe(len(items))
        stored = self._store_objects(items)
        with stage("sql"):
            events, skipped = self._commit(items, stored, skip_unknown_deletes)
        ids = [e.meta.event_id for e in events]
        self._hold(ids)
        try:
            self.publish(events)
        except Exception:
            self._release(ids)  # not acknowledged: the outbox relay re-sends them
            raise
        for source, count in Counter(item.input.source for item in items).items():
            ACCEPTED.labels(source).inc(count)
        return SubmitResult([e.meta.event_id for e in events], skipped)

    def _commit(
        self, items: Sequence[ValidLabel], stored: dict[bytes, tuple[str, str]], skip_unknown_deletes: bool
    ) -> tuple[list[ev.LabelEvent], list[str]]:
        """Label rows + outbox rows in one transaction, retried when two writers raced."""
        for attempt in range(5):
            acked = self._take_acked()
            try:
                with self.db.session() as session:
                    events, skipped = self._write_rows(session, items, stored, skip_unknown_deletes)
                    self._write_outbox(session, events)
                    self._settle_outbox(session, acked)  # earlier batches' acknowledged events, same commit
                self._release([event_id for event_id, _ in acked])
                return events, skipped
            except (IntegrityError, OperationalError) as exc:
                self._give_back_acked(acked)
                # Two writers raced on a new row (or SQLite was busy): the transaction rolled back; redo it.
                if attempt == 4:
                    raise Unavailable(f"database write failed: {type(exc).__name__}") from exc
                log.info("retrying label write", extra={"attempt": attempt + 1, "error": type(exc).__name__})
        raise AssertionError("unreachable")

    def _store_objects(self, items: Sequence[ValidLabel]) -> dict[bytes, tuple[str, str]]:
        """Store each distinct original (image, row, text), durably, as one batch (two file-system
        flushes, not one per file)."""
        blobs = list(dict.fromkeys(i.encoded.stored for i in items if i.encoded is not None))
        if not blobs:
            return {}
        with stage("objects"):
            try:
                results = self.objects.put_many(blobs)
            except OSError as exc:
                raise Unavailable(f"object store write failed: {exc}") from exc
        return dict(zip(blobs, results, strict=True))

    def _write_rows(
        self,
        session: Session,
        items: Sequence[ValidLabel],
        stored: dict[bytes, tuple[str, str]],
        skip_unknown_deletes: bool,
    ) -> tuple[list[ev.LabelEvent], list[str]]:
        keys = list({i.record_key for i in items})
        current: dict[str, dict] = {}
        for start in range(0, len(keys), CHUNK):
            rows = session.execute(select(labels).where(labels.c.record_key.in_(keys[start : start + CHUNK])))
            for row in rows.mappings():
                current[row["record_key"]] = dict(row)
        existing = set(current)
        changed: set[str] = set()
        events: list[ev.LabelEvent] = []
        skipped: list[str] = []
        for index, item in enumerate(items):
            inp = item.input
            row = current.get(item.record_key)
            if item.action == DELETED:
                if row is None:
                    if skip_unknown_deletes:
                        skipped.append(inp.annotation_id or inp.example_id)
                        continue
                    exc = UnknownAnnotation(
                        f"{inp.where}.annotation_id" if inp.where else "annotation_id",
                        f"no stored label for annotation {inp.annotation_id!r} of example {inp.example_id!r} "
                        f"in project {item.project.name}",
                    )
                    exc.index = index  # type: ignore[attr-defined]
                    raise exc
                event_id = deterministic_id(inp.source, item.record_key, inp.identity or "", DELETED)
                if not row["deleted"]:
                    row.update(deleted=True, updated_at=item.updated_at, last_event_id=event_id)
                    changed.add(item.record_key)
                events.append(self._event(row, item, event_id, features=None))
                continue
            assert item.encoded is not None
            uri, digest = stored[item.encoded.stored]
            event_id = deterministic_id(
                inp.source,
                item.project.name,
                inp.identity
                or "|".join(
                    [item.record_key, inp.example_id, inp.label, inp.annotator, inp.action, digest, str(inp.updated_at)]
                ),
            )
            fresh = {
                "record_key": item.record_key,
                "example_id": inp.example_id,
                "annotation_id": inp.annotation_id,
                "object_uri": uri,
                "sha256": digest,
                "label": inp.label,
                "annotator": inp.annotator,
                "source": inp.source,
                "project": item.project.name,
                "content_type": item.encoded.content_type,
                "label_schema_version": item.project.version,
                "created_at": row["created_at"] if row else item.created_at,
                "updated_at": item.updated_at,
                "deleted": False,
                "last_event_id": event_id,
            }
            # A replayed older version never overwrites a newer one.
            if row is None or _aware(row["updated_at"]) <= item.updated_at:
                current[item.record_key] = fresh
                changed.add(item.record_key)
            events.append(self._event(fresh, item, event_id, features=item.encoded.features))
        inserts = [current[k] for k in changed if k not in existing]
        updates = [{**current[k], "k": k} for k in changed if k in existing]
        if inserts:
            session.execute(labels.insert(), inserts)
        if updates:
            stmt = (
                labels.update()
                .where(labels.c.record_key == bindparam("k"))
                .values({c.name: bindparam(c.name) for c in labels.columns if c.name != "record_key"})
            )
            session.execute(stmt, updates)
        return events, skipped

    def _event(self, row: dict, item: ValidLabel, event_id: str, features: object) -> ev.LabelEvent:
        inp = item.input
        updated = _timestamp(item.updated_at)
        event = ev.LabelEvent(
            # The envelope's time is the fact's time, so a re-published event is byte-identical.
            meta=ev.EventMeta(
                event_id=event_id,
                time=updated,
                source="ingest",
                trace_id=inp.trace_id,
                schema_version=SCHEMA_VERSION,
            ),
            example_id=row["example_id"],
            object_uri=row["object_uri"],
            sha256=row["sha256"],
            label=row["label"],
            annotator=row["annotator"] if item.action == DELETED else inp.annotator,
            source=inp.source,
            label_schema_version=row["label_schema_version"],
            action=ACTION_CODES[item.action],
            annotation_id=row["annotation_id"],
            created_at=_timestamp(_aware(row["created_at"])),
            updated_at=updated,
            synthetic=inp.synthetic,
            project=row.get("project") or item.project.name,
            content_type=row.get("content_type") or "",
        )
        if features is not None:
            event.features.extend(features.tolist())  # type: ignore[attr-defined]
        return event

    def _write_outbox(self, session: Session, events: list[ev.LabelEvent]) -> None:
        ids = list(dict.fromkeys(e.meta.event_id for e in events))
        seen: set[str] = set()
        for start in range(0, len(ids), CHUNK):
            seen |= set(
                session.scalars(select(outbox.c.event_id).where(outbox.c.event_id.in_(ids[start : start + CHUNK])))
            )
        now_ms = int(time.time() * 1000)
        rows, added = [], set()
        for e in events:
            eid = e.meta.event_id
            if eid in seen or eid in added:
                continue
            added.add(eid)
            rows.append(
                {
                    "event_id": eid,
                    "topic": LABELS.name,
                    "key": e.example_id.encode(),
                    "payload": encode(e),
                    "created_ms": now_ms,
                }
            )
        if rows:
            session.execute(outbox.insert(), rows)

    def close(self) -> None:
        """Nothing to release: kept for callers that close the pipeline on shutdown."""

    # -- publishing -------------------------------------------------------------------------
    def publish(self, events: Sequence[ev.LabelEvent]) -> None:
        """Send events and wait for the broker's acks; their outbox rows are then due for deletion.

        The deletion rides on the next batch's transaction (one commit instead of two); until
        then a crash merely re-publishes events the broker already has, under the same ids.
        """
        if not events:
            return
        # The broker as known when sending: if the relay learns of a new one meanwhile, some of these
        # may have been acknowledged by the old one, whose log is gone. Marked with the old id, they
        # are sent again (a duplicate on the topic is harmless: consumers drop events seen before).
        broker = self._broker
        with stage("publish"):
            try:
                for e in events:
                    self.producer.send(LABELS.name, e, key=e.example_id.encode())
                self.producer.flush()
            except ProduceFailed as exc:
                raise Unavailable(
                    f"broker did not acknowledge the labels (kept in the outbox for retry): {exc}"
                ) from exc
        if broker != self._broker:
            self._resend_lost = True
        self._give_back_acked([(e.meta.event_id, broker) for e in events])
        if len(self._acked) > MAX_ACKED:
            self.flush_acked()

    def _take_acked(self) -> list[tuple[str, str]]:
        with self._acked_lock:
            taken, self._acked = self._acked, []
        return taken

    def _give_back_acked(self, ids: list[tuple[str, str]]) -> None:
        with self._acked_lock:
            self._acked.extend(ids)

    def _hold(self, ids: list[str]) -> None:
        with self._acked_lock:
            self._pending.update(ids)

    def _release(self, ids: list[str]) -> None:
        with self._acked_lock:
            self._pending.difference_update(ids)

    def _held(self, ids: list[str]) -> set[str]:
        with self._acked_lock:
            return self._pending.intersection(ids)

    def flush_acked(self) -> None:
        """Settle the outbox rows of every acknowledged event now (kept, marked, or deleted)."""
        acked = self._take_acked()
        if not acked:
            return
        try:
            with self.db.session() as session:
                self._settle_outbox(session, acked)
        except OperationalError:
            self._give_back_acked(acked)
            raise
        self._release([event_id for event_id, _ in acked])

    def _settle_outbox(self, session: Session, acked: list[tuple[str, str]]) -> None:
        if not self.outbox_keep_s:
            _delete_outbox(session, [event_id for event_id, _ in acked])
            return
        now_ms = int(time.time() * 1000)
        by_broker: dict[str, list[str]] = {}
        for event_id, broker in acked:
            by_broker.setdefault(broker, []).append(event_id)
        for broker, ids in by_broker.items():
            for start in range(0, len(ids), CHUNK):
                session.execute(
                    update(outbox)
                    .where(outbox.c.event_id.in_(ids[start : start + CHUNK]))
                    .values(published_ms=now_ms, published_to=broker)
                )

    def refresh_broker(self) -> bool:
        """Ask the broker for its cluster id; True when it changed (its log is not the one we sent to)."""
        try:
            current = self.producer.cluster_id()
        except Exception as exc:  # noqa: BLE001 - unreachable now: keep the last known id
            log.debug("broker cluster id unavailable", extra={"error": str(exc)})
            return False
        changed = bool(self._broker) and current != self._broker
        if changed:
            self._resend_lost = True
            log.warning(
                "the broker is a new one (cluster id changed): re-sending the acknowledged events kept in the outbox",
                extra={"before": self._broker, "now": current},
            )
            # The old client's idempotence state (producer id, sequences) belongs to the old cluster: the new
            # one may refuse it for good (EventProducer.renew), leaving ingest ready but refusing labels.
            self.producer.renew()
        self._broker = current
        return changed

    def prune_outbox(self) -> int:
        """Delete acknowledged events older than `outbox_keep_s`; returns how many."""
        cutoff = int((time.time() - self.outbox_keep_s) * 1000)
        with self.db.session() as session:
            result = session.execute(delete(outbox).where(outbox.c.published_ms < cutoff))
        return int(result.rowcount or 0)

    def republish_outbox(self, older_than_s: float = 0.0, limit: int = 2000) -> int:
        """Publish events a crash or a broker outage left in the outbox; returns how many."""
        with self._publish_lock:
            self.flush_acked()
            cutoff = int((time.time() - older_than_s) * 1000)
            unacknowledged = outbox.c.published_ms.is_(None) & (outbox.c.created_ms <= cutoff)
            # Acknowledged by another broker than the one we now talk to: that one's log is gone.
            lost = outbox.c.published_ms.is_not(None) & (outbox.c.published_to != self._broker)
            resend_lost = self._resend_lost and bool(self._broker)
            wanted = (unacknowledged | lost) if resend_lost else unacknowledged
            with self.db.session() as session:
                rows = session.execute(
                    select(outbox.c.event_id, outbox.c.payload).where(wanted).order_by(outbox.c.created_ms).limit(limit)
                ).all()
            if resend_lost and len(rows) < limit:
                self._resend_lost = False
            # Events a submit is still publishing (or has just had acknowledged) are its to finish:
            # re-sending them here would only duplicate them on the topic.
            held = self._held([event_id for event_id, _ in rows])
            events = []
            for event_id, payload in rows:
                if event_id in held:
                    continue
                event = ev.LabelEvent()
                event.ParseFromString(payload)
                events.append(event)
            self.publish(events)
            self.flush_acked()
            if events:
                log.info("re-published outbox events", extra={"events": len(events)})
            return len(events)

    def run_outbox_relay(self, stop: threading.Event, every_s: float) -> None:
        """Until stopped: re-send what stayed in the outbox longer than `every_s`, and what a new
        broker lacks; forget acknowledged events older than `outbox_keep_s`."""
        while not stop.wait(every_s):
            try:
                if self.outbox_keep_s:
                    self.refresh_broker()
                while self.republish_outbox(older_than_s=every_s) >= 2000:
                    pass
                if self.outbox_keep_s:
                    self.prune_outbox()
            except (Unavailable, OperationalError) as exc:
                log.warning("outbox relay could not publish; will retry", extra={"error": str(exc)})


def _delete_outbox(session: Session, ids: list[str]) -> None:
    for start in range(0, len(ids), CHUNK):
        session.execute(delete(outbox).where(outbox.c.event_id.in_(ids[start : start + CHUNK])))


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _timestamp(value: datetime) -> Timestamp:
    """Timestamp.FromDatetime's result (UTC seconds + nanos), without its time-tuple round trip."""
    delta = _aware(value) - EPOCH
    return Timestamp(seconds=delta.days * 86400 + delta.seconds, nanos=delta.microseconds * 1000)
