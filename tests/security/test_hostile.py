"""What an attacker tries after the review's inputs, against the running stack: other header fields and
framings, other image formats, other compressions, huge counts and sizes, and garbage on the topics
outsiders may write. Every answer is a 4xx (an unparseable framing may also just close the connection),
never a 5xx; every service still answers afterwards; memory stays bounded; and what came after the
garbage on Kafka arrives whole.
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import uuid
import zlib

import grpc
import httpx
import numpy as np
import pytest
from PIL import Image

from services.events import EventProducer
from services.events.codec import new_meta
from services.events.topics import LABELS_RAW, PREDICTIONS
from services.genproto.flywheel.v1 import events_pb2 as ev
from services.genproto.flywheel.v1 import ingest_pb2_grpc
from services.genproto.inference import grpc_predict_v2_pb2 as pb
from services.genproto.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.ingest.conftest import b64, digit_png
from tests.lake.events import prediction
from tests.security import images
from tests.security.conftest import MODEL, SERVICES, Stack
from tests.security.wire import raw_http, request
from tests.support.waiting import wait_until

ZEROS = [0.0] * 64
INFER = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 64], "data": ZEROS}]}


@pytest.fixture(scope="module", autouse=True)
def memory_stays_bounded(stack: Stack):  # type: ignore[no-untyped-def]
    """Around the whole module: no service grows by more than 300 MiB, and all of them still answer."""
    before = stack.rss()
    yield
    after = stack.rss()
    grown = {name: round(after[name] - before[name]) for name in SERVICES}
    assert all(g < 300 for g in grown.values()), grown
    stack.assert_alive()


def _no_5xx(status: int | None, what: object) -> None:
    assert status is None or 400 <= status < 500, (what, status)


def test_header_fields_and_framings(stack: Stack) -> None:
    body = json.dumps(INFER).encode()
    for service in SERVICES:
        base = stack.url(service)
        auth = stack.key if service == "gateway" else stack.operator
        path = f"/v2/models/{MODEL}/infer" if service in ("gateway", "modelserver") else "/v1/stats"
        # Odd but well-formed: answered (as any request) or refused, never a 5xx.
        for head in (
            request("POST", path, {**auth, "X-Big": "a" * 70_000}, body),
            request("POST", path, {**auth, **{f"X-H{i}": "v" for i in range(300)}}, body),
        ):
            status = raw_http(base, head, body, timeout_s=10)
            assert status is None or status < 500, (service, status)
        heads = [
            request("POST", path, {**auth, "Content-Length": "5"}, body) + b"Content-Length: 9\r\n",
            request("POST", path, {**auth, "Transfer-Encoding": "chunked"}, body),
            request("POST", path, {**auth, "Content-Length": "-1"}),
            request("POST", path, {**auth, "Content-Length": "1e3"}),
            request("POST", path, {**auth, "X-Nul": "a\0b"}, body),
            request("POST", path, auth, body) + b" folded: continuation\r\n",
            request("GET", "/" + "a" * 100_000, auth),
            request("BREW", path, auth, body),
            b"GET /healthz HTTP/9.9\r\nHost: x\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello on the plaintext port
        ]
        for i, head in enumerate(heads):
            _no_5xx(raw_http(base, head, body if b"chunked" not in head else b"5\r\nab", timeout_s=10), (service, i))
        # A credential in an odd form is refused, never half-parsed.
        for value in ("Bearer", "bearer " + "x" * 10_000, "Token abc", "Bearer a b c", "Bearer\tx"):
            r = httpx.get(
                f"{base}/v2" if service != "monitor" else f"{base}/v1/retraining", headers={"authorization": value}
            )
            assert r.status_code in (401, 404), (service, value[:20], r.status_code)


def _image(fmt: str, size: tuple[int, int] = (8, 8), **save: object) -> bytes:
    buf = io.BytesIO()
    Image.new("L", size, 100).save(buf, format=fmt, **save)
    return buf.getvalue()


def _png_with_chunk(kind: bytes, body: bytes) -> bytes:
    png = images.png()
    chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return png[:33] + chunk + png[33:]  # after IHDR


def _animated_gif(frames: int) -> bytes:
    buf = io.BytesIO()
    first, *rest = [Image.new("L", (8, 8), i % 256) for i in range(frames)]
    first.save(buf, format="GIF", save_all=True, append_images=rest)
    return buf.getvalue()


def _webp_declaring(width: int, height: int) -> bytes:
    data = bytearray(_image("WEBP", lossless=True))
    # VP8L header: 14-bit width-1 and height-1 right after the 0x2f signature byte.
    at = data.index(b"VP8L") + 8
    bits = (width - 1) | ((height - 1) << 14) | (int.from_bytes(data[at + 1 : at + 5], "little") & ~((1 << 28) - 1))
    data[at + 1 : at + 5] = bits.to_bytes(4, "little")
    return bytes(data)


def test_other_image_formats_and_tricks(stack: Stack) -> None:
    predict = f"{stack.url('gateway')}/v1/models/{MODEL}:predict"
    labels = f"{stack.url('ingest')}/v1/labels"
    refused = {
        "webp-16383": _webp_declaring(16383, 16383),
        "tiff": _image("TIFF"),
        "ico": _image("ICO"),
        "pcx": _image("PCX"),
        "eps-header": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100000 100000\n",
        "psd-magic": b"8BPS" + b"\0" * 40,
        "png-truncated": images.truncated_png(),
        "png-header-lies": images.png_header_only(1000, 1000),
        "empty": b"",
    }
    accepted = {
        "png": images.png(),
        "jpeg": _image("JPEG"),
        "webp": _image("WEBP"),
        "bmp": _image("BMP"),
        "gif-2000-frames": _animated_gif(2000),  # only the first frame is decoded
        "png-ztxt-bomb": _png_with_chunk(b"zTXt", b"k\0\0" + zlib.compress(b"\0" * (64 << 20), 9)),
        "png-text-chunk-60kb": _png_with_chunk(b"tEXt", b"k\0" + b"v" * 60_000),
    }
    for name, data in {**refused, **accepted}.items():
        r = httpx.post(predict, json={"instances": [{"b64": b64(data)}]}, headers=stack.key, timeout=60)
        if name in refused:
            assert r.status_code == 400, (name, r.text)
        else:
            assert r.status_code in (200, 400), (name, r.text)  # decoded, or refused for its size: never 5xx
        label = {"example_id": f"img-{name}-{uuid.uuid4().hex[:4]}", "label": "1", "annotator": "a", "image": b64(data)}
        r = httpx.post(labels, json={"labels": [label]}, headers=stack.credentials.bearer("labeler"), timeout=60)
        assert r.status_code in ((400,) if name in refused else (200, 400)), (name, r.text)


def test_other_compressions_and_binary_framings(stack: Stack) -> None:
    for base, auth in ((stack.url("gateway"), stack.key), (stack.url("modelserver"), stack.operator)):
        url = f"{base}/v2/models/{MODEL}/infer"
        head = json.dumps(
            {
                "inputs": [
                    {"name": "features", "datatype": "FP32", "shape": [1, 64], "parameters": {"binary_data_size": 256}}
                ]
            }
        ).encode()
        tensor = np.zeros((1, 64), np.float32).tobytes()
        cases = [
            (gzip.compress(json.dumps(INFER).encode()) + b"trailing garbage", {"content-encoding": "gzip"}),
            (gzip.compress(json.dumps(INFER).encode())[:-10], {"content-encoding": "gzip"}),
            (zlib.compress(json.dumps(INFER).encode())[2:], {"content-encoding": "deflate"}),  # raw deflate
            (head + tensor, {"inference-header-content-length": str(10**18)}),
            (head + tensor, {"inference-header-content-length": "-5"}),
            (head + tensor[:-1], {"inference-header-content-length": str(len(head))}),
            (head.replace(b"256", b"99999999999") + tensor, {"inference-header-content-length": str(len(head) + 8)}),
            (head.replace(b'"FP32"', b'"BYTES"') + tensor, {"inference-header-content-length": str(len(head))}),
        ]
        for i, (body, headers) in enumerate(cases):
            r = httpx.post(url, content=body, headers={**auth, **headers}, timeout=30)
            assert 400 <= r.status_code < 500, (base, i, r.text[:200])


def test_huge_counts_and_sizes(stack: Stack) -> None:
    gw = stack.url("gateway")
    predict = f"{gw}/v1/models/{MODEL}:predict"
    for instances in ([ZEROS] * 257, [[0.0] * 65], [ZEROS[:63]], [{"b64": "A" * 700_000}]):
        r = httpx.post(predict, json={"instances": instances}, headers=stack.key, timeout=60)
        assert r.status_code in (400, 413), r.text[:200]
    infer = f"{gw}/v2/models/{MODEL}/infer"
    many_inputs = {
        "inputs": [{"name": f"i{i}", "datatype": "FP32", "shape": [1], "data": [0.0]} for i in range(10_000)]
    }
    many_outputs = {**INFER, "outputs": [{"name": f"o{i}"} for i in range(20_000)]}
    for body in (
        many_inputs,
        many_outputs,
        {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 2**31], "data": [0.0]}]},
        {"inputs": [{"name": "features", "datatype": "FP32", "shape": [10**6, 64], "data": [0.0]}]},
    ):
        r = httpx.post(infer, json=body, headers=stack.key, timeout=60)
        assert 400 <= r.status_code < 500, r.text[:200]
    # Unknown request parameters travel on and are ignored, as Triton does: answered, never a 5xx.
    r = httpx.post(infer, json={**INFER, "parameters": {f"p{i}": i for i in range(50_000)}}, headers=stack.key)
    assert r.status_code in (200, 400, 413), r.text[:200]
    labels = f"{stack.url('ingest')}/v1/labels"
    labeler = stack.credentials.bearer("labeler")
    one = {"label": "1", "annotator": "a", "features": ZEROS}
    for body in (
        {"labels": [{**one, "example_id": f"n{i}"} for i in range(5001)]},
        {"labels": [{**one, "example_id": "x" * 1_000_000}]},
        {"labels": [{**one, "example_id": "e", "annotator": "a" * 300}]},
    ):
        r = httpx.post(labels, json=body, headers=labeler, timeout=60)
        assert r.status_code in (400, 413), r.text[:200]
    r = httpx.post(labels, content=b"{" + b" " * (9 << 20) + b"}", headers=labeler, timeout=60)
    assert r.status_code == 413
    with grpc.insecure_channel(stack.grpc_addr("gateway"), options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        req = pb.ModelInferRequest(model_name=MODEL)
        req.inputs.add(name="features", datatype="FP32", shape=[1, 64])
        req.raw_input_contents.append(b"\0" * (16 << 20))
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(req, metadata=list(stack.key.items()), timeout=30)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(
                pb.ModelInferRequest(model_name="m" * (512 << 10)), metadata=list(stack.key.items()), timeout=30
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with stack.channel("ingest", "labeler") as channel, pytest.raises(grpc.RpcError) as err:
        big = ev.RawLabel(example_id="big", label="1", annotator="a", data=b"\x89PNG" + b"\0" * (1 << 20))
        ingest_pb2_grpc.IngestStub(channel).SubmitLabels(iter([big]), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_garbage_on_the_topics_loses_nothing_that_follows(stack: Stack) -> None:
    """flywheel.labels.raw is written by outsiders; flywheel.predictions by the gateway. Garbage on either is
    dead-lettered, and every valid event sent after it reaches the lake."""
    run = f"garbage-{uuid.uuid4().hex[:6]}"
    producer = EventProducer(stack.kafka, client_id=run)
    newer = ev.RawLabel(example_id=f"{run}-newer", label="1", annotator="a", data=digit_png(1))
    newer.meta.event_id, newer.meta.schema_version = f"{run}-newer", 99
    no_id = ev.RawLabel(example_id=f"{run}-no-id", label="1", annotator="a", data=digit_png(1))
    for topic in (LABELS_RAW.name, PREDICTIONS.name):
        producer.send_raw(topic, None, key=b"tombstone")
        producer.send_raw(topic, b"\xff" * 1000, key=b"junk")
        producer.send_raw(topic, b"\x0a\xff\xff\xff\xff\x0f", key=b"truncated")
    producer.send(LABELS_RAW.name, newer)
    producer.send(LABELS_RAW.name, no_id, key=no_id.example_id.encode())
    valid_labels = 200
    for i in range(valid_labels):
        raw = ev.RawLabel(
            meta=new_meta(run, event_id=f"{run}-{i}"),
            example_id=f"{run}-{i}",
            label=str(i % 10),
            annotator="a",
            data=digit_png(i),
        )
        producer.send(LABELS_RAW.name, raw)
    for i in range(100):
        producer.send(PREDICTIONS.name, prediction(f"{run}-p{i}", MODEL, "1", f"{run}-p{i}", str(i % 10)))
    producer.flush()
    lake = stack.url("lake")

    def lake_count(ids: list[str]) -> int:
        r = httpx.get(f"{lake}/v1/labels/latest", params=[("example_id", x) for x in ids], headers=stack.operator)
        return len(r.json()["labels"])

    ids = [f"{run}-{i}" for i in range(valid_labels)]
    wait_until(lambda: lake_count(ids) == valid_labels, 120, message=f"all {valid_labels} valid labels in the lake")
    assert lake_count([f"{run}-newer", f"{run}-no-id"]) == 0
    assert httpx.get(f"{stack.url('ingest')}/readyz", timeout=10).status_code == 200
    assert httpx.get(f"{lake}/readyz", timeout=10).status_code == 200
