"""Flywheel's `helm test` (also run against the kustomize deployment by tests/k8s): one pass through
a running release, each check printed with its time.

1. Every service answers /healthz and /readyz, and /metrics is Prometheus text with its metrics.
2. Ingest's Label Studio webhook refuses a request without the token and accepts the Secret's token;
   every internal service refuses a request without a credential (401) and admits the operator's
   service token from the Secret.
3. A model of the test's own: a small ONNX classifier written into the model repository on the
   shared volume (a new version, renamed into place), announced on flywheel.models as production.
   The model servers load it, the gateway routes to it, and predictions through the gateway
   (KServe v2 REST, with an API key) give the classes the weights were built for.
4. The gateway and the model server count those predictions in /metrics; the gateway logged them
   to Kafka and the lake wrote them as Parquet on the shared volume.
5. The model is archived on flywheel.models and its folder removed.

With the model repository on s3 (SMOKE_REMOTE_MODEL_REPOSITORY=s3://bucket/prefix) the version is written
to a local folder and published there (files, then the manifest), as the trainer does, and the model
servers pull it; with the lake on s3, SMOKE_LAKE is its s3:// URL. The keys come as AWS_*.

Runs in the trainer's image (Python, onnx, the Kafka client and the services' event code) with:
SMOKE_SERVICES (name=http://host:port,...), SMOKE_KAFKA, SMOKE_MODEL_REPOSITORY, SMOKE_LAKE,
SMOKE_API_KEYS (the first is used), SMOKE_WEBHOOK_TOKEN, SMOKE_OPERATOR_TOKEN, SMOKE_CA_FILE when the
services speak TLS, the FLYWHEEL_KAFKA_* client settings, and for a Triton model server
SMOKE_MODELSERVER_ENGINE=triton and SMOKE_MODELSERVER_METRICS. Exits 1 at the first failed check.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

MODEL = "flywheel-smoke"
FEATURES = 64
CLASSES = 10
TIMEOUT_S = float(os.environ.get("SMOKE_TIMEOUT_S", "180"))
STARTED = time.monotonic()
# The release's CA when the services speak TLS (tls.enabled).
TLS = ssl.create_default_context(cafile=os.environ["SMOKE_CA_FILE"]) if os.environ.get("SMOKE_CA_FILE") else None


class CheckFailed(Exception):
    pass


def log(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f} s] {message}", flush=True)


def http(method: str, url: str, body: object = None, headers: dict[str, str] | None = None) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={**(headers or {})})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10, context=TLS) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def until(what: str, check, timeout_s: float = TIMEOUT_S):  # type: ignore[no-untyped-def]
    """Call check() until it returns a truthy value; the last reason is in the failure."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            result = check()
        except (OSError, CheckFailed, ValueError) as exc:
            result, last = None, str(exc)
        if result:
            return result
        time.sleep(1)
    raise CheckFailed(f"{what}: not after {timeout_s:.0f} s ({last or 'no answer yet'})")


def services() -> dict[str, str]:
    return dict(item.split("=", 1) for item in os.environ["SMOKE_SERVICES"].split(","))


# How each model server engine answers: health paths, where its metrics are, what counts requests.
ENGINES = {
    "flywheel": (("/healthz", "/readyz"), "flywheel_", "flywheel_modelserver_requests_total"),
    "triton": (("/v2/health/live", "/v2/health/ready"), "nv_", "nv_inference_request_success"),
}
ENGINE = os.environ.get("SMOKE_MODELSERVER_ENGINE", "flywheel")


def metrics_url(name: str, base: str) -> str:
    """Triton serves /metrics on a port of its own (SMOKE_MODELSERVER_METRICS)."""
    return os.environ.get("SMOKE_MODELSERVER_METRICS", base) if name == "modelserver" else base


def check_health_and_metrics(urls: dict[str, str]) -> None:
    for name, base in sorted(urls.items()):
        paths, prefix, _ = ENGINES[ENGINE] if name == "modelserver" else ENGINES["flywheel"]
        for path in paths:
            status, text = http("GET", base + path)
            if status != 200:
                raise CheckFailed(f"{name} {path}: {status} {text[:300]}")
        status, text = http("GET", metrics_url(name, base) + "/metrics")
        families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
        if status != 200 or not any(f.startswith(prefix) for f in families):
            raise CheckFailed(f"{name} /metrics: {status}, no {prefix} metric among {sorted(families)[:10]}")
        log(f"{name}: healthy, ready, /metrics has {len(families)} metric families")


def check_webhook_token(ingest: str, token: str) -> None:
    url = ingest + "/webhooks/label-studio"
    status, text = http("POST", url, {})
    if status != 401:
        raise CheckFailed(f"ingest webhook without a token: expected 401, got {status} {text[:200]}")
    status, text = http("POST", url, {}, {"Authorization": f"Token {token}"})
    if status in (401, 403, 404) or status >= 500:
        raise CheckFailed(f"ingest webhook with the Secret's token: {status} {text[:200]}")
    log(f"ingest: webhook refuses no token (401), takes the Secret's token (an empty payload answers {status})")


def check_operator_token(urls: dict[str, str], token: str) -> None:
    """Internal services: no credential is 401 on any path; the operator's token gets past the check."""
    for name, base in sorted(urls.items()):
        if name == "gateway" or (name == "modelserver" and ENGINE != "flywheel"):
            continue  # the gateway's doors take API keys; Triton has no caller check
        url = base + "/flywheel-smoke-no-such-route"
        status, text = http("GET", url)
        if status != 401:
            raise CheckFailed(f"{name} without a credential: expected 401, got {status} {text[:200]}")
        status, text = http("GET", url, headers={"Authorization": f"Bearer {token}"})
        if status in (401, 403) or status >= 500:
            raise CheckFailed(f"{name} with the operator's token from the Secret: {status} {text[:200]}")
        log(f"{name}: no credential is 401, the operator's token is admitted ({status} for an unknown path)")


def write_model(repository: Path, version: int = 0) -> int:
    """A new version of MODEL (`version`, or the folder's next): class c gets the sum of features c,
    c+10, c+20, ... (then softmax)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.zeros((FEATURES, CLASSES), np.float32)
    for i in range(FEATURES):
        weights[i, i % CLASSES] = 1.0
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        "smoke",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, FEATURES])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, CLASSES])],
        initializer=[numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)

    folder = repository / MODEL
    folder.mkdir(parents=True, exist_ok=True)
    versions = [int(p.name) for p in folder.iterdir() if p.name.isdigit()]
    version = version or max(versions, default=0) + 1
    (folder / "config.pbtxt").write_text(
        f'name: "{MODEL}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
        f'input [{{ name: "features" data_type: TYPE_FP32 dims: [{FEATURES}] }}]\n'
        f'output [{{ name: "probabilities" data_type: TYPE_FP32 dims: [{CLASSES}] }}]\n'
    )
    tmp = folder / f".tmp-{version}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    onnx.save(model, str(tmp / "model.onnx"))
    tmp.rename(folder / str(version))  # a version appears whole: the servers ignore .tmp-* folders
    return version


def announce(bootstrap: str, version: int, stage: str, repository: Path) -> None:
    from services.config import CommonSettings
    from services.events import EventProducer
    from services.events.codec import new_meta
    from services.events.topics import MODELS
    from services.genproto.flywheel.v1 import events_pb2 as ev

    producer = EventProducer(bootstrap, client_id="flywheel-smoke-test", **CommonSettings().kafka_security())
    event = ev.ModelPublished(
        meta=new_meta("smoke-test"),
        model=MODEL,
        version=str(version),
        stage=stage,
        repository_uri=repository.as_uri(),
        platform="onnxruntime_onnx",
    )
    producer.send(MODELS.name, event, key=MODEL.encode())
    producer.flush()
    producer.close(10)


def check_predictions(gateway: str, api_key: str, version: int) -> None:
    rows = [[0.0] * FEATURES for _ in range(3)]
    expected = [3, 7, 0]
    for row, cls in zip(rows, expected, strict=True):
        row[cls] = row[cls + CLASSES] = 1.0
    body = {
        "inputs": [
            {"name": "features", "shape": [3, FEATURES], "datatype": "FP32", "data": [x for row in rows for x in row]}
        ]
    }
    url = f"{gateway}/v2/models/{MODEL}/infer"
    headers = {"Authorization": f"Bearer {api_key}"}

    def served() -> dict | None:
        status, text = http("POST", url, body, headers)
        if status != 200:
            raise CheckFailed(f"{status} {text[:300]}")
        answer = json.loads(text)
        if answer.get("model_version") != str(version):
            raise CheckFailed(f"answered by version {answer.get('model_version')!r}")
        return answer

    answer = until(f"the gateway serving {MODEL} v{version}", served)
    probabilities = answer["outputs"][0]["data"]
    got = [max(range(CLASSES), key=lambda c, r=r: probabilities[r * CLASSES + c]) for r in range(3)]
    if got != expected:
        raise CheckFailed(f"predicted classes {got}, expected {expected}")
    log(f"gateway: {MODEL} v{version} predicts {got} for three inputs built for {expected}")


def metric_total(base: str, family: str, **labels: str) -> float:
    status, text = http("GET", base + "/metrics")
    if status != 200:
        raise CheckFailed(f"{base}/metrics: {status}")
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(family + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def lake_parquet(lake_root: str) -> list[str]:
    """The Parquet files of flywheel.predictions under the lake (a folder, or an s3:// URL)."""
    if not lake_root.startswith("s3://"):
        return [str(p) for p in Path(lake_root).glob("**/flywheel.predictions/**/*.parquet")]
    from services.storage.s3 import url_to_fs

    fs, root = url_to_fs(lake_root)
    return [p for p in fs.glob(f"{root}/**/*.parquet") if "/flywheel.predictions/" in p]


def remote_repository() -> tuple[object, str] | None:
    """(file system, root) of the s3 model repository, or None when the repository is the shared volume."""
    url = os.environ.get("SMOKE_REMOTE_MODEL_REPOSITORY", "")
    if not url:
        return None
    from services.storage.s3 import open_bucket

    return open_bucket(url)


def next_remote_version(remote: tuple[object, str]) -> int:
    from services.storage import model_store

    fs, root = remote
    return max(model_store.remote_versions(fs, root).get(MODEL, [0]), default=0) + 1  # type: ignore[arg-type]


def check_counted_and_logged(urls: dict[str, str], lake_root: str, lake_rows_before: float) -> None:
    for name, family in (
        ("gateway", "flywheel_gateway_requests_total"),
        ("modelserver", ENGINES[ENGINE][2]),
    ):
        if name in urls and metric_total(metrics_url(name, urls[name]), family, model=MODEL) <= 0:
            raise CheckFailed(f"{name}: {family} has no requests for model {MODEL}")
    log("gateway and model server count the predictions in /metrics")
    if "lake" not in urls:
        return

    def lake_wrote() -> bool:
        rows = metric_total(urls["lake"], "flywheel_lake_rows_written_total", topic="flywheel.predictions")
        if rows <= lake_rows_before:
            raise CheckFailed(f"lake rows for flywheel.predictions still {rows}")
        if not lake_parquet(lake_root):
            raise CheckFailed(f"no Parquet file for flywheel.predictions under {lake_root}")
        return True

    until("the lake writing the logged predictions", lake_wrote, timeout_s=90)
    log(f"lake: prediction logs arrived through Kafka and are Parquet under {lake_root}")


def main() -> int:
    urls = services()
    repository = Path(os.environ["SMOKE_MODEL_REPOSITORY"])
    lake_root = os.environ["SMOKE_LAKE"]
    remote = remote_repository()
    if remote is not None:  # the shared volume is not the model servers' repository: a folder of our own
        repository = Path(os.environ.get("SMOKE_LOCAL_REPOSITORY", "/tmp/smoke-models"))
    bootstrap = os.environ["SMOKE_KAFKA"]
    api_key = os.environ["SMOKE_API_KEYS"].split(",")[0]
    version = 0
    try:
        until("every service healthy with metrics", lambda: check_health_and_metrics(urls) or True, timeout_s=120)
        if "ingest" in urls:
            check_webhook_token(urls["ingest"], os.environ["SMOKE_WEBHOOK_TOKEN"])
        check_operator_token(urls, os.environ["SMOKE_OPERATOR_TOKEN"])
        lake_rows = (
            metric_total(urls["lake"], "flywheel_lake_rows_written_total", topic="flywheel.predictions")
            if "lake" in urls
            else 0.0
        )
        version = write_model(repository, next_remote_version(remote) if remote is not None else 0)
        log(f"wrote {repository / MODEL / str(version)}/model.onnx")
        if remote is not None:
            from services.storage import model_store

            model_store.publish_version(repository, MODEL, version, *remote)  # type: ignore[arg-type]
            log(f"published {MODEL} v{version} to {os.environ['SMOKE_REMOTE_MODEL_REPOSITORY']}")
        announce(bootstrap, version, "production", repository)
        log(f"announced {MODEL} v{version} as production on flywheel.models")
        check_predictions(urls["gateway"], api_key, version)
        check_counted_and_logged(urls, lake_root, lake_rows)
    except CheckFailed as exc:
        log(f"FAILED: {exc}")
        return 1
    finally:
        if version:
            folder = repository / MODEL
            shutil.rmtree(folder / str(version), ignore_errors=True)
            if remote is not None:
                fs, root = remote
                fs.rm(f"{root}/{MODEL}/{version}", recursive=True)  # type: ignore[attr-defined]
            if not any(p.name.isdigit() for p in folder.iterdir()):
                shutil.rmtree(folder, ignore_errors=True)  # a model without versions would fail a restart
            announce(bootstrap, version, "archived", repository)
            log(f"removed {MODEL} v{version} and announced it archived")
    log("all checks passed")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.environ.get("SMOKE_APP", "/app"))  # the services package of the image
    sys.exit(main())
