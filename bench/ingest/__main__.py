"""Ingest benchmark: label events per second end to end, with a zero-loss check.

    python -m bench.ingest [--events 20000] [--batch 500] [--clients 4] [--broker tansu|apache]

Two runs against one real ingest process (SQLite, local object store) and a real broker:
* HTTP: batches of native labels (base64 PNG digits) POSTed to /v1/labels → `flywheel.labels`
  (and → rows in Parquet when a lake sink is available: see `lake_rows` in the JSON);
* Kafka: RawLabel events produced to `flywheel.labels.raw` → ingest's consume loop → `flywheel.labels`.
Each run ends when every expected event id has been read back from `flywheel.labels`; loss and
duplicates are counted. Ingest's per-stage histograms (parse, validate, objects, sql, publish)
say where the time goes. Prints a table and writes bench/results/ingest.json.
"""

from __future__ import annotations

import argparse
import base64
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

import duckdb
import httpx
from confluent_kafka import Consumer
from rich.console import Console
from rich.table import Table
from sklearn.datasets import load_digits

from services.devstack.brokers import start_broker
from services.devstack.credentials import StackCredentials
from services.devstack.ports import free_port
from services.devstack.stack import spec
from services.events import EventProducer, ensure_topics
from services.events.codec import new_meta
from services.genproto.flywheel.v1 import events_pb2 as ev
from services.lake.manifest import Manifest
from services.lake.store import LakeStore
from services.preprocessing import features_to_png
from services.preprocessing.digits import sklearn_digits_features

RESULTS = Path(__file__).resolve().parents[1] / "results" / "ingest.json"
STAGES = ("parse", "validate", "objects", "sql", "publish")


def digit_pngs(n: int) -> tuple[list[bytes], list[str]]:
    """n distinct digit PNGs (scikit-learn's digits, the corner pixel varied), so every label stores a new object."""
    digits = load_digits()
    feats = sklearn_digits_features(digits.images)
    pngs, labels = [], []
    for i in range(n):
        f = feats[i % len(feats)].copy()
        f[0] = ((i // len(feats)) % 17) / 16.0
        pngs.append(features_to_png(f))
        labels.append(str(digits.target[i % len(feats)]))
    return pngs, labels


class LabelsReader:
    """Reads flywheel.labels from the end (as of start) in a thread, collecting event ids by example prefix."""

    def __init__(self, bootstrap: str) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-reader-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 1000,
            }
        )
        self.messages: dict[str, list[str]] = {}  # prefix -> event ids (with duplicates)
        self.last_seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._consumer.subscribe(["flywheel.labels"])
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for msg in self._consumer.consume(2000, 0.2):
                if msg.error() is not None:
                    continue
                key = (msg.key() or b"").decode()
                prefix = key.split(":", 1)[0]
                event = ev.LabelEvent()
                event.ParseFromString(msg.value())
                with self._lock:
                    self.messages.setdefault(prefix, []).append(event.meta.event_id)
                    self.last_seen[prefix] = time.perf_counter()
        self._consumer.close()

    def count(self, prefix: str) -> int:
        with self._lock:
            return len(set(self.messages.get(prefix, [])))

    def wait(self, prefix: str, n: int, timeout_s: float) -> float:
        deadline = time.perf_counter() + timeout_s
        while self.count(prefix) < n and time.perf_counter() < deadline:
            time.sleep(0.02)
        return self.last_seen.get(prefix, time.perf_counter())

    def ids(self, prefix: str) -> list[str]:
        with self._lock:
            return list(self.messages.get(prefix, []))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


def lake_rows(root: Path, prefix: str) -> tuple[int, int]:
    """(rows, distinct event ids) in the lake's Parquet files (as listed by its manifest) for this run."""
    store = LakeStore(f"file://{root}")
    paths = [store.full(e.path) for e in Manifest.load(store).files("flywheel.labels")]
    if not paths:
        return 0, 0
    con = duckdb.connect()
    try:
        rows, distinct = con.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM read_parquet($paths) WHERE example_id LIKE $p",
            {"paths": paths, "p": f"{prefix}:%"},
        ).fetchone()
    finally:
        con.close()
    return int(rows), int(distinct)


def wait_lake(root: Path | None, prefix: str, n: int, timeout_s: float = 300) -> tuple[float | None, int, int]:
    """Poll the lake until n distinct events of this run are in Parquet; (time, rows, distinct)."""
    if root is None:
        return None, 0, 0
    deadline = time.perf_counter() + timeout_s
    rows = distinct = 0
    while time.perf_counter() < deadline:
        try:
            rows, distinct = lake_rows(root, prefix)
        except (duckdb.Error, OSError, ValueError):
            rows, distinct = 0, 0  # a file being compacted away; look again
        if distinct >= n:
            return time.perf_counter(), rows, distinct
        time.sleep(0.25)
    return None, rows, distinct


def stage_seconds(http: str) -> dict[str, float]:
    """Ingest's per-stage totals from /metrics: wall seconds (`<stage>`) and CPU seconds (`<stage>_cpu`)."""
    text = httpx.get(f"{http}/metrics", timeout=10).text
    out = dict.fromkeys([*STAGES, *(f"{s}_cpu" for s in STAGES)], 0.0)
    for line in text.splitlines():
        for metric, suffix in (
            ("flywheel_ingest_stage_seconds_sum{", ""),
            ("flywheel_ingest_stage_cpu_seconds_total{", "_cpu"),
        ):
            if line.startswith(metric):
                name = line.split('stage="', 1)[1].split('"', 1)[0]
                out[name + suffix] = float(line.rsplit(" ", 1)[1])
    return out


def process_cpu(procs: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) each process used so far, from /proc (Linux); `bench` is this process."""
    out = {"bench": sum(os.times()[:2])}
    tick = os.sysconf("SC_CLK_TCK")
    for name, pid in procs.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[name] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        except (OSError, IndexError, ValueError):
            out[name] = 0.0
    return out


def diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: round(after[k] - before.get(k, 0.0), 3) for k in after}


def start_service(name: str, env: dict[str, str], work: Path) -> subprocess.Popen:
    """Start `python -m services.<name>` and wait for its /readyz."""
    port = env[f"FLYWHEEL_{name.upper()}_HTTP_PORT"]
    log = (work / f"{name}.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", f"services.{name}"], env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited: {(work / f'{name}.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{name} did not become ready: {(work / f'{name}.log').read_text()[-2000:]}")


def run_http(
    http: str,
    reader: LabelsReader,
    lake_root: Path | None,
    n: int,
    batch: int,
    clients: int,
    pngs: list[bytes],
    targets: list[str],
    procs: dict[str, int],
    credential: dict[str, str],
) -> dict:
    prefix = f"h{uuid.uuid4().hex[:6]}"
    encoded = [base64.b64encode(p).decode() for p in pngs]
    bodies = []
    for start in range(0, n, batch):
        labels = [
            {
                "example_id": f"{prefix}:{i}",
                "label": targets[i % len(targets)],
                "annotator": "bench",
                "image": encoded[i % len(encoded)],
            }
            for i in range(start, min(n, start + batch))
        ]
        bodies.append(json.dumps({"labels": labels}).encode())
    returned: list[str] = []
    lock = threading.Lock()
    errors: list[str] = []

    def client(chunk: list[bytes]) -> None:
        with httpx.Client(timeout=120) as c:
            for body in chunk:
                r = c.post(
                    f"{http}/v1/labels", content=body, headers={"content-type": "application/json", **credential}
                )
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text[:200]}")
                    continue
                with lock:
                    returned.extend(r.json()["event_ids"])

    before, cpu_before = stage_seconds(http), process_cpu(procs)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(bodies[i::clients],)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    t_acked = time.perf_counter()
    t_out = reader.wait(prefix, n, timeout_s=300)
    stages = diff(stage_seconds(http), before)
    t_lake, lake_total, lake_distinct = wait_lake(lake_root, prefix, n)
    cpu = diff(process_cpu(procs), cpu_before)
    seen = reader.ids(prefix)
    return {
        **lake_fields(n, t0, t_out, t_lake, lake_total, lake_distinct),
        "events": n,
        "process_cpu_seconds": cpu,
        "batch": batch,
        "clients": clients,
        "http_errors": len(errors),
        "seconds_to_http_acks": round(t_acked - t0, 3),
        "seconds_to_flywheel_labels": round(t_out - t0, 3),
        "events_per_s": round(n / (t_out - t0), 1),
        "out_unique": len(set(seen)),
        "out_messages": len(seen),
        "lost": len(set(returned) - set(seen)),
        "duplicates": len(seen) - len(set(seen)),
        "stage_seconds": stages,
    }


def run_kafka(
    http: str,
    bootstrap: str,
    reader: LabelsReader,
    lake_root: Path | None,
    n: int,
    pngs: list[bytes],
    targets: list[str],
    procs: dict[str, int],
) -> dict:
    prefix = f"k{uuid.uuid4().hex[:6]}"
    raws = [
        ev.RawLabel(
            meta=new_meta("bench", event_id=f"{prefix}-{i}"),
            example_id=f"{prefix}:{i}",
            label=targets[i % len(targets)],
            annotator="bench",
            data=pngs[i % len(pngs)],
            content_type="image/png",
        )
        for i in range(n)
    ]
    producer = EventProducer(bootstrap, client_id="bench-raw")
    before, cpu_before = stage_seconds(http), process_cpu(procs)
    t0 = time.perf_counter()
    for raw in raws:
        producer.send("flywheel.labels.raw", raw)
    producer.flush(120)
    t_produced = time.perf_counter()
    t_out = reader.wait(prefix, n, timeout_s=300)
    stages = diff(stage_seconds(http), before)
    t_lake, lake_total, lake_distinct = wait_lake(lake_root, prefix, n)
    cpu = diff(process_cpu(procs), cpu_before)
    seen = reader.ids(prefix)
    expected = {f"{prefix}:{i}" for i in range(n)}
    return {
        **lake_fields(n, t0, t_out, t_lake, lake_total, lake_distinct),
        "events": n,
        "process_cpu_seconds": cpu,
        "seconds_to_produce_raw": round(t_produced - t0, 3),
        "seconds_to_flywheel_labels": round(t_out - t0, 3),
        "events_per_s": round(n / (t_out - t0), 1),
        "out_unique": len(set(seen)),
        "out_messages": len(seen),
        "lost": max(0, len(expected) - len(set(seen))),
        "duplicates": len(seen) - len(set(seen)),
        "stage_seconds": stages,
    }


def lake_fields(n: int, t0: float, t_out: float, t_lake: float | None, rows: int, distinct: int) -> dict:
    if t_lake is None and rows == 0:
        return {"lake": None}
    return {
        "lake": {
            "seconds_to_parquet": None if t_lake is None else round(t_lake - t0, 3),
            "events_per_s_to_parquet": None if t_lake is None else round(n / (t_lake - t0), 1),
            "lake_lag_after_labels_s": None if t_lake is None else round(t_lake - t_out, 3),
            "parquet_rows": rows,
            "parquet_distinct_events": distinct,
            "lost": n - distinct,
            "duplicates": rows - distinct,
        }
    }


def sql_rows(db_url: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    with engine.connect() as conn:
        count = int(conn.execute(text("SELECT COUNT(*) FROM ingest_labels")).scalar_one())
    engine.dispose()
    return count


def bottleneck(run: dict) -> str:
    """Which stage limits the run: ingest (and within it, the stage with the most time) or the lake."""
    cpu = {s: run["stage_seconds"][f"{s}_cpu"] for s in STAGES}
    name = max(cpu, key=lambda k: cpu[k])
    total = sum(cpu.values()) or 1.0
    per_event = 1e6 * cpu[name] / run["events"]
    inside = (
        f"its {name} stage ({100 * cpu[name] / total:.0f}% of ingest's stage CPU time, {per_event:.0f} µs CPU/event)"
    )
    procs = run.get("process_cpu_seconds") or {}
    if procs:
        busy = sum(procs.values()) / run["seconds_to_flywheel_labels"]
        share = ", ".join(f"{p} {1e6 * c / run['events']:.0f}" for p, c in sorted(procs.items(), key=lambda x: -x[1]))
        inside += f"; CPU µs/event by process: {share} ({busy:.1f} of {os.cpu_count()} cores busy)"
    lake = run.get("lake") or {}
    lag, to_labels = lake.get("lake_lag_after_labels_s"), run["seconds_to_flywheel_labels"]
    if lag is not None and lag > 0.5 * to_labels:
        return (
            f"the lake sink (its Parquet rows trail flywheel.labels by {lag:.1f}s of a {to_labels:.1f}s run); "
            f"in ingest: {inside}"
        )
    return f"ingest, not the lake (Parquet trails flywheel.labels by {lag}s); within ingest: {inside}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20000, help="events per run")
    parser.add_argument("--batch", type=int, default=500, help="labels per HTTP batch")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    parser.add_argument("--broker", choices=["tansu", "apache"], default="tansu")
    parser.add_argument("--no-lake", action="store_true", help="measure only up to flywheel.labels")
    args = parser.parse_args()
    console = Console(width=160)
    pngs, targets = digit_pngs(2 * args.events)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        work = Path(tmp)
        broker = start_broker(args.broker, work)
        proc = lake = None
        lake_root = None if args.no_lake else work / "lake"
        try:
            ensure_topics(broker.bootstrap)
            http_port, grpc_port = free_port(), free_port()
            db_url = f"sqlite:///{work / 'ingest.db'}"
            env = {
                **os.environ,
                "FLYWHEEL_HOME": str(work / "home"),
                "FLYWHEEL_KAFKA_BOOTSTRAP": broker.bootstrap,
                "FLYWHEEL_DATABASE_URL": db_url,
                "FLYWHEEL_INGEST_HTTP_PORT": str(http_port),
                "FLYWHEEL_INGEST_GRPC_PORT": str(grpc_port),
                "FLYWHEEL_LOG_LEVEL": "WARNING",
            }
            creds = StackCredentials.generate()  # ingest admits label producers: the clients call as one
            proc = start_service("ingest", {**env, **creds.service_env(spec("ingest"))}, work)
            http = f"http://127.0.0.1:{http_port}"
            if lake_root is not None:
                lake = start_service(
                    "lake",
                    {
                        **env,
                        "FLYWHEEL_LAKE_ROOT": f"file://{lake_root}",
                        "FLYWHEEL_LAKE_HTTP_PORT": str(free_port()),
                        "FLYWHEEL_LAKE_GRPC_PORT": str(free_port()),
                        "FLYWHEEL_LAKE_GROUP": f"bench-lake-{uuid.uuid4().hex[:6]}",
                        "FLYWHEEL_LAKE_TOPICS": "flywheel.labels",
                    },
                    work,
                )
            procs = {"ingest": proc.pid, "broker": broker.process.pid}
            if lake is not None:
                procs["lake"] = lake.pid
            reader = LabelsReader(broker.bootstrap)
            console.print(f"ingest ready; {args.events} events per run on {args.broker}")
            http_result = run_http(
                http,
                reader,
                lake_root,
                args.events,
                args.batch,
                args.clients,
                pngs[: args.events],
                targets,
                procs,
                creds.bearer("labeler"),
            )
            kafka_result = run_kafka(
                http,
                broker.bootstrap,
                reader,
                lake_root,
                args.events,
                pngs[args.events :],
                targets[args.events :],
                procs,
            )
            reader.close()
            rows = sql_rows(db_url)
        finally:
            for p in (proc, lake):
                if p is not None and p.poll() is None:
                    p.send_signal(signal.SIGTERM)
                    p.wait(60)
            broker.stop()
    runs = {"http": http_result, "kafka": kafka_result}
    lake_ok = all(r["lake"] is None or (r["lake"]["lost"] == 0 and r["lake"]["duplicates"] == 0) for r in runs.values())
    zero_loss = (
        all(r["lost"] == 0 and r["out_unique"] == args.events for r in runs.values())
        and rows == 2 * args.events
        and lake_ok
    )
    result = {
        "benchmark": "ingest",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            # The machine is shared: the 1-minute load average before and after says how busy it was.
            "load_avg_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
        "broker": args.broker,
        "database": "sqlite",
        "end_to_end": (
            "HTTP batch in / Kafka raw in -> flywheel.labels out -> rows in the lake's Parquet "
            "(the lake service; files listed by its manifest)"
            if lake_root is not None
            else "HTTP batch in / Kafka raw in -> flywheel.labels out (acked by the broker); the lake was not run"
        ),
        "http": http_result,
        "kafka": kafka_result,
        "sql_rows": rows,
        "zero_loss": zero_loss,
        "bottleneck": {name: bottleneck(r) for name, r in runs.items()},
    }
    table = Table(title="ingest: label events end to end")
    for col in ("run", "events", "→labels/s", "→parquet/s", "lake lag s", "lost", "dups", *(f"{s} µs" for s in STAGES)):
        table.add_column(col, justify="right")
    for name, r in (("HTTP batch", http_result), ("Kafka raw", kafka_result)):
        lake = r["lake"] or {}
        table.add_row(
            name,
            str(r["events"]),
            f"{r['events_per_s']:.0f}",
            str(lake.get("events_per_s_to_parquet", "-")),
            str(lake.get("lake_lag_after_labels_s", "-")),
            str(r["lost"] + lake.get("lost", 0)),
            str(r["duplicates"] + lake.get("duplicates", 0)),
            *(f"{1e6 * r['stage_seconds'][f'{s}_cpu'] / r['events']:.0f}" for s in STAGES),
        )
    console.print(table)
    console.print("stage columns: CPU µs per event in ingest's own threads (wall seconds are in the JSON)")
    for name, r in (("HTTP batch", http_result), ("Kafka raw", kafka_result)):
        per = ", ".join(f"{p} {1e6 * s / r['events']:.0f}" for p, s in r["process_cpu_seconds"].items())
        console.print(f"process CPU µs per event ({name}): {per}")
    console.print(f"SQL rows: {rows}; zero loss: {zero_loss}")
    for name, text in result["bottleneck"].items():
        console.print(f"bottleneck ({name}): {text}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {RESULTS}")
    return 0 if zero_loss else 1


if __name__ == "__main__":
    sys.exit(main())
