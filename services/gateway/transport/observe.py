"""Per-request metrics for both transports: requests, latency and in-flight by endpoint/model/version/status."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from services.gateway.errors import GatewayError
from services.gateway.metrics import IN_FLIGHT, LATENCY, REQUESTS


@dataclass
class Observation:
    version: str = ""
    status: str = "OK"


UNTRUSTED_STATUS = frozenset({"401", "403", "404", "UNAUTHENTICATED", "PERMISSION_DENIED", "NOT_FOUND"})


@functools.cache
def _children(labels: tuple[str, str, str, str]) -> tuple[Counter, Histogram]:
    # labels() is a lock and a dict lookup per metric; a label set is looked up once.
    return REQUESTS.labels(*labels), LATENCY.labels(*labels)


@functools.cache
def _gauge(endpoint: str) -> Gauge:
    return IN_FLIGHT.labels(endpoint)


@contextmanager
def observe(endpoint: str, model: str, status_name: Callable[[GatewayError], str], ok: str) -> Iterator[Observation]:
    ob = Observation(status=ok)
    gauge = _gauge(endpoint)
    gauge.inc()
    started = time.perf_counter()
    try:
        yield ob
    except GatewayError as exc:
        ob.status = status_name(exc)
        raise
    except BaseException:
        ob.status = "error"
        raise
    finally:
        gauge.dec()
        # A refused or unknown name is not a model: keep callers from minting label sets at will.
        label = "-" if ob.status in UNTRUSTED_STATUS else model
        requests, latency = _children((endpoint, label, ob.version, ob.status))
        requests.inc()
        latency.observe(time.perf_counter() - started)
