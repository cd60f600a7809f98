"""Ingest end to end: every input (HTTP batch, Label Studio webhooks, gRPC stream, Kafka raw)
through a real ingest process into real SQL (SQLite and PostgreSQL), real objects and a real
broker (Tansu and Apache Kafka), with the events read back from `flywheel.labels`."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import select

from services.devstack.brokers import Broker
from services.events import EventProducer
from services.events.codec import new_meta
from services.genproto.flywheel.v1 import events_pb2 as ev
from services.genproto.flywheel.v1 import ingest_pb2_grpc as pb_grpc
from services.ingest.tables import labels
from services.storage import Database, ObjectStore
from tests.ingest.conftest import TOKEN, b64, digit_png, read_matching
from tests.support.kafka_reader import read_topic

LABELS_TOPIC = "flywheel.labels"


def _rows(url: str, prefix: str) -> dict[str, dict]:
    db = Database(url)
    try:
        with db.session() as s:
            rows = s.execute(select(labels).where(labels.c.example_id.like(f"{prefix}%"))).mappings().all()
            return {r["record_key"]: dict(r) for r in rows}
    finally:
        db.close()


def _decode(msg) -> ev.LabelEvent:  # type: ignore[no-untyped-def]
    event = ev.LabelEvent()
    event.ParseFromString(msg.value())
    return event


def test_native_batch_update_delete_and_grpc_stream(kafka: Broker, database_url: str, start_ingest) -> None:
    svc = start_ingest(kafka.bootstrap, database_url)
    p = f"n{uuid.uuid4().hex[:8]}-"
    batch = {
        "labels": [
            {
                "example_id": f"{p}0",
                "label": "3",
                "annotator": "ann",
                "image": b64(digit_png(0)),
                "annotation_id": f"{p}a0",
            },
            {"example_id": f"{p}1", "label": "7", "annotator": "ann", "features": [0.5] * 64},
            {"example_id": f"{p}2", "label": "0", "annotator": "bob", "image": b64(digit_png(2))},
        ]
    }
    first = httpx.post(f"{svc.http}/v1/labels", json=batch, headers=svc.headers, timeout=30)
    assert first.status_code == 200, first.text
    ids = first.json()["event_ids"]
    assert first.json()["accepted"] == 3 and len(set(ids)) == 3
    # A replayed batch is harmless: same event ids, no new rows.
    again = httpx.post(f"{svc.http}/v1/labels", json=batch, headers=svc.headers, timeout=30)
    assert again.json()["event_ids"] == ids

    update = {
        "example_id": f"{p}0",
        "label": "8",
        "annotator": "ann",
        "image": b64(digit_png(0)),
        "annotation_id": f"{p}a0",
        "action": "updated",
    }
    delete = {"example_id": f"{p}0", "annotation_id": f"{p}a0", "action": "deleted"}
    r = httpx.post(f"{svc.http}/v1/labels", json={"labels": [update, delete]}, headers=svc.headers, timeout=30)
    assert r.status_code == 200, r.text
    upd_id, del_id = r.json()["event_ids"]

    with svc.channel() as channel:
        stub = pb_grpc.IngestStub(channel)
        raws = [
            ev.RawLabel(
                example_id=f"{p}g{i}",
                label=str(i),
                annotator="grpc-client",
                data=digit_png(10 + i),
                content_type="image/png",
            )
            for i in range(4)
        ]
        reply = stub.SubmitLabels(iter(raws), timeout=30)
    assert reply.accepted == 4 and len(reply.event_ids) == 4

    msgs = read_matching(kafka.bootstrap, LABELS_TOPIC, p, want=3 + 3 + 2 + 4)
    events = [(m.key().decode(), _decode(m)) for m in msgs]
    assert all(key == e.example_id for key, e in events), "events are keyed by example id"
    by_id = {e.meta.event_id: e for _, e in events}
    assert {*ids, upd_id, del_id, *reply.event_ids} == set(by_id)
    assert len(by_id[ids[0]].features) == 64 and by_id[ids[0]].sha256 and by_id[ids[0]].object_uri.startswith("file://")
    assert by_id[ids[1]].features[0] == pytest.approx(128 / 255)  # quantised through the stored PNG
    assert by_id[upd_id].action == ev.LABEL_ACTION_UPDATED and by_id[upd_id].label == "8"
    assert by_id[del_id].action == ev.LABEL_ACTION_DELETED and by_id[del_id].example_id == f"{p}0"
    assert {by_id[i].source for i in reply.event_ids} == {"grpc"}
    assert {e.project for e in by_id.values()} == {"digits"}

    rows = _rows(database_url, p)
    assert len(rows) == 3 + 4
    deleted = rows[f"digits|annotation:{p}a0"]
    assert deleted["deleted"] and deleted["label"] == "8" and deleted["last_event_id"] == del_id
    store = ObjectStore(f"file://{svc.home.parent / 'objects'}")
    for row in rows.values():
        assert store.exists(row["sha256"]), "every metadata row points at a stored object"
        assert row["label_schema_version"] == 1  # the digits project's spec version
        assert (row["project"], row["content_type"]) == ("digits", "image/png")


def _ls_annotation(ann_id: int, task_id: int, choice: str, updated: str) -> dict:
    return {
        "id": ann_id,
        "result": [
            {"value": {"choices": [choice]}, "id": "r1", "from_name": "digit", "to_name": "image", "type": "choices"}
        ],
        "was_cancelled": False,
        "ground_truth": False,
        "created_at": "2026-11-28T05:00:00.000000Z",
        "updated_at": updated,
        "lead_time": 3.2,
        "prediction": {},
        "result_count": 0,
        "task": task_id,
        "completed_by": 1,
    }


def _ls_task(task_id: int, example_id: str, seed: int) -> dict:
    return {"id": task_id, "data": {"image": "data:image/png;base64," + b64(digit_png(seed)), "example_id": example_id}}


PROJECT = {
    "id": 7,
    "title": "digits",
    "label_config": "<View><Image name='image' value='$image'/><Choices name='digit' toName='image'/></View>",
}


def test_label_studio_actions(kafka: Broker, database_url: str, start_ingest) -> None:
    svc = start_ingest(kafka.bootstrap, database_url)
    p = f"ls{uuid.uuid4().hex[:8]}-"
    base = 10_000 + int(uuid.uuid4().int % 10**8) * 10
    url, auth = f"{svc.http}/webhooks/label-studio", {"Authorization": f"Token {TOKEN}"}

    def post(payload: dict) -> dict:
        r = httpx.post(url, json=payload, headers=auth, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    created = post(
        {
            "action": "ANNOTATION_CREATED",
            "annotation": _ls_annotation(base, 1, "4", "2026-11-28T05:00:01Z"),
            "task": _ls_task(1, f"{p}t1", 1),
            "project": PROJECT,
        }
    )
    many = post(
        {
            "action": "ANNOTATIONS_CREATED",
            "annotation": [
                _ls_annotation(base + 1, 2, "5", "2026-11-28T05:00:02Z"),
                _ls_annotation(base + 2, 3, "6", "2026-11-28T05:00:02Z"),
            ],
            "task": [_ls_task(2, f"{p}t2", 2), _ls_task(3, f"{p}t3", 3)],
            "project": PROJECT,
        }
    )
    updated = post(
        {
            "action": "ANNOTATION_UPDATED",
            "annotation": _ls_annotation(base, 1, "9", "2026-11-28T05:01:00Z"),
            "task": _ls_task(1, f"{p}t1", 1),
            "project": PROJECT,
        }
    )
    deleted = post({"action": "ANNOTATIONS_DELETED", "annotations": [{"id": base}], "project": PROJECT})
    # Label Studio retries a webhook it thinks failed: the same delivery yields the same event.
    assert (
        post({"action": "ANNOTATIONS_DELETED", "annotations": [{"id": base}], "project": PROJECT})["event_ids"]
        == deleted["event_ids"]
    )
    ignored = post({"action": "PROJECT_UPDATED", "project": PROJECT})
    assert ignored["accepted"] == 0 and ignored["ignored"]

    assert httpx.post(url, json={"action": "ANNOTATION_CREATED"}, timeout=10).status_code == 401
    assert (
        httpx.post(
            url, json={"action": "ANNOTATION_CREATED"}, headers={"Authorization": "Token nope"}, timeout=10
        ).status_code
        == 401
    )

    assert created["accepted"] == 1 and many["accepted"] == 2 and updated["accepted"] == 1 and deleted["accepted"] == 1
    msgs = read_matching(kafka.bootstrap, LABELS_TOPIC, p, want=5)
    events = {_decode(m).meta.event_id: (m.key().decode(), _decode(m)) for m in msgs}
    c_key, c = events[created["event_ids"][0]]
    u_key, u = events[updated["event_ids"][0]]
    d_key, d = events[deleted["event_ids"][0]]
    assert c_key == u_key == d_key == f"{p}t1"
    assert (c.action, c.label) == (ev.LABEL_ACTION_CREATED, "4")
    assert (u.action, u.label) == (ev.LABEL_ACTION_UPDATED, "9")
    assert d.action == ev.LABEL_ACTION_DELETED and d.annotation_id == f"ls-{base}"
    assert len({c.meta.event_id, u.meta.event_id, d.meta.event_id}) == 3
    assert c.source == "label-studio" and c.annotator == "label-studio-user-1" and len(c.features) == 64

    rows = _rows(database_url, p)
    assert len(rows) == 3
    row = rows[f"digits|annotation:ls-{base}"]
    assert row["deleted"] and row["label"] == "9"
    assert not rows[f"digits|annotation:ls-{base + 1}"]["deleted"]


def test_kafka_raw_to_labels_and_deadletter(kafka: Broker, database_url: str, start_ingest) -> None:
    svc = start_ingest(kafka.bootstrap, database_url)
    p = f"k{uuid.uuid4().hex[:8]}-"
    producer = EventProducer(kafka.bootstrap, client_id="test-raw")
    raws = [
        ev.RawLabel(
            meta=new_meta("test-producer", event_id=f"{p}e{i}"),
            example_id=f"{p}{i}",
            label=str(i % 10),
            annotator="bot",
            data=digit_png(i),
            content_type="image/png",
        )
        for i in range(6)
    ]
    for raw in raws:
        producer.send("flywheel.labels.raw", raw)
    bad = [
        ev.RawLabel(
            meta=new_meta("test-producer"), example_id=f"{p}bad-label", label="cat", annotator="bot", data=digit_png(1)
        ),
        ev.RawLabel(
            meta=new_meta("test-producer"), example_id=f"{p}bad-image", label="1", annotator="bot", data=b"not a png"
        ),
        ev.RawLabel(
            meta=new_meta("test-producer"),
            example_id=f"{p}never-stored",
            annotation_id=f"{p}ghost",
            action=ev.LABEL_ACTION_DELETED,
        ),
    ]
    for raw in bad:
        producer.send("flywheel.labels.raw", raw)
    producer.send_raw("flywheel.labels.raw", b"\xff\x00garbage", key=f"{p}garbage".encode())
    producer.flush()

    msgs = read_matching(kafka.bootstrap, LABELS_TOPIC, p, want=6)
    events = [_decode(m) for m in msgs]
    assert sorted(e.example_id for e in events) == sorted(r.example_id for r in raws)
    assert all(e.source == "kafka" and len(e.features) == 64 for e in events)
    assert len({e.meta.event_id for e in events}) == 6

    def letters(ms: list) -> list:
        out = []
        for m in ms:
            letter = ev.DeadLetter()
            letter.ParseFromString(m.value())
            if p.encode() in letter.value or letter.key.startswith(p.encode()):
                out.append(letter)
        return out

    dead = letters(
        read_topic(
            kafka.bootstrap, "flywheel.deadletter", want=10**9, timeout_s=60, stop_when=lambda ms: len(letters(ms)) >= 4
        )
    )
    reasons = " | ".join(d.reason for d in dead)
    assert len(dead) == 4, reasons
    assert "not a label of project digits" in reasons and "image" in reasons and "protobuf" in reasons
    assert "no stored label" in reasons  # a delete of an annotation ingest never saw
    assert len(_rows(database_url, p)) == 6
    assert httpx.get(f"{svc.http}/readyz", timeout=5).json()["checks"]["raw_consumer"] == "ok"
