"""Ingest test helpers: start the real service process, make digit PNGs, read topics back."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from services.devstack.ports import free_port
from services.preprocessing import features_to_png
from services.transportkit.auth import authenticated_channel
from tests.support.credentials import credentials, service_env
from tests.support.kafka_reader import read_topic
from tests.support.projects import example_spec, publish_spec
from tests.support.waiting import wait_until

TOKEN = "test-webhook-token"


@dataclass
class IngestProcess:
    proc: subprocess.Popen
    http: str
    grpc: str
    home: Path
    database_url: str
    bootstrap: str
    # /v1/labels and the gRPC stream admit label producers: the tests call as one
    headers = property(lambda self: credentials().bearer("labeler"))

    def channel(self) -> grpc.Channel:
        return authenticated_channel(grpc.insecure_channel(self.grpc), credentials().token("labeler"))


def digit_png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return features_to_png(rng.integers(0, 17, size=64).astype(np.float32) / 16.0)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _ready(url: str) -> bool:
    return httpx.get(f"{url}/readyz", timeout=2).status_code == 200


@pytest.fixture
def start_ingest(tmp_path: Path) -> Iterator[Callable[..., IngestProcess]]:
    """Start `python -m services.ingest` on free ports; stop it with SIGTERM and expect exit 0."""
    started: list[IngestProcess] = []

    def start(bootstrap: str, database_url: str, **env: str) -> IngestProcess:
        publish_spec(bootstrap, example_spec("digits"))  # the default project (the trainer publishes it in a stack)
        home = tmp_path / f"home{len(started)}"
        http_port, grpc_port = free_port(), free_port()
        full_env = {
            **os.environ,
            "FLYWHEEL_HOME": str(home),
            "FLYWHEEL_KAFKA_BOOTSTRAP": bootstrap,
            "FLYWHEEL_DATABASE_URL": database_url,
            "FLYWHEEL_OBJECT_STORE_URL": f"file://{tmp_path / 'objects'}",
            "FLYWHEEL_INGEST_HTTP_PORT": str(http_port),
            "FLYWHEEL_INGEST_GRPC_PORT": str(grpc_port),
            **service_env("ingest"),
            "FLYWHEEL_INGEST_WEBHOOK_TOKEN": TOKEN,
            "FLYWHEEL_INGEST_CONSUMER_GROUP": f"ingest-{tmp_path.name[-20:]}-{len(started)}",
            "FLYWHEEL_LOG_LEVEL": "WARNING",
            **env,
        }
        log = (tmp_path / f"ingest{len(started)}.log").open("w")
        proc = subprocess.Popen([sys.executable, "-m", "services.ingest"], env=full_env, stdout=log, stderr=log)
        svc = IngestProcess(
            proc, f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", home, database_url, bootstrap
        )
        started.append(svc)
        wait_until(lambda: _ready(svc.http), timeout_s=90, proc=proc, message="ingest /readyz")
        return svc

    yield start
    for svc in started:
        if svc.proc.poll() is None:
            svc.proc.send_signal(signal.SIGTERM)
    for svc in started:
        assert svc.proc.wait(timeout=60) == 0, "ingest did not drain cleanly on SIGTERM"


def read_matching(bootstrap: str, topic: str, prefix: str, want: int, timeout_s: float = 60) -> list:
    """Messages on `topic` whose key starts with `prefix` (the test's own examples)."""

    def mine(msgs: list) -> list:
        return [m for m in msgs if (m.key() or b"").decode().startswith(prefix)]

    msgs = read_topic(bootstrap, topic, want=10**9, timeout_s=timeout_s, stop_when=lambda ms: len(mine(ms)) >= want)
    return mine(msgs)
