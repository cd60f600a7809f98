"""Hypothesis strategies for what the OpenAPI documents do not describe: v2 inference bodies (JSON tensors,
Triton's binary framing, compression), `:predict` instances (images of every kind, bytes that only
look like one), label batches, gRPC inference messages and raw label events.

Each draws mostly near-valid input (the shape of a real request with one thing wrong, which reaches
deepest) and sometimes plain garbage.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import zlib
from typing import Any

import numpy as np
from hypothesis import strategies as st
from PIL import Image

from services.genproto.flywheel.v1 import events_pb2 as ev
from services.genproto.inference import grpc_predict_v2_pb2 as pb
from services.oip.datatypes import DTYPES

MODEL = "digits"
DATATYPES = [*DTYPES, "BYTES", "FP8", "", "fp32", "FP32 "]
SIGNED = ("INT8", "INT16", "INT32", "INT64")

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6),
    max_leaves=40,
)
model_names = st.sampled_from([MODEL, MODEL, MODEL, "nope", "", "..", "a" * 200, "d\r\nX: y", "digits/../x"])
versions = st.sampled_from(["", "", "1", "2", "3", "9", "-1", "01", "x", "1\r\n"])
shapes = st.one_of(
    st.just([1, 64]),
    st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=3).map(lambda s: [*s[:-1], 64]),
    st.lists(st.integers(min_value=-3, max_value=2**40), max_size=6),
    st.lists(st.integers(min_value=0, max_value=2), min_size=30, max_size=70),
)


@st.composite
def json_tensors(draw: st.DrawFn) -> dict[str, Any]:
    shape = draw(shapes)
    size = int(np.prod(shape, dtype=object)) if shape and all(d >= 0 for d in shape) else -1
    count = size if 0 <= size <= 4096 else 3
    kind = draw(st.sampled_from(["floats", "ints", "nested", "garbage"]))
    if kind == "floats":
        data: Any = draw(
            st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=count, max_size=count)
        )
    elif kind == "ints":
        data = draw(st.lists(st.integers(min_value=-(2**65), max_value=2**65), min_size=count, max_size=count))
    elif kind == "nested":
        data = np.zeros(shape if 0 < size <= 4096 else [1]).tolist()
    else:
        data = draw(json_values)
    tensor = {
        "name": draw(st.sampled_from(["features", "features", "input", ""])),
        "datatype": draw(st.sampled_from(["FP32", "FP32", *DATATYPES])),
        "shape": shape,
        "data": data,
    }
    if draw(st.booleans()):
        tensor["parameters"] = draw(st.dictionaries(st.text(max_size=8), json_scalars, max_size=3))
    return tensor


@st.composite
def infer_bodies(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    """A v2 REST inference body and its headers: JSON, binary-framed, compressed, or garbage."""
    kind = draw(st.sampled_from(["json", "json", "binary", "garbage", "compressed"]))
    headers = {"content-type": "application/json"}
    if kind == "garbage":
        return draw(st.binary(max_size=2048)), headers
    doc: dict[str, Any] = {"inputs": draw(st.lists(json_tensors(), max_size=3))}
    for key, strategy in (
        ("id", st.text(max_size=200)),
        ("outputs", st.lists(st.fixed_dictionaries({"name": st.text(max_size=20)}), max_size=4)),
        ("parameters", st.dictionaries(st.text(max_size=20), json_scalars, max_size=4)),
    ):
        if draw(st.booleans()):
            doc[key] = draw(strategy)
    if kind == "binary":
        raw = draw(st.binary(max_size=1024))
        for tensor in doc["inputs"]:
            tensor.pop("data", None)
            tensor["parameters"] = {"binary_data_size": draw(st.integers(min_value=-5, max_value=len(raw) + 5))}
        head = json.dumps(doc).encode()
        split = draw(st.sampled_from([len(head), len(head), 0, len(head) + len(raw) + 1, -1]))
        return head + raw, {"content-type": "application/octet-stream", "inference-header-content-length": str(split)}
    body = json.dumps(doc).encode()
    if kind == "compressed":
        encoding = draw(st.sampled_from(["gzip", "deflate", "br", "gzip, gzip", "GZIP", "identity"]))
        packed = {"gzip": gzip.compress, "deflate": zlib.compress}.get(encoding.lower(), lambda b: b)(body)
        cut = draw(st.integers(min_value=0, max_value=max(0, len(packed))))
        return packed[: cut if draw(st.booleans()) else len(packed)], {**headers, "content-encoding": encoding}
    return body, headers


def _image(fmt: str, width: int, height: int, mode: str) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height)).save(buf, format=fmt)
    return buf.getvalue()


images = st.one_of(
    st.builds(
        _image,
        st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "ICO"]),
        st.integers(min_value=1, max_value=64),
        st.integers(min_value=1, max_value=64),
        st.sampled_from(["L", "RGB", "1"]),
    ).flatmap(lambda data: st.binary(max_size=16).map(lambda junk: data[: max(8, len(data) - len(junk))] + junk)),
    st.builds(_image, st.just("PNG"), st.integers(1, 64), st.integers(1, 64), st.just("L")),
    st.binary(max_size=512).map(lambda b: b"\x89PNG\r\n\x1a\n" + b),
    st.binary(max_size=512),
)
instances = st.one_of(
    st.lists(st.floats(min_value=0, max_value=1, width=32), min_size=64, max_size=64),
    st.lists(st.floats(allow_nan=False, allow_infinity=False) | st.integers() | st.text(max_size=3), max_size=70),
    images.map(lambda b: base64.b64encode(b).decode()),
    images.map(lambda b: {"b64": base64.b64encode(b).decode()}),
    st.dictionaries(st.sampled_from(["b64", "features", "x"]), json_values, max_size=2),
    st.text(max_size=40),
    json_values,
)


@st.composite
def predict_bodies(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    body: dict[str, Any] = {"instances": draw(st.lists(instances, max_size=6))}
    if draw(st.booleans()):
        body["id"] = draw(st.text(max_size=150))
    return body


@st.composite
def label_batches(draw: st.DrawFn) -> Any:
    """`POST /v1/labels` bodies: near-valid native labels with one field off, or garbage."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    label: dict[str, Any] = {
        "example_id": draw(st.text(max_size=300)),
        "label": draw(st.sampled_from([str(d) for d in range(10)] + ["cat", "", "10"])),
        "annotator": draw(st.text(max_size=20)),
    }
    which = draw(st.sampled_from(["features", "image", "both", "neither"]))
    if which in ("features", "both"):
        label["features"] = draw(
            st.lists(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**40), 2**40), max_size=70)
        )
    if which in ("image", "both"):
        label["image"] = draw(images.map(lambda b: base64.b64encode(b).decode()) | st.text(max_size=20))
    for key, strategy in (
        ("action", st.sampled_from(["created", "updated", "deleted", "eaten"])),
        ("annotation_id", st.text(max_size=20)),
        ("updated_at", st.sampled_from(["2026-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "0001-01-01", "yesterday"])),
    ):
        if draw(st.booleans()):
            label[key] = draw(strategy)
    return {"labels": draw(st.lists(st.just(label), min_size=0, max_size=3))}


@st.composite
def grpc_infer_messages(draw: st.DrawFn) -> bytes:
    """A serialized ModelInferRequest: raw or typed tensors, odd names and shapes; or bytes that are none."""
    if draw(st.integers(0, 7)) == 0:
        return draw(st.binary(max_size=512))
    request = pb.ModelInferRequest(
        model_name=draw(model_names), model_version=draw(versions), id=draw(st.text(max_size=140))
    )
    raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 2))):
        shape = draw(shapes)
        datatype = draw(st.sampled_from(["FP32", "FP32", *DATATYPES]))
        tensor = request.inputs.add(name=draw(st.sampled_from(["features", "features", "x", ""])), datatype=datatype)
        tensor.shape.extend([max(min(d, 2**62), -(2**62)) for d in shape])
        if raw:
            request.raw_input_contents.append(draw(st.binary(max_size=512)) if draw(st.booleans()) else b"\0" * 256)
        elif datatype in SIGNED:
            tensor.contents.int_contents.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=70)))
        else:
            tensor.contents.fp32_contents.extend(draw(st.lists(st.floats(width=32, allow_nan=False), max_size=70)))
    if draw(st.booleans()):
        request.parameters["timeout"].int64_param = draw(st.integers(-(2**40), 2**40))
    return request.SerializeToString()


@st.composite
def raw_labels(draw: st.DrawFn) -> bytes:
    """A flywheel.labels.raw payload as an outside producer might write it: a near-valid RawLabel, or bytes."""
    if draw(st.integers(0, 5)) == 0:
        return draw(st.binary(max_size=512))
    raw = ev.RawLabel(
        example_id=draw(st.text(max_size=300)),
        label=draw(st.sampled_from(["1", "7", "cat", ""])),
        annotator=draw(st.text(max_size=10)),
        data=draw(images),
        action=draw(st.integers(0, 6)),
        content_type=draw(st.sampled_from(["", "image/png", "image/svg+xml"])),
    )
    raw.meta.event_id = draw(st.text(max_size=40))
    raw.meta.schema_version = draw(st.integers(0, 3))
    raw.meta.time.seconds = draw(st.integers(-(2**62), 2**62) | st.integers(0, 2**32))
    raw.meta.time.nanos = draw(st.integers(-(2**31), 2**31 - 1) | st.just(0))
    raw.features.extend(draw(st.lists(st.floats(width=32), max_size=70)))
    return raw.SerializeToString()
