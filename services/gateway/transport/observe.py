"""Per-request metrics for both transports: requests, latency and in-flight by endpoint/model/version/status."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from services.gateway.errors import GatewayError
from services.gateway.metrics import IN_FLIGHT, LATENCY, REQUESTS


@dataclass
class Observation:
    version: str = ""
    status: str = "OK"


@contextmanager
def observe(endpoint: str, model: str, status_name: Callable[[GatewayError], str], ok: str) -> Iterator[Observation]:
    ob = Observation(status=ok)
    gauge = IN_FLIGHT.labels(endpoint)
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
        labels = (endpoint, model, ob.version, ob.status)
        REQUESTS.labels(*labels).inc()
        LATENCY.labels(*labels).observe(time.perf_counter() - started)
