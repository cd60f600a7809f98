"""Prometheus metrics per model and version, and the counters behind Triton's ModelStatistics."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_LABELS = ("model", "version")
Reading = Callable[[], float]

REQUESTS = Counter("flywheel_modelserver_requests_total", "Inference requests answered", _LABELS)
FAILURES = Counter("flywheel_modelserver_request_failures_total", "Inference requests failed", (*_LABELS, "reason"))
QUEUE_SECONDS = Histogram("flywheel_modelserver_queue_seconds", "Time queued", _LABELS, buckets=_LATENCY_BUCKETS)
COMPUTE_SECONDS = Histogram(
    "flywheel_modelserver_compute_seconds", "Backend time per batch", _LABELS, buckets=_LATENCY_BUCKETS
)
REQUEST_SECONDS = Histogram(
    "flywheel_modelserver_request_seconds", "End-to-end time in the server", _LABELS, buckets=_LATENCY_BUCKETS
)
BATCH_SIZE = Histogram(
    "flywheel_modelserver_batch_size", "Rows per executed batch", _LABELS, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
QUEUE_DEPTH = Gauge("flywheel_modelserver_queue_depth", "Requests waiting", _LABELS)
SHED = Counter("flywheel_modelserver_shed_total", "Requests refused because the queue was full", _LABELS)
LOOP_REFUSED = Counter(
    "flywheel_modelserver_loop_behind_refused_total",
    "Inference requests refused before parsing because the event loop was behind (MAX_LOOP_LAG_MS)",
)
EXPIRED = Counter("flywheel_modelserver_expired_total", "Requests whose client deadline passed before compute", _LABELS)
LATE = Counter(
    "flywheel_modelserver_slo_late_total",
    "Requests without a client deadline answered after the model's SLO (answered all the same)",
    _LABELS,
)
COST_A = Gauge("flywheel_modelserver_cost_model_a_seconds", "Fitted per-row batch cost a (latency = a*n + b)", _LABELS)
COST_B = Gauge("flywheel_modelserver_cost_model_b_seconds", "Fitted per-batch overhead b (latency = a*n + b)", _LABELS)
BATCH_LIMIT = Gauge("flywheel_modelserver_batch_limit", "AIMD batch-size limit", _LABELS)
LOADED = Gauge("flywheel_modelserver_model_loaded", "1 while a model version serves", _LABELS)


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)


@dataclass
class VersionStats:
    """Triton-style cumulative statistics of one model version."""

    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute: Duration = field(default_factory=Duration)
    batches: dict[int, Duration] = field(default_factory=dict)
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0


class VersionMetrics:
    """The batcher's observer and the dataplane's recorder for one model version."""

    def __init__(self, model: str, version: str) -> None:
        self.labels = labels = (model, version)
        self.stats = VersionStats()
        self._lock = threading.Lock()
        # The labelled children, looked up once: `labels()` per request costs more than the update.
        self._requests = REQUESTS.labels(*labels)
        self._shed = SHED.labels(*labels)
        self._expired = EXPIRED.labels(*labels)
        self._late = LATE.labels(*labels)
        self._queue_seconds = QUEUE_SECONDS.labels(*labels)
        self._compute_seconds = COMPUTE_SECONDS.labels(*labels)
        self._request_seconds = REQUEST_SECONDS.labels(*labels)
        self._batch_size = BATCH_SIZE.labels(*labels)
        self._queue_depth = QUEUE_DEPTH.labels(*labels)
        self._cost_a = COST_A.labels(*labels)
        self._cost_b = COST_B.labels(*labels)
        self._batch_limit = BATCH_LIMIT.labels(*labels)
        self._failures: dict[str, Counter] = {}
        self._readings: tuple[Reading, ...] = ()
        LOADED.labels(*labels).set(1)

    def follow(self, depth: Reading, a: Reading, b: Reading, limit: Reading) -> None:
        """Gauges read from the batcher when Prometheus scrapes (no per-request updates)."""
        self._readings = (depth, a, b, limit)
        for gauge, read in zip(self._followed(), self._readings, strict=True):
            gauge.set_function(read)

    def _followed(self) -> tuple[Gauge, ...]:
        return (self._queue_depth, self._cost_a, self._cost_b, self._batch_limit)

    # BatchObserver

    def shed(self) -> None:
        self._shed.inc()

    def expired(self) -> None:
        self._expired.inc()

    def batch(
        self, rows: int, compute_s: float, queue_s: Sequence[float], late: int, a: float, b: float, limit: float
    ) -> None:
        self._batch_size.observe(rows)
        if late:
            self._late.inc(late)
        self._compute_seconds.observe(compute_s)
        observe = self._queue_seconds.observe
        for q in queue_s:
            observe(q)
        with self._lock:
            s = self.stats
            s.execution_count += 1
            s.inference_count += len(queue_s)
            s.compute.add(compute_s, len(queue_s))
            s.queue.count += len(queue_s)
            s.queue.ns += int(sum(queue_s) * 1e9)
            s.batches.setdefault(rows, Duration()).add(compute_s)

    # dataplane
    def answered(self, seconds: float) -> None:
        self._requests.inc()
        self._request_seconds.observe(seconds)
        with self._lock:
            self.stats.success.add(seconds)
            self.stats.last_inference_ms = int(time.time() * 1000)

    def failed(self, seconds: float, reason: str) -> None:
        self._requests.inc()
        child = self._failures.get(reason)
        if child is None:
            child = self._failures[reason] = FAILURES.labels(*self.labels, reason)
        child.inc()
        with self._lock:
            self.stats.fail.add(seconds)

    def unloaded(self) -> None:
        LOADED.labels(*self.labels).set(0)
        # Keep the last values, and let the batcher go.
        last = [0.0, *(read() for read in self._readings[1:])] if self._readings else [0.0, 0.0, 0.0, 0.0]
        for gauge, value in zip(self._followed(), last, strict=True):
            gauge.set_function(lambda v=value: v)
        self._readings = ()
