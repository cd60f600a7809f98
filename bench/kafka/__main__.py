"""Kafka client benchmark: kafka-python vs confluent-kafka, produce and consume, same broker, one run.

    python -m bench.kafka [--messages 50000] [--size 200] [--broker tansu|apache]

Prints a table and writes bench/results/kafka.json. Both clients use the settings Flywheel
needs (acks=all, idempotent producer where the client supports it; consumer with manual commit).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.table import Table

from services.devstack.brokers import start_broker

RESULTS = Path(__file__).resolve().parents[1] / "results" / "kafka.json"


def _create_topic(bootstrap: str, name: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)]).values():
        future.result(30)


def produce_confluent(bootstrap: str, topic: str, n: int, payload: bytes) -> float:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
    start = time.perf_counter()
    for i in range(n):
        while True:
            try:
                p.produce(topic, key=str(i % 64).encode(), value=payload)
                break
            except BufferError:
                p.poll(0.05)
        if i % 1000 == 0:
            p.poll(0)
    if p.flush(60):
        raise RuntimeError("confluent-kafka: not every message was acknowledged")
    return time.perf_counter() - start


def produce_kafka_python(bootstrap: str, topic: str, n: int, payload: bytes) -> float:
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, enable_idempotence=True)
    start = time.perf_counter()
    for i in range(n):
        p.send(topic, key=str(i % 64).encode(), value=payload)
    p.flush(60)
    elapsed = time.perf_counter() - start
    p.close()
    return elapsed


def consume_confluent(bootstrap: str, topic: str, n: int) -> float:
    from confluent_kafka import Consumer

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
        }
    )
    c.subscribe([topic])
    got, start = 0, None
    deadline = time.monotonic() + 120
    while got < n and time.monotonic() < deadline:
        msgs = c.consume(1000, 1.0)
        if msgs and start is None:
            start = time.perf_counter()  # measure from the first record: group join excluded
        got += sum(1 for m in msgs if m.error() is None)
        if msgs:
            c.commit(asynchronous=False)
    elapsed = time.perf_counter() - (start or time.perf_counter())
    c.close()
    if got < n:
        raise RuntimeError(f"confluent-kafka consumed {got}/{n}")
    return elapsed


def consume_kafka_python(bootstrap: str, topic: str, n: int) -> float:
    from kafka import KafkaConsumer

    c = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    got, start = 0, None
    deadline = time.monotonic() + 120
    while got < n and time.monotonic() < deadline:
        batch = c.poll(timeout_ms=1000, max_records=1000)
        if batch and start is None:
            start = time.perf_counter()
        got += sum(len(v) for v in batch.values())
        if batch:
            c.commit()
    elapsed = time.perf_counter() - (start or time.perf_counter())
    c.close()
    if got < n:
        raise RuntimeError(f"kafka-python consumed {got}/{n}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=200, help="payload bytes (a LabelEvent is ~350)")
    parser.add_argument("--broker", choices=["tansu", "apache"], default="tansu")
    args = parser.parse_args()
    payload = b"x" * args.size
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        broker = start_broker(args.broker, Path(tmp))
        try:
            for client, produce, consume in [
                ("confluent-kafka", produce_confluent, consume_confluent),
                ("kafka-python", produce_kafka_python, consume_kafka_python),
            ]:
                topic = f"bench-{client}-{uuid.uuid4().hex[:6]}"
                _create_topic(broker.bootstrap, topic)
                p_s = produce(broker.bootstrap, topic, args.messages, payload)
                c_s = consume(broker.bootstrap, topic, args.messages)
                rows.append(
                    {
                        "client": client,
                        "broker": args.broker,
                        "messages": args.messages,
                        "size": args.size,
                        "produce_msgs_per_s": round(args.messages / p_s),
                        "consume_msgs_per_s": round(args.messages / c_s),
                    }
                )
        finally:
            broker.stop()
    table = Table(title=f"Kafka clients on {args.broker} ({args.messages} x {args.size} B)")
    for col in ("client", "produce msg/s", "consume msg/s"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["client"], f"{r['produce_msgs_per_s']:,}", f"{r['consume_msgs_per_s']:,}")
    Console().print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    machine = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": __import__("os").cpu_count(),
    }
    RESULTS.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
