"""One gateway in front of three real model-server processes behind one name: load is shared, and a
replica killed under load costs no request (its attempts are retried on the others).

One name with three A records cannot be made on 127.0.0.1 without a DNS server, so the gateway's
test-only setting FLYWHEEL_GATEWAY_MODELSERVER_TEST_ADDRS maps the configured name (under the
reserved `.invalid` domain, so DNS could never answer it) to the three `127.0.0.1:port` pairs;
everything past the lookup (picking, pools, ejection, retries) is the production path.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from services.gateway.keys import KeyStore
from tests.gateway.conftest import Gateway, ModelServer, _stop, auth, launch_gateway, spawn_modelserver
from tests.gateway.models import MODEL
from tests.support.credentials import service_env

REPLICAS = 3
CONCURRENCY = 4
BODY = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64}]}


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[tuple[subprocess.Popen, ModelServer]]]:
    works = [tmp_path_factory.mktemp(f"replica{i}") for i in range(REPLICAS)]
    service_env("modelserver")  # make the session's credentials here: a first call from 3 threads races
    with ThreadPoolExecutor(REPLICAS) as pool:  # start them side by side: each takes seconds to load
        started = list(pool.map(spawn_modelserver, works))
    try:
        yield started
    finally:
        for proc, _ in started:
            if proc.poll() is None:
                _stop(proc, "modelserver replica")


@pytest.fixture(scope="module")
def balanced(
    replicas: list[tuple[subprocess.Popen, ModelServer]],
    keydb: tuple[str, KeyStore],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    addrs = [server.http_url.removeprefix("http://") for _, server in replicas]
    port = addrs[0].rpartition(":")[2]
    gw = launch_gateway(
        tmp_path_factory.mktemp("gateway"),
        keydb[0],
        f"modelserver.replicas.invalid:{port}",
        replicas[0][1].repo,
        modelserver_test_addrs=",".join(addrs),
        modelserver_eject_s=10,
    )
    try:
        yield gw
    finally:
        _stop(gw.proc, "gateway")


def _load(gw: Gateway, key: str, n: int, on_done: threading.Event | None = None, at: int = 0) -> list[str]:
    """`n` v2 infer requests, CONCURRENCY at a time; their outcomes ("200", or the status and why).
    `on_done` is set once `at` of them have been answered."""
    statuses: list[str] = []
    lock = threading.Lock()
    url = f"{gw.http_url}/v2/models/{MODEL}/versions/1/infer"

    def worker(count: int) -> None:
        with httpx.Client(headers=auth(key), timeout=10) as client:
            for _ in range(count):
                try:
                    r = client.post(url, json=BODY)
                    status = "200" if r.status_code == 200 else f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as exc:
                    status = f"no answer: {exc!r}"
                with lock:
                    statuses.append(status)
                    if on_done is not None and len(statuses) == at:
                        on_done.set()

    shares = [n // CONCURRENCY + (i < n % CONCURRENCY) for i in range(CONCURRENCY)]
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(worker, shares))
    return statuses


def _per_replica(gw: Gateway, addrs: list[str]) -> list[float]:
    return [gw.metric("flywheel_gateway_upstream_requests_total", addr=a) for a in addrs]


def test_load_is_shared_and_a_killed_replica_costs_no_request(
    replicas: list[tuple[subprocess.Popen, ModelServer]], balanced: Gateway, keys: dict[str, str]
) -> None:
    addrs = [server.http_url.removeprefix("http://") for _, server in replicas]

    before = _per_replica(balanced, addrs)
    statuses = _load(balanced, keys["predict"], 300)
    assert statuses.count("200") == 300, sorted(set(statuses))
    shares = [after - b for after, b in zip(_per_replica(balanced, addrs), before, strict=True)]
    assert sum(shares) >= 300
    assert all(80 <= s <= 120 for s in shares), shares

    # SIGKILL one replica once 60 of 300 requests are answered: every request still succeeds.
    victim, _ = replicas[0]
    killed = threading.Event()
    half = threading.Event()

    def kill() -> None:
        half.wait(timeout=30)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        killed.set()

    killer = threading.Thread(target=kill)
    killer.start()
    statuses = _load(balanced, keys["predict"], 300, on_done=half, at=60)
    killer.join(timeout=30)
    assert killed.is_set()
    assert statuses.count("200") == 300, sorted(set(statuses))
    assert balanced.metric("flywheel_gateway_upstream_ejections_total", addr=addrs[0]) >= 1
    # The victim got its share of the first 60 and a few attempts after (each refused, then ejected);
    # the survivors took the rest between them.
    second = [a - s - b for a, s, b in zip(_per_replica(balanced, addrs), shares, before, strict=True)]
    assert second[0] <= 40, second
    assert second[1] + second[2] >= 300 - second[0] and min(second[1:]) >= 60, second
