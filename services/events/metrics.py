"""Prometheus counters for the consume loop and the producer, labelled by topic and group."""

from prometheus_client import Counter, Gauge

CONSUMED = Counter("flywheel_events_consumed_total", "Records polled from Kafka", ["topic", "group"])
HANDLED = Counter("flywheel_events_handled_total", "Events handled and committed", ["topic", "group"])
FAILED = Counter("flywheel_events_failed_total", "Handler failures (the batch is replayed)", ["topic", "group"])
DEAD_LETTERED = Counter(
    "flywheel_events_dead_lettered_total", "Invalid events sent to flywheel.deadletter", ["topic", "group"]
)
LAG = Gauge("flywheel_consumer_lag", "Messages behind the partition end", ["topic", "partition", "group"])
PRODUCED = Counter("flywheel_events_produced_total", "Events acknowledged by the broker", ["topic"])
PRODUCE_ERRORS = Counter("flywheel_events_produce_errors_total", "Events the broker refused", ["topic"])
