"""The gateway's Prometheus metrics (default registry, served on /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("flywheel_gateway_requests_total", "Requests answered", ["endpoint", "model", "version", "status"])
LATENCY = Histogram(
    "flywheel_gateway_request_seconds",
    "Request latency in the gateway",
    ["endpoint", "model", "version", "status"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
)
IN_FLIGHT = Gauge("flywheel_gateway_in_flight", "Requests in progress", ["endpoint"])
AUTH_FAILURES = Counter("flywheel_gateway_auth_refusals_total", "Requests refused by the guard", ["reason"])
KEY_LOOKUPS = Counter(
    "flywheel_gateway_key_lookups_total", "Reads of the API key table (one key, or every key id)", ["kind"]
)
PREDICTION_LOGS = Counter(
    "flywheel_gateway_prediction_logs_total", "Prediction logs by outcome (logged, dropped, failed)", ["outcome"]
)
LOG_QUEUE = Gauge("flywheel_gateway_prediction_log_queue", "Prediction logs waiting for Kafka")
ROUTED = Counter("flywheel_gateway_routed_total", "Predictions by model and route", ["model", "route"])
SHADOW = Counter("flywheel_gateway_shadow_total", "Shadow requests by outcome", ["model", "outcome"])
ROLLBACKS = Counter("flywheel_gateway_canary_rollbacks_total", "Automatic canary rollbacks", ["model", "reason"])
RETRIES = Counter("flywheel_gateway_retries_total", "Retries of safe backend failures", ["backend"])
CIRCUIT_OPEN = Gauge("flywheel_gateway_circuit_open", "1 while a backend's circuit is open", ["backend"])
# Per model-server address (labels: only addresses the lookup returned, IP:port, at most 64 per name).
UPSTREAM_REQUESTS = Counter(
    "flywheel_gateway_upstream_requests_total", "Attempts sent to each model-server address", ["addr"]
)
UPSTREAM_OUTSTANDING = Gauge(
    "flywheel_gateway_upstream_outstanding", "Attempts in flight to each model-server address", ["addr"]
)
UPSTREAM_EJECTIONS = Counter(
    "flywheel_gateway_upstream_ejections_total", "Times a model-server address was taken out of rotation", ["addr"]
)
UPSTREAM_RESENDS = Counter(
    "flywheel_gateway_upstream_resends_total",
    "Requests sent again on a new connection: the kept-alive one closed before any byte of an answer",
    ["addr"],
)
