"""Ingest's Prometheus metrics: labels accepted and rejected, and time per pipeline stage."""

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
