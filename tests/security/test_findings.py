"""One regression test per finding of the security review (issue 15), each against the real running stack.

Each sends the review's hostile input (and its nearest variants) to the service that took it
badly and asserts the safe answer; every service must still answer afterwards (`assert_alive`).
The chart's findings (2, 3's network side, 10's NetworkPolicy, 13, 15) are tested on the rendered
chart in tests/deploy; Kafka's (11) in test_kafka_acls.py; the dead-letter half of 5 in
test_consumer_loop.py.
"""

from __future__ import annotations

import gzip
import json
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from services.events import EventProducer
from services.events.topics import DEADLETTER, LABELS, LABELS_RAW
from services.genproto.flywheel.v1 import events_pb2 as ev
from services.genproto.flywheel.v1 import ingest_pb2_grpc
from services.genproto.inference import grpc_predict_v2_pb2 as pb
from services.genproto.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.ingest.conftest import b64, digit_png
from tests.lake.events import label_event
from tests.security import images
from tests.security.conftest import MODEL, Stack
from tests.security.wire import QuietStream, raw_http, request
from tests.support.kafka_reader import read_topic
from tests.support.waiting import wait_until

ZEROS = [0.0] * 64
INFER = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 64], "data": ZEROS}]}
SMUGGLED = "r1\r\ncontent-length: 0\r\n\r\nPOST /v2/repository/models/digits/unload HTTP/1.1\r\nhost: x\r\n\r\n"


def _infer(stack: Stack, body: object, headers: dict[str, str] | None = None, model: str = MODEL) -> httpx.Response:
    url = f"{stack.url('gateway')}/v2/models/{model}/infer"
    return httpx.post(url, json=body, headers={**stack.key, **(headers or {})}, timeout=30)


def _predict(stack: Stack, body: object, headers: dict[str, str] | None = None, model: str = MODEL) -> httpx.Response:
    url = f"{stack.url('gateway')}/v1/models/{model}:predict"
    return httpx.post(url, json=body, headers={**stack.key, **(headers or {})}, timeout=60)


def _all_versions_loaded(stack: Stack) -> bool:
    index = httpx.post(f"{stack.url('modelserver')}/v2/repository/index", json={}, headers=stack.operator, timeout=10)
    return {r["state"] for r in index.json() if r["name"] == MODEL} == {"READY"}


# -- 1 (high): request smuggling through the gateway ---------------------------------------------------
def test_f01_no_caller_string_smuggles_a_request_to_the_model_server(stack: Stack) -> None:
    gw = stack.url("gateway")
    assert _infer(stack, {**INFER, "id": SMUGGLED}).status_code == 400
    assert _predict(stack, {"instances": [ZEROS], "id": SMUGGLED}).status_code == 400
    for field in ("x-request-id", "x-flywheel-sticky-key", "x-flywheel-synthetic"):
        head = request("POST", f"/v2/models/{MODEL}/infer", {**stack.key, "Content-Type": "application/json"})
        status = raw_http(gw, head + f"{field}: a\rb\r\n".encode(), json.dumps(INFER).encode())
        assert status is not None and 400 <= status < 500, field
    # A name in the path that would carry CR/LF, or climb the model server's routes.
    for name in ("digits%0d%0aX-Evil:%201", "..%2F..%2Fv2%2Frepository%2Fmodels%2Fdigits%2Funload", "a" * 300):
        r = httpx.post(f"{gw}/v2/models/{name}/infer", json=INFER, headers=stack.key, timeout=10)
        assert 400 <= r.status_code < 500, (name, r.text)
    with grpc.insecure_channel(stack.grpc_addr("gateway")) as channel:
        req = pb.ModelInferRequest(model_name=MODEL, id=SMUGGLED)
        req.inputs.add(name="features", datatype="FP32", shape=[1, 64])
        req.raw_input_contents.append(np.zeros((1, 64), np.float32).tobytes())
        md = list(stack.key.items())
        with pytest.raises(grpc.RpcError) as err:
            pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(req, metadata=md, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        req.id, req.model_version = "ok", "1\r\nX: y"
        with pytest.raises(grpc.RpcError) as err:
            pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(req, metadata=md, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _all_versions_loaded(stack), "a smuggled request reached the model server"
    assert _infer(stack, INFER).status_code == 200
    stack.assert_alive()


# -- 3 (high): label intake without authentication ----------------------------------------------------
def test_f03_label_intake_admits_only_label_producers(stack: Stack) -> None:
    url = f"{stack.url('ingest')}/v1/labels"
    label = {"example_id": f"f03-{uuid.uuid4().hex[:6]}", "label": "1", "annotator": "a", "image": b64(digit_png(1))}
    body = {"labels": [label]}
    assert httpx.post(url, json=body, timeout=10).status_code == 401
    assert httpx.post(url, json=body, headers=stack.credentials.bearer("gateway"), timeout=10).status_code == 401
    assert httpx.post(url, json=body, headers={"authorization": "Bearer " + "x" * 43}, timeout=10).status_code == 401
    raw = ev.RawLabel(example_id=label["example_id"], label="1", annotator="a", data=digit_png(1))
    for identity in (None, "gateway"):
        with stack.channel("ingest", identity) as channel, pytest.raises(grpc.RpcError) as err:
            ingest_pb2_grpc.IngestStub(channel).SubmitLabels(iter([raw]), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # The webhook stays open to Label Studio's own token only.
    assert httpx.post(f"{stack.url('ingest')}/webhooks/label-studio", json={}, timeout=10).status_code == 401
    labeler = stack.credentials.bearer("labeler")
    assert httpx.post(url, json=body, headers=labeler, timeout=30).status_code == 200
    with stack.channel("ingest", "labeler") as channel:
        assert ingest_pb2_grpc.IngestStub(channel).SubmitLabels(iter([raw]), timeout=30).accepted == 1


# -- 4 (high): gRPC label streams held in memory; idle streams take every worker ----------------------
def test_f04_label_streams_are_bounded_and_idle_ones_cannot_hold_the_workers(stack: Stack) -> None:
    workers = 4  # FLYWHEEL_INGEST_GRPC_WORKERS of the stack
    prefix = f"f04-{uuid.uuid4().hex[:6]}"
    quiet = [QuietStream(f"{prefix}-q{i}") for i in range(workers)]
    with stack.channel("ingest", "labeler") as channel:
        stub = ingest_pb2_grpc.IngestStub(channel)
        calls = [stub.SubmitLabels.future(iter(q), timeout=60) for q in quiet]
        try:
            # Every worker waits on a silent stream: one more stream is refused at once, never queued.
            def refused_now() -> bool:
                try:
                    stub.SubmitLabels(iter([]), timeout=10)
                except grpc.RpcError as exc:
                    return exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                return False

            wait_until(refused_now, 15, message="a fifth stream refused while four wait")
            # Silent longer than FLYWHEEL_INGEST_STREAM_IDLE_S (8 s): each is cancelled, nothing stored.
            for call in calls:
                with pytest.raises(grpc.RpcError) as err:
                    call.result(timeout=30)
                assert err.value.code() == grpc.StatusCode.CANCELLED
        finally:
            for q in quiet:
                q.release.set()
        raw = ev.RawLabel(example_id=f"{prefix}-ok", label="1", annotator="a", data=digit_png(2))
        assert stub.SubmitLabels(iter([raw]), timeout=30).accepted == 1
        # A stream over its bounds (3000 labels here) is refused without holding the rest.
        before = stack.rss()["ingest"]
        many = (
            ev.RawLabel(example_id=f"{prefix}-m{i}", label="1", annotator="a", data=digit_png(i)) for i in range(4000)
        )
        with pytest.raises(grpc.RpcError) as err:
            stub.SubmitLabels(many, timeout=120)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "at most 3000" in err.value.details()
        assert stack.rss()["ingest"] - before < 200
    stack.assert_alive()


# -- 5 (high): a poison Kafka event kills ingest's consumer -------------------------------------------
def test_f05_poison_raw_events_are_dead_lettered_and_the_consumer_goes_on(stack: Stack) -> None:
    prefix = f"f05-{uuid.uuid4().hex[:6]}"
    producer = EventProducer(stack.kafka, client_id="f05")

    def raw(example: str, **fields: object) -> ev.RawLabel:
        r = ev.RawLabel(example_id=f"{prefix}-{example}", label="1", annotator="a", data=digit_png(3))
        r.meta.event_id = f"{prefix}-{example}"
        for name, value in fields.items():
            setattr(r, name, value)
        return r

    year_10000 = raw("year-10000")
    year_10000.meta.time.seconds = 253402300800
    negative_nanos = raw("nanos")
    negative_nanos.meta.time.seconds, negative_nanos.meta.time.nanos = 1, -1
    bomb = raw("bomb", data=images.png_bomb())
    for event in (year_10000, negative_nanos, bomb, raw("good")):
        producer.send(LABELS_RAW.name, event)
    producer.flush()
    # The good one, sent last, comes out: the consumer outlived the poison before it.
    out = read_topic(
        stack.kafka, LABELS.name, want=10**9, timeout_s=60, stop_when=lambda ms: _has(ms, f"{prefix}-good")
    )
    assert _has(out, f"{prefix}-good")
    letters = read_topic(
        stack.kafka, DEADLETTER.name, want=10**9, timeout_s=30, stop_when=lambda ms: _dead(ms, prefix) >= 3
    )
    assert _dead(letters, prefix) >= 3
    assert httpx.get(f"{stack.url('ingest')}/readyz", timeout=10).json()["checks"]["raw_consumer"] == "ok"
    stack.assert_alive()


def _has(messages: list, key: str) -> bool:
    return any((m.key() or b"").decode() == key for m in messages)


def _dead(messages: list, prefix: str) -> int:
    letters = [ev.DeadLetter.FromString(m.value()) for m in messages]
    return sum(1 for d in letters if prefix.encode() in d.value)


# -- 6 (high): image decompression bombs --------------------------------------------------------------
def test_f06_image_bombs_are_refused_before_a_pixel_is_decoded(stack: Stack) -> None:
    before = stack.rss()
    bombs = [
        images.png_bomb(),
        images.gif_bomb(),
        images.jpeg_declaring(60000, 60000),
        images.bmp_declaring(10**5, 10**5),
    ]
    for data in bombs:
        r = _predict(stack, {"instances": [{"b64": b64(data)}]})
        # PNG and JPEG are refused from their headers' size; GIF and BMP are not accepted formats at all.
        refusal = r.json()["error"]
        assert r.status_code == 400 and ("pixels" in refusal or "not an accepted image format" in refusal), r.text
    # The review's worst case: 36 bombs just under Pillow's own limit in one request.
    r = _predict(stack, {"instances": [{"b64": b64(images.png_bomb(13000, 13000))}] * 30})
    assert r.status_code == 400, r.text
    many_small = [{"b64": b64(images.png(1024, 1024))}] * 8  # 8 Mpx in all: over the request's budget
    assert _predict(stack, {"instances": many_small}).status_code == 400
    for data in (images.tiff(), b"<svg xmlns='http://www.w3.org/2000/svg'/>"):
        assert _predict(stack, {"instances": [{"b64": b64(data)}]}).status_code == 400
    label = {
        "example_id": f"f06-{uuid.uuid4().hex[:6]}",
        "label": "1",
        "annotator": "a",
        "image": b64(images.png_bomb()),
    }
    r = httpx.post(
        f"{stack.url('ingest')}/v1/labels", json={"labels": [label]}, headers=stack.credentials.bearer("labeler")
    )
    assert r.status_code == 400 and r.json()["field"] == "labels[0].image", r.text
    after = stack.rss()
    assert after["gateway"] - before["gateway"] < 100 and after["ingest"] - before["ingest"] < 100, (before, after)
    assert _predict(stack, {"instances": [{"b64": b64(images.png())}]}).status_code == 200
    stack.assert_alive()


# -- 7 (high): unbounded metric labels and per-name state from callers --------------------------------
def test_f07_callers_cannot_mint_metric_labels(stack: Stack) -> None:
    for _ in range(150):
        name = f"m{uuid.uuid4().hex}"
        assert _infer(stack, {"inputs": []}, model=name).status_code == 400  # refused before the model server
        assert _infer(stack, INFER, model=name).status_code == 404
    assert _infer(stack, INFER).status_code == 200
    models = stack.label_values("gateway", "flywheel_gateway_requests_total", "model")
    assert models <= {MODEL, "-"}, sorted(models)[:10]


# -- 8 (high): gzip bombs through the gateway ---------------------------------------------------------
def test_f08_compressed_bodies_are_bounded_and_only_known_encodings_taken(stack: Stack) -> None:
    bomb = gzip.compress(b"\0" * (256 << 20), 9)  # 256 MiB of zeros in ~250 KiB
    deflated = zlib.compress(b"\0" * (256 << 20), 9)
    before = stack.rss()
    for target, headers in (
        (f"{stack.url('gateway')}/v2/models/{MODEL}/infer", stack.key),
        (f"{stack.url('modelserver')}/v2/models/{MODEL}/infer", stack.operator),
    ):
        for body, encoding in ((bomb, "gzip"), (deflated, "deflate"), (gzip.compress(bomb), "gzip")):
            r = httpx.post(target, content=body, headers={**headers, "content-encoding": encoding}, timeout=60)
            assert r.status_code in (400, 413), (target, encoding, r.status_code)
        for encoding in ("br", "zstd", "compress", "gzip, gzip", "x" * 500):
            r = httpx.post(target, content=b"{}", headers={**headers, "content-encoding": encoding}, timeout=30)
            assert r.status_code == 400 and "Content-Encoding" in r.json()["error"], (encoding, r.text)
        r = httpx.post(target, content=b"\x1f\x8b garbage", headers={**headers, "content-encoding": "gzip"})
        assert r.status_code == 400
    after = stack.rss()
    assert after["modelserver"] - before["modelserver"] < 200 and after["gateway"] - before["gateway"] < 100
    ok = httpx.post(
        f"{stack.url('gateway')}/v2/models/{MODEL}/infer",
        content=gzip.compress(json.dumps(INFER).encode()),
        headers={**stack.key, "content-encoding": "gzip"},
        timeout=30,
    )
    assert ok.status_code == 200, ok.text
    stack.assert_alive()


# -- 9 (medium): a caller's own tiny deadline opens the breaker, rolls back the canary ----------------
def test_f09_a_callers_tiny_deadline_neither_opens_the_breaker_nor_rolls_back_the_canary(stack: Stack) -> None:
    routes = f"{stack.url('gateway')}/admin/routes/{MODEL}"
    canary = {"production": "1", "canary": "2", "canary_weight": 1.0}
    assert httpx.put(routes, json=canary, headers=stack.key, timeout=10).status_code == 200
    try:
        codes = [_infer(stack, INFER, {"x-flywheel-timeout-ms": "0.3"}).status_code for _ in range(60)]
        assert set(codes) <= {504, 200} and 504 in codes, codes
        assert httpx.get(routes, headers=stack.key, timeout=10).json()["canary"] == "2", "the canary was rolled back"
        assert stack.metric("gateway", "flywheel_gateway_circuit_open") == 0
        assert stack.metric("gateway", "flywheel_gateway_canary_rollbacks_total") == 0
        answer = _infer(stack, INFER)
        assert answer.status_code == 200 and answer.json()["model_version"] == "2"
    finally:
        production = {"production": "1", "canary": "", "canary_weight": 0.0}
        httpx.put(routes, json=production, headers=stack.key, timeout=10)


# -- 10 (medium): model load/unload, training jobs, force promotion and snapshots open --------------
def test_f10_internal_doors_need_a_trusted_callers_credential(stack: Stack) -> None:
    doors = [
        ("post", f"{stack.url('modelserver')}/v2/repository/models/{MODEL}/unload", {}, "gateway"),
        ("post", f"{stack.url('modelserver')}/v2/repository/models/{MODEL}/load", {}, "gateway"),
        ("post", f"{stack.url('trainer')}/v1/jobs", {"snapshot_id": "none"}, "operator"),
        (
            "post",
            f"{stack.url('trainer')}/v1/models/{MODEL}/versions/1/promote",
            {"stage": "production", "force": True},
            "operator",
        ),
        ("post", f"{stack.url('lake')}/v1/snapshots", {}, "trainer"),
        ("get", f"{stack.url('monitor')}/v1/retraining", None, "operator"),
    ]
    labeler = stack.credentials.bearer("labeler")  # a real token of this stack, for a service that trusts it not
    for method, url, body, _ in doors:
        for headers in ({}, labeler, {"authorization": "Bearer " + stack.credentials.token("operator")[:-2] + "xx"}):
            r = httpx.request(method, url, json=body, headers=headers, timeout=10)
            assert r.status_code == 401, (url, headers, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
    assert _all_versions_loaded(stack)
    job = {"model": MODEL, "snapshot_id": "none"}
    r = httpx.post(f"{stack.url('trainer')}/v1/jobs", json=job, headers=stack.operator, timeout=30)
    assert r.status_code in (400, 404), r.text  # admitted: the trainer itself answers (no such project/snapshot)
    assert r.json().get("error") != "NotAdmitted", r.text
    for service, rpc in (("lake", "/flywheel.v1.Lake/ListSnapshots"), ("trainer", "/flywheel.v1.Trainer/ListModels")):
        with stack.channel(service, None) as channel, pytest.raises(grpc.RpcError) as err:
            channel.unary_unary(rpc)(b"", timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, service
    with stack.channel("modelserver", "labeler") as channel, pytest.raises(grpc.RpcError) as err:
        channel.unary_unary("/inference.GRPCInferenceService/RepositoryModelUnload")(b"\n\x06digits", timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _all_versions_loaded(stack)


# -- 12 (medium): an out-of-range event time stalls the lake ------------------------------------------
def test_f12_the_lake_dead_letters_out_of_range_times_and_goes_on(stack: Stack) -> None:
    prefix = f"f12-{uuid.uuid4().hex[:6]}"
    producer = EventProducer(stack.kafka, client_id="f12")
    late = label_event(f"{prefix}-late", "3")
    late.meta.time.seconds = 253402300800  # 10000-01-01
    early = label_event(f"{prefix}-early", "3")
    early.updated_at.seconds = -(2**62)
    edge = label_event(f"{prefix}-edge", "3")
    edge.meta.time.seconds, edge.meta.time.nanos = 253402300799, 999_999_999  # the last valid instant
    good = label_event(f"{prefix}-good", "4")
    for event in (late, early, edge, good):
        producer.send(LABELS.name, event)
    producer.flush()
    lake = stack.url("lake")

    def landed() -> set[str]:
        params = [("example_id", f"{prefix}-{n}") for n in ("good", "edge", "late", "early")]
        r = httpx.get(f"{lake}/v1/labels/latest", params=params, headers=stack.operator, timeout=10)
        return {row["example_id"] for row in r.json()["labels"]}

    wait_until(lambda: {f"{prefix}-good", f"{prefix}-edge"} <= landed(), 60, message="the lake took the valid events")
    assert landed() == {f"{prefix}-good", f"{prefix}-edge"}
    letters = read_topic(
        stack.kafka, DEADLETTER.name, want=10**9, timeout_s=30, stop_when=lambda ms: _dead(ms, prefix) >= 2
    )
    assert _dead(letters, prefix) >= 2
    assert httpx.get(f"{lake}/readyz", timeout=10).status_code == 200


# -- 14 (low): 500s instead of 4xx -------------------------------------------------------------------
def test_f14_malformed_requests_are_4xx_everywhere(stack: Stack) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    big_int = b"1" * 5000
    tensor = {"name": "features", "datatype": "FP32", "shape": [1, 64], "data": ZEROS}
    gw, ms = stack.url("gateway"), stack.url("modelserver")
    cases: list[tuple[str, str, bytes | dict, dict[str, str]]] = [
        (f"{gw}/v1/models/{MODEL}:predict", "post", b'{"instances":' + deep + b"}", stack.key),
        (f"{gw}/v1/models/{MODEL}:predict", "post", b'{"instances":[[' + big_int + b"]]}", stack.key),
        (f"{gw}/admin/routes/{MODEL}", "put", deep, stack.key),
        (f"{gw}/v2/repository/index", "post", deep, stack.key),
        (f"{gw}/v2/models/{MODEL}/infer", "post", b'{"inputs":' + deep + b"}", stack.key),
        (
            f"{gw}/v2/models/{MODEL}/infer",
            "post",
            {"inputs": [{**tensor, "datatype": "INT8", "shape": [1], "data": [1000]}]},
            stack.key,
        ),
        (
            f"{gw}/v2/models/{MODEL}/infer",
            "post",
            {"inputs": [{**tensor, "datatype": "UINT8", "shape": [1], "data": [-1]}]},
            stack.key,
        ),
        (
            f"{gw}/v2/models/{MODEL}/infer",
            "post",
            {"inputs": [{**tensor, "shape": [1] * 65, "data": [0.0]}]},
            stack.key,
        ),
        (
            f"{gw}/v2/models/{MODEL}/infer",
            "post",
            {"inputs": [{**tensor, "shape": [2**62, 2**62, 0], "data": []}]},
            stack.key,
        ),
        (
            f"{ms}/v2/models/{MODEL}/infer",
            "post",
            {"inputs": [{**tensor, "datatype": "INT8", "shape": [1], "data": [1000]}]},
            stack.operator,
        ),
        (
            f"{ms}/v2/models/{MODEL}/infer",
            "post",
            {"inputs": [{**tensor, "shape": [1] * 65, "data": [0.0]}]},
            stack.operator,
        ),
        (f"{ms}/v2/models/{MODEL}/infer", "post", b'{"inputs":' + deep + b"}", stack.operator),
        (f"{ms}/v2/repository/models/{MODEL}/load", "post", b"{" + b" " * (2 << 20) + b"}", stack.operator),
        (f"{ms}/v2/repository/index", "post", deep, stack.operator),
        (f"{stack.url('ingest')}/v1/labels", "post", deep, stack.credentials.bearer("labeler")),
        (
            f"{stack.url('ingest')}/v1/labels",
            "post",
            b'{"labels":[{"example_id":"a","features":[' + big_int + b"]}]}",
            stack.credentials.bearer("labeler"),
        ),
        (f"{stack.url('lake')}/v1/snapshots", "post", deep, stack.operator),
        (f"{stack.url('lake')}/v1/snapshots", "post", b'{"description":"' + b"a" * (8 << 20) + b'"}', stack.operator),
        (f"{stack.url('trainer')}/v1/jobs", "post", b'{"snapshot_id":"' + b"a" * (8 << 20) + b'"}', stack.operator),
        (f"{stack.url('trainer')}/v1/jobs", "post", b'{"snapshot_id":"s","budget_s":' + big_int + b"}", stack.operator),
    ]
    for url, method, body, headers in cases:
        kw = {"json": body} if isinstance(body, dict) else {"content": body}
        r = httpx.request(method, url, headers={**headers, "content-type": "application/json"}, timeout=60, **kw)
        assert 400 <= r.status_code < 500, (url, r.status_code, r.text[:300])
    # Header fields a client library would not send: a non-ASCII name, a non-latin-1 request id.
    head = request("POST", f"/v2/models/{MODEL}/infer", {**stack.key, "Content-Type": "application/json"})
    body = json.dumps(INFER).encode()
    for extra in ("X-Caf\u00e9: 1".encode(), b"X-Request-Id: caf\xc3\xa9", b"X-Flywheel-Timeout-Ms: \xff"):
        status = raw_http(gw, head + extra + b"\r\n", body)
        assert status is not None and 400 <= status < 500, extra
    assert _infer(stack, {**INFER, "id": "\u20ac" * 3}).status_code == 400
    stack.assert_alive()


# -- 16 (low): anonymous mode unlimited, unknown key ids cost a query, body before auth, … ---------------
def test_f16_anonymous_callers_are_rate_limited(stack: Stack) -> None:
    open_gw = stack.start_gateway(require_api_key="false", default_rate_per_s="5", default_burst="5")
    url = f"{open_gw}/v1/models/{MODEL}:predict"
    # All at once: one after another, a slow answer (a loaded machine) lets the bucket refill between them.
    with ThreadPoolExecutor(30) as pool:
        codes = list(
            pool.map(lambda _: httpx.post(url, json={"instances": [ZEROS]}, timeout=30).status_code, range(30))
        )
    assert codes.count(200) >= 1 and codes.count(429) >= 10, codes


def test_f16_made_up_key_ids_cost_the_database_nothing_each(stack: Stack) -> None:
    url = f"{stack.url('gateway')}/v1/models/{MODEL}:predict"
    before = stack.metric("gateway", "flywheel_gateway_key_lookups_total")

    def made_up(_: int) -> int:
        fake = f"fwk_{uuid.uuid4().hex[:12]}_{'s' * 40}"
        return httpx.post(url, json={"instances": [ZEROS]}, headers={"authorization": f"Bearer {fake}"}).status_code

    started = time.monotonic()
    with ThreadPoolExecutor(30) as pool:
        codes = list(pool.map(made_up, range(300)))
    elapsed = time.monotonic() - started
    assert set(codes) == {401}
    lookups = stack.metric("gateway", "flywheel_gateway_key_lookups_total") - before
    # Reads of the key table are counted, and paced: one read of every id per 0.25 s, however many callers.
    assert 1 <= lookups <= elapsed / 0.25 + 3, (lookups, elapsed)


def test_f16_no_body_is_read_before_the_key_and_names_stay_in_their_folder(stack: Stack) -> None:
    gw = stack.url("gateway")
    # Headers only, the body promised and never sent: refused at once for the missing key.
    head = request(
        "POST", f"/v2/models/{MODEL}/infer", {"Content-Type": "application/json", "Content-Length": "100000"}
    )
    assert raw_http(gw, head, timeout_s=5) == 401
    assert (
        raw_http(gw, request("POST", f"/v2/models/{MODEL}/infer", {"Content-Length": str(10**12)}), timeout_s=5) == 401
    )
    for name in ("..", ".", "..%2F..", "%2e%2e"):
        r = httpx.post(f"{gw}/v1/models/{name}:predict", json={"instances": [ZEROS]}, headers=stack.key, timeout=10)
        assert r.status_code in (400, 404), (name, r.text)
    long_id = "a" * 129
    assert _infer(stack, INFER, {"x-request-id": long_id}).status_code == 400
    r = httpx.post(
        f"{stack.url('ingest')}/v1/labels",
        json={},
        headers={**stack.credentials.bearer("labeler"), "x-request-id": "a" * 10_000},
    )
    assert r.status_code == 400 and r.json()["field"] == "x-request-id"
    stack.assert_alive()


def test_f02_a_bootstrap_key_stops_working_once_rotated_out(stack: Stack, tmp_path: Path) -> None:
    """Finding 2's code half (the chart's is in tests/deploy): bootstrap keys were only ever added, so a
    rotated-out one kept working; a key taken out of the settings is revoked when a gateway starts."""
    database = f"sqlite:///{tmp_path / 'keys.db'}"  # a key table of its own: the stack's key stays valid
    old, new = "fwk_rotatedold_" + "o" * 40, "fwk_rotatednew_" + "n" * 40
    first = stack.start_gateway(database_url=database, bootstrap_keys=old)
    second = stack.start_gateway(database_url=database, bootstrap_keys=new)
    for gw in (first, second):
        url = f"{gw}/v1/models/{MODEL}:predict"
        wait_until(
            lambda url=url: (
                httpx.post(url, json={"instances": [ZEROS]}, headers={"authorization": f"Bearer {old}"}).status_code
                == 401
            ),
            20,
            message="the rotated-out bootstrap key refused",
        )
        assert (
            httpx.post(url, json={"instances": [ZEROS]}, headers={"authorization": f"Bearer {new}"}).status_code == 200
        )
