"""Per-request metrics for both transports: requests, latency and in-flight by endpoint/model/version/status."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from prometheus_client import Counter, Gauge, Histogram

from services.gateway.metrics import IN_FLIGHT, LATENCY, REQUESTS
from services.gateway.transport.status import ERRORS


@dataclass
class Observation:
    model: str = ""  # may be set once known (gRPC: after the request is parsed)
    version: str = ""
    status: str = "OK"


@functools.cache
def _children(labels: tuple[str, str, str, str]) -> tuple[Counter, Histogram]:
    # labels() is a lock and a dict lookup per metric; a label set is looked up once.
    return REQUESTS.labels(*labels), LATENCY.labels(*labels)


@functools.cache
def _gauge(endpoint: str) -> Gauge:
    return IN_FLIGHT.labels(endpoint)


@contextmanager
def observe(
    endpoint: str, model: str, transport: Literal["http", "grpc"], known: Callable[[str], bool]
) -> Iterator[Observation]:
    """Count and time one request; a domain error is labelled with its status in `transport`'s terms.
    `known(model)`: whether the name may be a label (`Gateway.knows`); any other name is labelled "-"."""
    observation = Observation(model=model, status="200" if transport == "http" else "OK")
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
        # Only a model the model server answered for names a label: a caller cannot mint label sets at will.
        label = observation.model if known(observation.model) else "-"
        requests, latency = _children((endpoint, label, observation.version, observation.status))
        requests.inc()
        latency.observe(time.perf_counter() - started)
