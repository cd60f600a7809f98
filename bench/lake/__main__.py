"""`make bench-lake`: Kafka → Parquet throughput of the lake, with a zero-loss check.

Two measurements against a real Tansu broker and a real lake process on 127.0.0.1:
* backlog: N label events already in the topic; time from the lake's start until all are rows;
* live: the lake running, N more events produced in bulk; time from the first send until all
  are rows (end to end: produce + consume + Parquet + manifest + commit).
Then the lake is SIGTERMed and the rows are counted exactly (files and distinct event ids).
Prints a table and writes bench/results/lake.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

from services.devstack.brokers import start_tansu
from services.devstack.ports import free_port
from services.events import ConsumeLoop, ConsumerConfig, EventProducer, ensure_topics, new_meta
from services.events.consumer import Record
from services.events.topics import LABELS
from services.genproto.flywheel.v1 import events_pb2 as ev
from services.lake.aggregates import Aggregates
from services.lake.manifest import Manifest
from services.lake.sink import LakeSink
from services.lake.store import LakeStore

RESULTS = Path(__file__).resolve().parents[1] / "results" / "lake.json"


def _events(run: str, start: int, n: int) -> list[ev.LabelEvent]:
    feats = [i / 64 for i in range(64)]
    out = []
    for i in range(start, start + n):
        meta = new_meta("bench")
        out.append(ev.LabelEvent(meta=meta, example_id=f"{run}-{i}", label=str(i % 10), features=feats, source="api"))
    return out


def _produce(producer: EventProducer, events: list[ev.LabelEvent]) -> float:
    t0 = time.perf_counter()
    for e in events:
        producer.send(LABELS.name, e)
    producer.flush(120)
    return time.perf_counter() - t0


def _rows(store: LakeStore) -> int:
    return sum(e.rows for e in Manifest.load(store).files(LABELS.name))


def _wait_rows(store: LakeStore, n: int, proc: subprocess.Popen, timeout_s: float = 600) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("lake exited")
        if _rows(store) >= n:
            return time.perf_counter()
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {n} rows")


def _bare_consume(bootstrap: str, n: int) -> float:
    """The shared ConsumeLoop with a handler that does nothing: the consume stage alone."""
    stop = threading.Event()
    seen = [0]

    def handle(records: list[Record]) -> None:
        seen[0] += len(records)
        if seen[0] >= n:
            stop.set()

    config = ConsumerConfig(
        bootstrap=bootstrap, group=f"bare-{uuid.uuid4().hex[:6]}", topics=[LABELS.name], max_batch=5000
    )
    loop = ConsumeLoop(config, handle, EventProducer(bootstrap), stop)
    t0 = time.perf_counter()
    loop.run()
    return time.perf_counter() - t0


def _sink_only(events: list[ev.LabelEvent], root: Path) -> float:
    """The sink's handler alone on decoded records (rows → Parquet → manifest), no broker."""
    sink = LakeSink(Manifest.load(LakeStore(f"file://{root}")), threading.RLock())
    records = [Record(LABELS.name, 0, i, None, 0, e) for i, e in enumerate(events)]
    t0 = time.perf_counter()
    sink.handle(records)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=40_000, help="events per measurement")
    parser.add_argument("--flush-rows", type=int, default=5000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-lake-"))
    broker = start_tansu(work / "tansu")
    proc = None
    try:
        ensure_topics(broker.bootstrap)
        run = uuid.uuid4().hex[:6]
        producer = EventProducer(broker.bootstrap)
        n = args.events
        produce_s = _produce(producer, _events(run, 0, n))
        root = work / "lake"
        store = LakeStore(f"file://{root}")
        http_port = free_port()
        env = {
            **os.environ,
            "FLYWHEEL_HOME": str(work / "home"),
            "FLYWHEEL_KAFKA_BOOTSTRAP": broker.bootstrap,
            "FLYWHEEL_LAKE_ROOT": f"file://{root}",
            "FLYWHEEL_LAKE_HTTP_PORT": str(http_port),
            "FLYWHEEL_LAKE_GRPC_PORT": str(free_port()),
            "FLYWHEEL_LAKE_FLUSH_ROWS": str(args.flush_rows),
            "FLYWHEEL_LOG_LEVEL": "WARNING",
        }
        t_start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "services.lake"], env=env, stderr=subprocess.DEVNULL)
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{http_port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise RuntimeError("lake exited during start-up")
            time.sleep(0.05)
        t_ready = time.perf_counter()
        t_done = _wait_rows(store, n, proc)
        backlog_s = t_done - t_ready

        live_events = _events(run, n, n)
        t0 = time.perf_counter()
        threading.Thread(target=_produce, args=(producer, live_events)).start()
        t_live = _wait_rows(store, 2 * n, proc)
        live_s = t_live - t0

        proc.send_signal(signal.SIGTERM)
        status = proc.wait(60)
        proc = None
        agg = Aggregates(store, lambda: Manifest.load(store), threading.RLock())
        with agg.connect() as (con, _):
            raw = con.execute("SELECT count(*) FROM labels_all WHERE example_id LIKE $p", {"p": f"{run}-%"}).fetchall()
            distinct = con.execute("SELECT count(*) FROM labels WHERE example_id LIKE $p", {"p": f"{run}-%"}).fetchall()
        consume_s = _bare_consume(broker.bootstrap, 2 * n)
        sink_s = _sink_only(live_events[:5000], work / "sink-only")
        result = {
            "events": 2 * n,
            "flush_rows": args.flush_rows,
            "produce_events_per_s": round(n / produce_s),
            "lake_start_to_ready_s": round(t_ready - t_start, 2),
            "backlog_events_per_s": round(n / backlog_s),
            "live_end_to_end_events_per_s": round(n / live_s),
            "bare_consume_loop_events_per_s": round(2 * n / consume_s),
            "sink_only_events_per_s": round(5000 / sink_s),
            "rows_in_files": raw[0][0],
            "distinct_events": distinct[0][0],
            "zero_loss_zero_duplicates": raw[0][0] == distinct[0][0] == 2 * n,
            "clean_exit": status == 0,
            "files": len(Manifest.load(store).files()),
            "machine": f"{platform.machine()} {os.cpu_count()} cpus, broker tansu (memory)",
        }
    finally:
        if proc is not None:
            proc.kill()
        broker.stop()
    width = max(len(k) for k in result)
    print(f"{'lake bench (Kafka -> Parquet)':<{width}}  value")
    for k, v in result.items():
        print(f"{k:<{width}}  {v}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["zero_loss_zero_duplicates"] and result["clean_exit"] else 1


if __name__ == "__main__":
    sys.exit(main())
