"""Pods replaced under load cost no prediction: model-server replicas restarted one by one behind a gateway
(SIGTERM: drain, then a new process on the same port, as a Deployment's rollout replaces pods), and a
gateway drained while a keep-alive client sends.

Real processes throughout: two model servers, one gateway balancing over both (the test-only address
map of test_replicas.py stands in for the name's DNS records), clients on keep-alive connections.
"""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.gateway.keys import KeyStore
from tests.gateway.conftest import Gateway, _stop, auth, launch_gateway, spawn_modelserver
from tests.gateway.models import MODEL
from tests.support.credentials import service_env
from tests.support.waiting import wait_until

BODY = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64}]}
TARGET = f"/v2/models/{MODEL}/versions/1/infer"
CLIENTS = 4
DRAIN_S = 3  # the model servers' and gateway's drain time: short, the test waits for it each time


class Load:
    """CLIENTS threads, each on one keep-alive httpx client, sending until stopped; every outcome kept."""

    def __init__(self, gw: Gateway, key: str) -> None:
        self.outcomes: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(gw, key)) for _ in range(CLIENTS)]
        for t in self._threads:
            t.start()

    def _run(self, gw: Gateway, key: str) -> None:
        with httpx.Client(headers=auth(key), timeout=10) as client:
            while not self._stop.is_set():
                try:
                    r = client.post(f"{gw.http_url}{TARGET}", json=BODY)
                    outcome = "200" if r.status_code == 200 else f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as exc:
                    outcome = f"no answer: {exc!r}"
                with self._lock:
                    self.outcomes.append(outcome)

    def count(self) -> int:
        with self._lock:
            return len(self.outcomes)

    def stop(self) -> list[str]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        return self.outcomes


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[subprocess.Popen]]:
    service_env("modelserver")
    procs: list[subprocess.Popen] = []
    try:
        for i in range(2):
            procs.append(spawn_modelserver(tmp_path / f"replica{i}-0", settings={"drain_timeout_s": str(DRAIN_S)})[0])
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                _stop(proc, "modelserver replica")


def _http_port(proc: subprocess.Popen) -> int:
    return int(proc.args[proc.args.index("--http-port") + 1])


def test_replicas_restarted_one_by_one_under_load_cost_no_prediction(
    replicas: list[subprocess.Popen], keydb: tuple[str, KeyStore], keys: dict[str, str], tmp_path: Path
) -> None:
    ports = [_http_port(p) for p in replicas]
    (tmp_path / "gateway").mkdir()
    gw = launch_gateway(
        tmp_path / "gateway",
        keydb[0],
        f"modelserver.rolling.invalid:{ports[0]}",
        tmp_path / "replica0-0" / "models",
        modelserver_test_addrs=",".join(f"127.0.0.1:{p}" for p in ports),
        modelserver_eject_s=1,
    )
    try:
        load = Load(gw, keys["predict"])
        try:
            for round_ in range(2):
                for i, port in enumerate(ports):
                    seen = load.count()
                    wait_until(lambda s=seen: load.count() >= s + 50, timeout_s=30, message="traffic before")
                    old = replicas[i]
                    old.send_signal(signal.SIGTERM)
                    assert old.wait(timeout=DRAIN_S + 15) == 0, "a replica did not drain cleanly"
                    work = tmp_path / f"replica{i}-{round_ + 1}"
                    replicas[i] = spawn_modelserver(work, port, {"drain_timeout_s": str(DRAIN_S)})[0]
            seen = load.count()
            wait_until(lambda: load.count() >= seen + 50, timeout_s=30, message="traffic after")
        finally:
            outcomes = load.stop()
        resent = sum(gw.metric("flywheel_gateway_upstream_resends_total", addr=f"127.0.0.1:{p}") for p in ports)
        failed = [o for o in outcomes if o != "200"]
        print(f"{len(outcomes)} predictions across 4 replica restarts: {len(failed)} failed, {resent:.0f} re-sent")
        assert not failed, sorted(set(failed))[:5]
        assert len(outcomes) >= 250
    finally:
        _stop(gw.proc, "gateway")


def test_a_gateway_answers_kept_alive_requests_while_draining_then_exits(
    replicas: list[subprocess.Popen], keydb: tuple[str, KeyStore], keys: dict[str, str], tmp_path: Path
) -> None:
    port = _http_port(replicas[0])
    (tmp_path / "gateway").mkdir()
    gw = launch_gateway(
        tmp_path / "gateway", keydb[0], f"127.0.0.1:{port}", tmp_path / "replica0-0" / "models", drain_timeout_s=DRAIN_S
    )
    try:
        host, gw_port = gw.http_url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(gw_port), timeout=30)
        headers = {**auth(keys["predict"]), "content-type": "application/json"}
        body = json.dumps(BODY)

        def infer() -> tuple[int, str]:
            conn.request("POST", TARGET, body, headers)
            answer = conn.getresponse()
            answer.read()
            return answer.status, (answer.getheader("connection") or "").lower()

        before = [infer() for _ in range(3)]
        gw.proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        wait_until(
            lambda: httpx.get(f"{gw.http_url}/readyz", timeout=2).status_code == 503,
            timeout_s=5,
            proc=gw.proc,
            message="gateway unready while draining",
        )
        during = [infer() for _ in range(3)]
        conn.close()
        assert before == [(200, "")] * 3, before
        assert during == [(200, "close")] * 3, during
        assert gw.proc.wait(timeout=DRAIN_S + 15) == 0
        assert time.monotonic() - sent < DRAIN_S + 5
    finally:
        if gw.proc.poll() is None:
            _stop(gw.proc, "gateway")
