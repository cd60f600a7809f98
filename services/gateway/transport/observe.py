"""Per-request metrics for both transports: requests, latency and in-flight by endpoint/model/version/status."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from prometheus_client import Counter, Gauge, Histogram

from services.gateway.dataplane import MODEL_NAME
from services.gateway.metrics import IN_FLIGHT, LATENCY, REQUESTS
from services.gateway.transport.status import ERRORS


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
def observe(endpoint: str, model: str, transport: Literal["http", "grpc"]) -> Iterator[Observation]:
    """Count and time one request; a domain error is labelled with its status in `transport`'s terms."""
    observation = Observation(status="200" if transport == "http" else "OK")
    gauge = _gauge(endpoint)
    gauge.inc()
    started = time.perf_counter()
    try:
        yield observation
    except ERRORS.handled as exc:
        status = ERRORS.status(exc)
        observation.status = str(status.http) if transport == "http" else status.grpc.name
        raise
    except BaseException:
        observation.status = "error"
        raise
    finally:
        gauge.dec()
        # A refused, unknown or malformed name is not a model: keep callers from minting label sets at will.
        known = observation.status not in UNTRUSTED_STATUS and MODEL_NAME.fullmatch(model)
        label = model if known else "-"
        requests, latency = _children((endpoint, label, observation.version, observation.status))
        requests.inc()
        latency.observe(time.perf_counter() - started)
