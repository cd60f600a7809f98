"""`make fuzz`: a bounded property-based fuzz of every HTTP route and the gRPC APIs, against the real stack.

Starts the stack as `flywheel up` does (free ports, its credentials, the digits test models), then:

- every operation of every service's OpenAPI document (gateway, model server, ingest, lake, trainer,
  monitor), with schemathesis: cases that fit the schema and cases that break it, sent with the
  right credential (the fuzz is after the code behind the door, not the door: tests/security checks
  the doors);
- what the documents do not describe, with Hypothesis (strategies.py): v2 inference bodies to the
  gateway and the model server (JSON, binary framing, compression, garbage), `:predict` instances
  with images of every kind, label batches, gRPC ModelInfer messages to both, gRPC label streams,
  and raw label events on Kafka.

A failure is a 5xx, an INTERNAL/UNKNOWN gRPC status, a dropped connection, or a service that died or
stopped being ready. Prints a table (target, cases, answers, failures) and writes a JSON summary;
exits 1 on any failure or when fewer cases than `--min-cases` ran.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from rich.console import Console
from rich.table import Table
from schemathesis import GenerationMode

from services.events import EventProducer
from services.events.topics import LABELS, LABELS_RAW
from services.genproto.flywheel.v1 import events_pb2 as ev
from tests.ingest.conftest import digit_png
from tests.security.conftest import MODEL, SERVICES, Stack, start_stack, stop_stack
from tests.security.fuzz import strategies
from tests.support.kafka_reader import read_topic

ROOT = Path(__file__).resolve().parents[3]
BAD_GRPC = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS, grpc.StatusCode.UNAVAILABLE}


@dataclass
class Outcome:
    target: str
    cases: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def record(self, answer: str, bad: bool, case: object) -> None:
        self.cases += 1
        self.answers[answer] += 1
        if bad and len(self.failures) < 20:
            self.failures.append(f"{answer}: {str(case)[:300]}")
        elif bad:
            self.failures.append(answer)


def _run(
    outcome: Outcome, strategy: st.SearchStrategy, examples: int, seed_value: int, send: Callable[[Any], None]
) -> None:
    @seed(seed_value)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def case(value: Any) -> None:
        send(value)

    started = time.monotonic()
    try:
        case()
    except Unsatisfiable:
        pass  # an operation with nothing left to vary (no parameters, or one enum value): its cases ran
    except Exception as exc:  # noqa: BLE001 - reported as a failure of the run, with what it was
        outcome.failures.append(f"the fuzzer itself failed: {type(exc).__name__}: {str(exc)[:300]}")
    outcome.seconds += time.monotonic() - started


def http_status(outcome: Outcome, response: Callable[[], httpx.Response | requests.Response], case: object) -> None:
    try:
        status = response().status_code
    except (httpx.HTTPError, requests.RequestException) as exc:
        outcome.record(f"dropped ({type(exc).__name__})", True, case)
        return
    outcome.record(str(status), status >= 500, case)


def grpc_status(outcome: Outcome, call: Callable[[], Any], case: object) -> None:
    try:
        call()
        code = grpc.StatusCode.OK
    except grpc.RpcError as exc:
        code = exc.code()
    outcome.record(code.name, code in BAD_GRPC, case)


# -- targets ------------------------------------------------------------------------------------------
def openapi_targets(stack: Stack, examples: int, seed_value: int, console: Console) -> list[Outcome]:
    """Every operation of every service's OpenAPI document, positive and negative cases."""
    outcomes = []
    session = requests.Session()
    for service in SERVICES:
        base = stack.url(service)
        credential = stack.key if service == "gateway" else stack.operator
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json", headers=credential)
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                outcome = Outcome(f"{service} {operation.method.upper()} {operation.path} ({mode.value})")
                if "infer" in operation.path:  # the v2 route's body is the custom strategies' (infer_bodies)
                    continue
                try:
                    strategy = operation.as_strategy(generation_mode=mode)
                except Exception as exc:  # noqa: BLE001 - no case of this mode for this operation
                    console.print(f"[dim]{outcome.target}: no cases ({type(exc).__name__})[/dim]")
                    continue

                def send(
                    case: Any, outcome: Outcome = outcome, base: str = base, credential: dict = credential
                ) -> None:
                    http_status(
                        outcome, lambda: case.call(base_url=base, session=session, headers=credential, timeout=30), case
                    )

                _run(outcome, strategy, examples, seed_value, send)
                if outcome.cases:
                    outcomes.append(outcome)
    session.close()
    return outcomes


def custom_targets(stack: Stack, scale: int, seed_value: int) -> list[Callable[[], Outcome]]:
    """The custom targets as jobs (each runs its own Hypothesis test with its own clients)."""
    jobs: list[Callable[[], Outcome]] = []
    gw, ms, ingest = stack.url("gateway"), stack.url("modelserver"), stack.url("ingest")
    labeler = stack.credentials.bearer("labeler")

    def http_job(name: str, examples: int, strategy: st.SearchStrategy, send: Callable[..., None]) -> None:
        def job() -> Outcome:
            outcome = Outcome(name)
            with httpx.Client(timeout=30) as http:
                _run(outcome, strategy, examples, seed_value, lambda value: send(http, value, outcome))
            return outcome

        jobs.append(job)

    def infer(base: str, credential: dict[str, str]) -> Callable[..., None]:
        def send(http: httpx.Client, case: tuple[str, str, tuple[bytes, dict[str, str]]], outcome: Outcome) -> None:
            model, version, (body, headers) = case
            model, version = quote(model, safe=""), quote(version, safe="")  # the name is hostile, not the URL
            path = f"/v2/models/{model}/versions/{version}/infer" if version else f"/v2/models/{model}/infer"
            http_status(outcome, lambda: http.post(base + path, content=body, headers={**headers, **credential}), case)

        return send

    bodies = st.tuples(strategies.model_names, strategies.versions, strategies.infer_bodies())
    http_job("gateway v2 infer (REST bodies)", 3 * scale, bodies, infer(gw, stack.key))
    http_job("modelserver v2 infer (REST bodies)", 2 * scale, bodies, infer(ms, stack.operator))
    http_job(
        "gateway :predict (instances, images)",
        2 * scale,
        strategies.predict_bodies(),
        lambda http, body, outcome: http_status(
            outcome, lambda: http.post(f"{gw}/v1/models/{MODEL}:predict", json=body, headers=stack.key), body
        ),
    )
    http_job(
        "ingest /v1/labels (label batches)",
        scale,
        strategies.label_batches(),
        lambda http, body, outcome: http_status(
            outcome, lambda: http.post(f"{ingest}/v1/labels", json=body, headers=labeler), body
        ),
    )

    def grpc_job(name: str, addr: str, metadata: list[tuple[str, str]]) -> None:
        def job() -> Outcome:
            outcome = Outcome(name)
            with grpc.insecure_channel(addr) as channel:
                call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
                _run(
                    outcome,
                    strategies.grpc_infer_messages(),
                    2 * scale,
                    seed_value,
                    lambda raw: grpc_status(outcome, lambda: call(raw, metadata=metadata, timeout=30), raw[:64]),
                )
            return outcome

        jobs.append(job)

    grpc_job("gateway gRPC ModelInfer", stack.grpc_addr("gateway"), list(stack.key.items()))
    grpc_job("modelserver gRPC ModelInfer", stack.grpc_addr("modelserver"), list(stack.operator.items()))

    def streams() -> Outcome:
        outcome = Outcome("ingest gRPC SubmitLabels (streams)")
        with stack.channel("ingest", "labeler") as channel:
            submit = channel.stream_unary("/flywheel.v1.Ingest/SubmitLabels")
            _run(
                outcome,
                st.lists(strategies.raw_labels(), max_size=4),
                scale // 2,
                seed_value,
                lambda stream: grpc_status(outcome, lambda: submit(iter(stream), timeout=30), [s[:32] for s in stream]),
            )
        return outcome

    jobs.append(streams)
    jobs.append(lambda: kafka_target(stack, scale, seed_value))
    return jobs


def kafka_target(stack: Stack, scale: int, seed_value: int) -> Outcome:
    """Hostile events on flywheel.labels.raw, then one valid label that must come out of ingest."""
    outcome = Outcome("Kafka flywheel.labels.raw (events)")
    producer = EventProducer(stack.kafka, client_id="fuzz")
    sent: list[bytes] = []
    _run(
        outcome,
        strategies.raw_labels(),
        scale,
        seed_value,
        lambda raw: (sent.append(raw), producer.send_raw(LABELS_RAW.name, raw)),
    )
    sentinel = f"fuzz-sentinel-{uuid.uuid4().hex[:8]}"
    label = ev.RawLabel(example_id=sentinel, label="1", annotator="fuzz", data=digit_png(1))
    label.meta.event_id = sentinel
    producer.send(LABELS_RAW.name, label)
    producer.flush()
    out = read_topic(
        stack.kafka,
        LABELS.name,
        want=10**9,
        timeout_s=120,
        stop_when=lambda ms: any(m.key() == sentinel.encode() for m in ms),
    )
    ok = any(m.key() == sentinel.encode() for m in out)
    outcome.cases = len(sent)
    outcome.answers = Counter({"sent": len(sent)})
    if not ok:
        outcome.failures.append("a valid label sent after the fuzz never left ingest (the consumer stalled or died)")
    return outcome


# -- run ----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.security.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=40, help="schemathesis cases per operation and mode")
    parser.add_argument("--scale", type=int, default=650, help="Hypothesis cases per custom target (some take 2-3x)")
    parser.add_argument("--min-cases", type=int, default=10_000, help="fail when fewer cases ran")
    parser.add_argument("--seed", type=int, default=15, help="Hypothesis seed (the same cases each run)")
    parser.add_argument("--parallel", type=int, default=3, help="custom targets run at once (beside the sweep)")
    parser.add_argument("--out", type=Path, default=ROOT / ".flywheel" / "fuzz" / "summary.json")
    args = parser.parse_args(argv)
    console = Console()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="flywheel-fuzz-") as tmp:
        console.print("starting the stack (flywheel up, free ports, the digits test models)")
        stack = start_stack(Path(tmp))
        try:
            before = stack.rss()
            # The custom targets run beside the OpenAPI sweep, a few at a time: the services share the load.
            with ThreadPoolExecutor(args.parallel) as pool:
                running = [pool.submit(job) for job in custom_targets(stack, args.scale, args.seed)]
                outcomes = openapi_targets(stack, args.examples, args.seed, console)
                outcomes += [future.result() for future in running]
            after = stack.rss()
            problems = []
            try:
                stack.assert_alive()
            except AssertionError as exc:
                problems.append(f"after the fuzz: {exc}")
        finally:
            stop_stack(stack)
    elapsed = time.monotonic() - started
    total = sum(o.cases for o in outcomes)
    failures = sum(len(o.failures) for o in outcomes) + len(problems)
    table = Table(title=f"make fuzz: {total} cases in {elapsed:.0f} s, {failures} failures")
    for column in ("target", "cases", "answers", "failures"):
        table.add_column(column)
    for o in outcomes:
        answers = ", ".join(f"{k}×{v}" for k, v in o.answers.most_common(5))
        table.add_row(o.target, str(o.cases), answers, str(len(o.failures)) if o.failures else "0")
    console.print(table)
    for o in outcomes:
        for failure in o.failures[:5]:
            console.print(f"[red]{o.target}[/red]: {failure}", highlight=False)
    for problem in problems:
        console.print(f"[red]{problem}[/red]", highlight=False)
    growth = {name: round(after[name] - before[name]) for name in SERVICES}
    console.print(f"resident memory growth, MiB: {growth}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "cases": total,
        "failures": failures,
        "seconds": round(elapsed, 1),
        "seed": args.seed,
        "rss_growth_mib": growth,
        "targets": [
            {
                "target": o.target,
                "cases": o.cases,
                "seconds": round(o.seconds, 2),
                "answers": dict(o.answers),
                "failures": o.failures,
            }
            for o in outcomes
        ],
        "problems": problems,
    }
    args.out.write_text(json.dumps(summary, indent=2))
    console.print(f"summary: {args.out}")
    if total < args.min_cases:
        console.print(f"[red]only {total} cases ran; at least {args.min_cases} are required[/red]")
        return 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
