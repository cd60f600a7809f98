"""Ingest's Prometheus metrics: labels accepted and rejected, and time per pipeline stage.

Each stage records wall time (a histogram) and the CPU time of the threads doing it (a counter):
under concurrency or on a busy machine wall times overlap and stretch, CPU time says what a
stage really costs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Histogram

ACCEPTED = Counter("flywheel_ingest_labels_accepted_total", "Labels stored and published", ["source"])
REJECTED = Counter("flywheel_ingest_labels_rejected_total", "Labels refused as invalid", ["source"])
STAGE_SECONDS = Histogram(
    "flywheel_ingest_stage_seconds",
    "Time per batch in each stage: parse (HTTP JSON), validate (PNG decode), objects, sql, publish",
    ["stage"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BATCH_SIZE = Histogram(
    "flywheel_ingest_batch_labels", "Labels per submitted batch", buckets=(1, 10, 50, 100, 500, 1000, 5000)
)
FETCHES = Counter(
    "flywheel_ingest_fetches_total",
    "Label Studio task data fetched later, by outcome: done, retried (transient failure), failed (permanent), "
    "dead (dead-lettered)",
    ["outcome"],
)
STAGE_CPU = Counter(
    "flywheel_ingest_stage_cpu_seconds_total", "CPU time (user+system) of the threads running each stage", ["stage"]
)


@contextmanager
def stage(name: str, wall: bool = True) -> Iterator[None]:
    """Time a stage: wall time into STAGE_SECONDS (unless wall=False), this thread's CPU into STAGE_CPU."""
    started, cpu = time.perf_counter(), time.thread_time()
    try:
        yield
    finally:
        STAGE_CPU.labels(name).inc(time.thread_time() - cpu)
        if wall:
            STAGE_SECONDS.labels(name).observe(time.perf_counter() - started)
