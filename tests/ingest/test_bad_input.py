"""Bad input over HTTP, Label Studio webhooks and gRPC: a clear 4xx / INVALID_ARGUMENT naming the
field and the reason, nothing half-written, and the service keeps serving. Plus crash safety of
the (SQL commit, Kafka publish) pair and start-up configuration errors."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import httpx
import pytest

from services.devstack.brokers import Broker
from services.devstack.ports import free_port
from services.events import EventProducer
from services.genproto.flywheel.v1 import events_pb2 as ev
from services.genproto.flywheel.v1 import ingest_pb2_grpc as pb_grpc
from services.ingest.errors import Unavailable
from services.ingest.labels import LabelInput
from services.ingest.pipeline import IngestPipeline
from services.ingest.tables import MIGRATIONS
from services.projects.catalog import Catalog, Project
from services.storage import Database, ObjectStore, migrate
from tests.ingest.conftest import TOKEN, b64, digit_png, read_matching
from tests.ingest.test_ingest import _decode, _rows
from tests.support.projects import example_spec
from tests.support.waiting import wait_until


def test_bad_inputs_are_refused_with_field_and_reason(kafka: Broker, tmp_path: Path, start_ingest) -> None:
    url = f"sqlite:///{tmp_path / 'bad.db'}"
    svc = start_ingest(kafka.bootstrap, url, FLYWHEEL_INGEST_MAX_BODY_BYTES="20000")
    p = f"b{uuid.uuid4().hex[:8]}-"
    good = {"example_id": f"{p}ok", "label": "1", "annotator": "a", "image": b64(digit_png(1))}

    def refused(body: object, status: int, field: str, reason: str, path: str = "/v1/labels", **kw: object) -> None:
        kw.setdefault("headers", svc.headers)
        r = httpx.post(f"{svc.http}{path}", timeout=10, **({"json": body} if body is not None else {}), **kw)  # type: ignore[arg-type]
        assert r.status_code == status, r.text
        assert r.json()["field"] == field and reason in r.json()["reason"], r.text

    refused(
        {"labels": [good, {"label": "1", "annotator": "a", "image": b64(digit_png(2))}]},
        400,
        "labels[1].example_id",
        "required",
    )
    refused(
        {"labels": [good, {**good, "example_id": f"{p}x", "label": "cat"}]},
        400,
        "labels[1].label",
        "'cat' is not a label of project digits",
    )
    refused({"labels": [{**good, "image": b64(b"not a png")}]}, 400, "labels[0].image", "not an accepted image format")
    refused({"labels": [{**good, "project": "nope"}]}, 400, "labels[0].project", "no project 'nope'")
    refused({"labels": [{**good, "image": None, "text": "hello"}]}, 400, "labels[0].text", "takes image input")
    refused({"labels": [{**good, "image": "%%%"}]}, 400, "labels[0].image", "base64")
    refused({"labels": [{**good, "features": [0.1] * 63, "image": None}]}, 400, "labels[0].features", "64")
    refused({"labels": [{**good, "colour": "red"}]}, 400, "labels[0].colour", "Extra inputs")
    refused(
        {"labels": [{"example_id": f"{p}gone", "annotation_id": "nope", "action": "deleted"}]},
        404,
        "labels[0].annotation_id",
        "no stored label",
    )
    refused(None, 400, "body", "not valid JSON", content=b"{nope")
    refused({"labels": [{**good, "example_id": f"{p}{i}"} for i in range(200)]}, 413, "body", "limit is 20000")

    hook = f"{svc.http}/webhooks/label-studio"
    auth = {"Authorization": f"Token {TOKEN}"}
    ann = {"id": 1, "result": [], "task": 1, "completed_by": 1, "updated_at": "2026-11-28T05:00:00Z"}
    task = {"id": 1, "data": {"image": "data:image/png;base64," + b64(digit_png(1))}}
    refused(
        {"action": "ANNOTATION_CREATED", "annotation": ann, "task": task},
        400,
        "annotation.result",
        "no class",
        path="/webhooks/label-studio",
        headers=auth,
    )
    ann["result"] = [{"value": {"choices": ["4"]}, "type": "choices"}]
    name_task = {"id": 1, "data": {"image": "digit-1.png"}}
    refused(
        {"action": "ANNOTATION_CREATED", "annotation": ann, "task": name_task},
        400,
        "task.data.image",
        "neither a data: URI nor a reference",
        path="/webhooks/label-studio",
        headers=auth,
    )
    refused(
        {"action": "ANNOTATION_CREATED", "annotation": ann, "task": task},
        400,
        "project",
        "no project 'cats'",
        path="/webhooks/label-studio/cats",
        headers=auth,
    )
    refused({"annotation": ann}, 400, "action", "required", path="/webhooks/label-studio", headers=auth)
    assert httpx.post(hook, json={}, timeout=10).status_code == 401

    with svc.channel() as channel:
        stub = pb_grpc.IngestStub(channel)
        raws = [
            ev.RawLabel(example_id=f"{p}g0", label="1", annotator="a", data=digit_png(1)),
            ev.RawLabel(example_id=f"{p}g1", label="eleven", annotator="a", data=digit_png(2)),
        ]
        with pytest.raises(grpc.RpcError) as err:
            stub.SubmitLabels(iter(raws), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "labels[1].label" in err.value.details() and "not a label of project" in err.value.details()
        raws[1] = ev.RawLabel(example_id=f"{p}g1", label="2", annotator="a", data=b"\x89PNG broken")
        with pytest.raises(grpc.RpcError) as err:
            stub.SubmitLabels(iter(raws), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "labels[1].image" in err.value.details()

    assert _rows(url, p) == {}, "a refused request wrote nothing"
    assert httpx.get(f"{svc.http}/readyz", timeout=5).status_code == 200
    assert (
        httpx.post(f"{svc.http}/v1/labels", json={"labels": [good]}, headers=svc.headers, timeout=10).status_code == 200
    )


def test_events_committed_but_not_published_are_sent_at_restart(kafka: Broker, tmp_path: Path, start_ingest) -> None:
    """The broker is unreachable when a batch commits: the rows and outbox survive, and the next
    ingest process publishes the same events (same ids) before serving."""
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    migrate(url, [MIGRATIONS])
    db = Database(url)
    dead_broker = EventProducer(f"127.0.0.1:{free_port()}", client_id="dead", **{"message.timeout.ms": 1500})
    catalog = Catalog([Project(example_spec("digits"), 1, "sha")])
    pipeline = IngestPipeline(db, ObjectStore(f"file://{tmp_path / 'objects'}"), dead_broker, catalog, "digits")
    p = f"o{uuid.uuid4().hex[:8]}-"
    inputs = [
        LabelInput(example_id=f"{p}{i}", label=str(i), annotator="a", source="api", image=digit_png(i))
        for i in range(3)
    ]
    with pytest.raises(Unavailable, match="outbox"):
        pipeline.submit(inputs)
    db.close()
    assert len(_rows(url, p)) == 3

    start_ingest(kafka.bootstrap, url, FLYWHEEL_INGEST_CONSUME_RAW="false")
    events = [_decode(m) for m in read_matching(kafka.bootstrap, "flywheel.labels", p, want=3)]
    assert sorted(e.example_id for e in events) == [f"{p}{i}" for i in range(3)]
    assert {e.meta.event_id for e in events} == {r["last_event_id"] for r in _rows(url, p).values()}


def test_help_lists_settings_and_bad_config_names_the_variable(tmp_path: Path) -> None:
    help_out = subprocess.run(
        [sys.executable, "-m", "services.ingest", "--help"], capture_output=True, text=True, timeout=60
    )
    assert help_out.returncode == 0 and "FLYWHEEL_INGEST_WEBHOOK_TOKEN" in help_out.stdout
    env = {
        **os.environ,
        "FLYWHEEL_HOME": str(tmp_path),
        "FLYWHEEL_INGEST_DEFAULT_PROJECT": "Not A Name",
        "FLYWHEEL_INGEST_HTTP_PORT": "99999",
    }
    bad = subprocess.run([sys.executable, "-m", "services.ingest"], capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode != 0
    assert "FLYWHEEL_INGEST_DEFAULT_PROJECT" in bad.stderr and "FLYWHEEL_INGEST_HTTP_PORT" in bad.stderr


def test_readyz_reports_broker_database_and_object_store(tansu: Broker, tmp_path: Path, start_ingest) -> None:
    svc = start_ingest(tansu.bootstrap, f"sqlite:///{tmp_path / 'ready.db'}", FLYWHEEL_INGEST_CONSUME_RAW="false")
    ready = httpx.get(f"{svc.http}/readyz", timeout=5).json()
    assert ready["ready"] and set(ready["checks"]) == {"broker", "database", "object_store", "projects"}
    tansu.stop()

    def broker_reported_down() -> bool:
        r = httpx.get(f"{svc.http}/readyz", timeout=10)
        return r.status_code == 503 and r.json()["checks"]["broker"] != "ok"

    wait_until(broker_reported_down, timeout_s=60, proc=svc.proc, message="/readyz to report the broker down")
    assert httpx.get(f"{svc.http}/healthz", timeout=5).status_code == 200
