"""The flywheel, one turn: labels in → lake → snapshot → train → serve → load → drift → retrain → canary.

Each step talks to the running services only through their public APIs (HTTP, gRPC, Kafka), as
a user would, and records what it measured in `Results`; `DemoError` stops the story with a
message that names the step and the log to read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from math import nan
from typing import Any

import grpc
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from services.cli.demo.config import MODEL, DemoConfig
from services.cli.demo.data import SHIFT_NAME, Digits, label_studio_payload, native_labels, png_b64, raw_label
from services.cli.demo.endpoints import DemoError, Endpoints, check, firing_alerts, scrape, wait_for
from services.events import EventProducer
from services.events.topics import DEADLETTER, LABELS_RAW
from services.genproto.inference import grpc_predict_v2_pb2 as pb
from services.genproto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

MALFORMED_EVENTS = 3


@dataclass
class Results:
    started: float = field(default_factory=time.monotonic)
    steps: list[tuple[str, float]] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    drift_timeline: list[tuple[float, float]] = field(default_factory=list)  # (s since shift, drifted share)

    def __setitem__(self, key: str, value: Any) -> None:
        self.values[key] = value

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)


# Drives load at the gateway: (http, grpc, api key, kafka, out dir, users=, rate=, duration_s=, user_classes=)
# → (exit status, summary). The `flywheel demo` command passes loadtests.run.run_locust; the story
# itself imports nothing above the services.
LoadRunner = Callable[..., tuple[int, dict[str, Any]]]


class Story:
    def __init__(
        self,
        cfg: DemoConfig,
        ep: Endpoints,
        console: Console,
        run_load: LoadRunner,
    ) -> None:
        self.cfg = cfg
        self._run_load = run_load
        self.ep = ep
        self.key = ep.credentials.gateway_key  # the stack's bootstrap API key (predict, admin)
        self.webhook_token = ep.credentials.webhook_token
        self.console = console
        self.results = Results()
        self.results["seed"] = cfg.seed
        self.digits = Digits.load(cfg.n_labels, cfg.seed)
        self.http = ep.client(30)  # internal services as the operator; gateway calls pass self.auth
        self._channel = grpc.insecure_channel(ep.grpc["gateway"])
        self.stub = pb_grpc.GRPCInferenceServiceStub(self._channel)

    # -- helpers ----------------------------------------------------------------------------
    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def say(self, msg: str) -> None:
        self.console.print(f"  [dim]·[/dim] {msg}", highlight=False)

    def step(self, title: str) -> None:
        self.results.steps.append((title, time.monotonic() - self.results.started))
        self.console.rule(f"[bold]{len(self.results.steps)}. {title}")

    def predict(self, instances: list[dict]) -> dict:
        resp = self.http.post(
            f"{self.ep.http['gateway']}/v1/models/{MODEL}:predict", json={"instances": instances}, headers=self.auth
        )
        return check(resp, "gateway :predict")

    def lake_rows(self, topic: str) -> int:
        stats = check(self.http.get(f"{self.ep.http['lake']}/v1/stats"), "lake stats")
        return next((int(t["distinct_events"]) for t in stats if t["topic"] == topic), 0)

    def _seed(self, stream: int) -> int:
        """One random stream per purpose, all following the demo's seed."""
        return self.cfg.seed * 1000 + stream

    def close(self) -> None:
        self._channel.close()
        self.http.close()

    # -- 1. labels in -----------------------------------------------------------------------
    def ingest(self) -> None:
        self.step("Labels in: Label Studio webhooks and Kafka events → ingest → lake")
        d = self.digits
        half = len(d.label_x) // 2
        base = 1  # Label Studio task ids, unique within the run
        url = f"{self.ep.http['ingest']}/webhooks/label-studio"
        accepted = 0
        for start in range(0, half, 50):
            stop = min(half, start + 50)
            payload = label_studio_payload(d.label_x[start:stop], d.label_y[start:stop], base + start, f"ls-{d.run}")
            body = check(
                self.http.post(url, json=payload, headers={"Authorization": f"Token {self.webhook_token}"}), "webhook"
            )
            accepted += int(body["accepted"])
        self.say(f"{accepted} annotations posted as Label Studio ANNOTATIONS_CREATED webhooks")
        producer = EventProducer(self.ep.kafka, client_id="flywheel-demo")
        for i in range(half, len(d.label_x)):
            producer.send(LABELS_RAW.name, raw_label(d.label_x[i], int(d.label_y[i]), f"kafka-{d.run}-{i}"))
        # Bad events a careless producer might send: they must reach the dead-letter topic, not vanish.
        for i in range(MALFORMED_EVENTS):
            producer.send_raw(LABELS_RAW.name, b"\x00not a RawLabel protobuf " + bytes([i]), key=f"bad-{i}".encode())
        producer.flush(30)
        producer.close()
        kafka_sent = len(d.label_x) - half
        self.say(f"{kafka_sent} RawLabel events and {MALFORMED_EVENTS} malformed ones produced to {LABELS_RAW.name}")
        sent = accepted + kafka_sent
        landed = wait_for(
            lambda: (n := self.lake_rows("flywheel.labels")) >= sent and n,
            self.cfg.timeout_s,
            f"{sent} labels in the lake (see {self.ep.logs.get('lake')})",
        )
        dead = wait_for(
            lambda: (
                (n := scrape(self.ep.http["ingest"], "flywheel_events_dead_lettered_total")) >= MALFORMED_EVENTS and n
            ),
            60,
            "the malformed events on the dead-letter topic",
        )
        self.say(
            f"lake holds {landed} label events (sent {sent}); "
            f"{int(dead)} malformed events dead-lettered to {DEADLETTER.name}"
        )
        self.results["labels_sent"] = sent
        self.results["labels_in_lake"] = landed
        self.results["labels_lost"] = max(0, sent - landed)
        self.results["dead_lettered"] = int(dead)

    # -- 2. snapshot, train, publish ----------------------------------------------------------
    def snapshot(self, description: str) -> dict:
        split = {"train": 0.7, "validation": 0.15, "test": 0.15, "salt": self.cfg.split_salt}
        body = {"split": split, "description": description}
        snap = check(self.http.post(f"{self.ep.http['lake']}/v1/snapshots", json=body), "lake snapshot")
        rows = snap.get("rows_per_split", {})
        self.say(f"snapshot {snap['snapshot_id']}: " + ", ".join(f"{k} {v}" for k, v in rows.items()))
        return snap

    def wait_job(self, job_id: str, title: str) -> dict:
        url = f"{self.ep.http['trainer']}/v1/jobs/{job_id}"
        with Progress(
            TextColumn("  {task.description}"), BarColumn(), TextColumn("{task.fields[phase]}"), TimeElapsedColumn(),
            console=self.console, transient=True,
        ) as bar:  # fmt: skip
            task = bar.add_task(title, total=1.0, phase="queued")
            deadline = time.monotonic() + self.cfg.timeout_s * 3
            while time.monotonic() < deadline:
                job = check(self.http.get(url), "trainer job")
                bar.update(task, completed=float(job.get("fraction") or 0), phase=job.get("phase") or job["state"])
                if job["state"] in ("succeeded", "failed", "cancelled"):
                    break
                time.sleep(0.5)
            else:
                raise DemoError(f"training job {job_id} did not finish in time (see {self.ep.logs.get('trainer')})")
        if job["state"] != "succeeded":
            raise DemoError(f"training job {job_id} {job['state']}: {job.get('reason') or job.get('message')}")
        return job

    def version_metrics(self, version: str) -> dict[str, float]:
        """Every metric the registry keeps for a version (baselines, production on the same split...)."""
        versions = check(self.http.get(f"{self.ep.http['trainer']}/v1/models", params={"model": MODEL}), "models")
        return next((v["metrics"] for v in versions if str(v["version"]) == str(version)), {})

    def train_first(self) -> None:
        search = f"a search of {self.cfg.search_trials} trials" if self.cfg.search_trials else "no search"
        self.step(f"Snapshot, train a {self.cfg.family} against baselines ({search}), export, publish")
        snap = self.snapshot("flywheel demo: first model")
        body = {
            "model": MODEL,
            "snapshot_id": snap["snapshot_id"],
            "model_family": self.cfg.family,
            # The search's first trial is this point; it only replaces it with a better one on validation.
            "hyperparameters": self.cfg.hyperparameters,
            "search": {"trials": self.cfg.search_trials, "rounds": 2 if self.cfg.search_trials else 1},
        }
        job = check(self.http.post(f"{self.ep.http['trainer']}/v1/jobs", json=body), "submit training job")
        job = self.wait_job(job["job_id"], "training v1")
        version = str(job["model_version"])
        m = self.version_metrics(version) or job["metrics"]
        baselines = {
            k.removeprefix("baseline_").removesuffix("_test_accuracy"): v
            for k, v in m.items()
            if k.startswith("baseline_") and k.endswith("_test_accuracy")
        }
        self.say(
            f"v{version}: test accuracy {m.get('test_accuracy', float('nan')):.4f}; baselines "
            + ", ".join(f"{k} {v:.4f}" for k, v in baselines.items())
        )
        self.say(f"training report: {job.get('report_uri')}")
        promoted = check(
            self.http.post(
                f"{self.ep.http['trainer']}/v1/models/{MODEL}/versions/{version}/promote", json={"stage": "production"}
            ),
            "promote v1",
        )
        self.say(f"the promotion gate let v{version} into {promoted['stage']} (it beats every baseline)")
        self.results["v1"] = version
        self.results["v1_test_accuracy"] = m.get("test_accuracy")
        self.results["baselines"] = baselines
        self.results["v1_report"] = job.get("report_uri")
        self.results["first_snapshot"] = snap["snapshot_id"]

    # -- 3. served --------------------------------------------------------------------------
    def wait_served(self, version: str) -> None:
        url = f"{self.ep.http['gateway']}/v2/models/{MODEL}/versions/{version}/ready"
        wait_for(
            lambda: self.http.get(url, headers=self.auth).status_code == 200, 60, f"model {MODEL} v{version} ready"
        )

    def serve(self) -> None:
        self.step("The model server loads it; predictions through the gateway (HTTP and gRPC)")
        v1 = self.results["v1"]
        self.wait_served(v1)
        wait_for(
            lambda: self.predict([{"features": [0.0] * 64}])["model_version"] == v1, 60, f"the gateway routing to v{v1}"
        )
        d = self.digits
        n = min(200, len(d.traffic_x))
        correct = 0
        for start in range(0, n, 20):
            rows = range(start, min(n, start + 20))
            answer = self.predict([{"b64": png_b64(d.traffic_x[i])} for i in rows])
            correct += sum(p["label"] == str(d.traffic_y[i]) for p, i in zip(answer["predictions"], rows, strict=True))
        http_acc = correct / n
        self.say(f"HTTP :predict with PNGs: {n} held-out digits, accuracy {http_acc:.4f}")
        correct = 0
        versions = set()
        for start in range(0, n, 50):  # the model's max_batch_size is 64
            x = d.traffic_x[start : min(n, start + 50)].astype(np.float32)
            request = pb.ModelInferRequest(
                model_name=MODEL,
                inputs=[pb.ModelInferRequest.InferInputTensor(name="features", datatype="FP32", shape=list(x.shape))],
                raw_input_contents=[x.tobytes()],
            )
            try:
                reply = self.stub.ModelInfer(request, metadata=[("authorization", f"Bearer {self.key}")], timeout=10)
            except grpc.RpcError as exc:
                raise DemoError(f"gRPC ModelInfer through the gateway: {exc.code().name} {exc.details()}") from None
            probs = np.frombuffer(reply.raw_output_contents[0], dtype=np.float32).reshape(len(x), -1)
            correct += int((probs.argmax(axis=1) == d.traffic_y[start : start + len(x)]).sum())
            versions.add(reply.model_version)
        grpc_acc = correct / n
        self.say(
            f"gRPC ModelInfer (OIP v2), {n} digits in batches of 50: accuracy {grpc_acc:.4f}, "
            f"served by v{','.join(versions)}"
        )
        self.results["live_accuracy_http"] = http_acc
        self.results["live_accuracy_grpc"] = grpc_acc

    # -- 4. load ----------------------------------------------------------------------------
    def load(self) -> None:
        rate = self.cfg.locust_users * self.cfg.locust_rate
        self.step(f"Locust: {rate:.0f} requests/s (HTTP + gRPC users) for {self.cfg.locust_s:.0f} s")
        out = self.cfg.home / "demo" / "loadtest"
        _code, summary = self._run_load(
            self.ep.http["gateway"], self.ep.grpc["gateway"], self.key, self.ep.kafka, out,
            users=self.cfg.locust_users, rate=self.cfg.locust_rate, duration_s=self.cfg.locust_s,
            user_classes=("HttpPredictUser", "GrpcPredictUser"),
        )  # fmt: skip
        self.say(
            f"{summary['requests']} requests, {summary['failures']} failed; p50 {summary['p50_ms']:.1f} ms, "
            f"p99 {summary['p99_ms']:.1f} ms; goodput {summary['goodput_rps']:.1f}/s "
            f"at the {summary['slo_ms']:.0f} ms SLO "
            f"({'met' if summary['slo_met'] else 'missed'}); Locust HTML: {out / 'locust.html'}"
        )
        self.results["load"] = summary
        self.results["load_html"] = str(out / "locust.html")

    # -- 5. drift, alert, retrain -------------------------------------------------------------
    def clean_traffic(self) -> None:
        """Production traffic from the world the model was trained on (held-out digits, drawn at random):
        the monitor must test it and flag nothing."""
        d = self.digits
        rng = np.random.default_rng(self._seed(17))
        idx = rng.integers(0, len(d.traffic_x), self.cfg.clean_predictions)
        monitor = self.ep.http["monitor"]
        before = scrape(monitor, "flywheel_monitor_predictions_total")
        for start in range(0, len(idx), 25):
            self.predict([{"features": d.traffic_x[i].tolist()} for i in idx[start : start + 25]])
        wait_for(
            lambda: scrape(monitor, "flywheel_monitor_predictions_total") >= before + len(idx),
            60,
            f"the monitor to read {len(idx)} clean predictions (see {self.ep.logs.get('monitor')})",
        )
        self.say(f"{len(idx)} predictions of clean traffic (held-out digits) through the gateway")

    def drift(self) -> None:
        self.step(f"The world shifts ({SHIFT_NAME}): monitor → drift → Prometheus alert → training request")
        d = self.digits
        monitor = self.ep.http["monitor"]
        self.clean_traffic()
        windows_before = scrape(monitor, "flywheel_monitor_windows_total")
        drifted_before = scrape(monitor, "flywheel_monitor_windows_total", verdict="drifted")
        ignored = scrape(monitor, "flywheel_monitor_predictions_ignored_total", reason="synthetic")
        self.results["clean_windows"] = int(windows_before)
        self.results["clean_windows_drifted"] = int(drifted_before)
        self.results["synthetic_predictions_ignored"] = int(ignored)
        colour = "green" if not drifted_before else "red"
        self.say(
            f"before the shift: {int(windows_before)} windows of clean traffic tested, "
            f"[{colour}]{int(drifted_before)} false alarms[/{colour}]; {int(ignored)} synthetic (Locust) "
            "predictions left out by the monitor"
        )

        # The labelling team labels images from the new camera; they reach the lake before retraining.
        lx, ly = d.shifted(self.cfg.shifted_labels, seed=self._seed(11))
        labels_before = self.lake_rows("flywheel.labels")
        body = check(
            self.http.post(
                f"{self.ep.http['ingest']}/v1/labels", json=native_labels(lx, ly, f"newcam-{d.run}"), timeout=60
            ),
            "ingest new-camera labels",
        )
        wait_for(
            lambda: self.lake_rows("flywheel.labels") >= labels_before + int(body["accepted"]),
            60,
            "new-camera labels in the lake",
        )
        self.say(f"{body['accepted']} labelled images from the new camera ingested (POST /v1/labels)")

        jobs_before = {j["job_id"] for j in check(self.http.get(f"{self.ep.http['trainer']}/v1/jobs"), "jobs")}
        drifted_count0 = scrape(monitor, "flywheel_monitor_windows_total", window="count", verdict="drifted")
        x, y = d.shifted(8000, seed=self._seed(23))
        shift_start = time.monotonic()
        deadline = shift_start + self.cfg.timeout_s
        sent = correct = 0
        detected_at: int | None = None
        fired: list[dict] = []
        # Traffic keeps coming, as it would: fast until the monitor flags drift, then gently until
        # Prometheus's alert (which must see the drift last `for: 10s`) fires.
        while sent < len(x) and time.monotonic() < deadline:
            rows = range(sent, min(len(x), sent + 25))
            answer = self.predict([{"features": x[i].tolist()} for i in rows])
            correct += sum(p["label"] == str(y[i]) for p, i in zip(answer["predictions"], rows, strict=True))
            sent = rows.stop
            share = scrape(monitor, "flywheel_monitor_drifted_share", window="count")
            self.results.drift_timeline.append((time.monotonic() - shift_start, share))
            if detected_at is None:
                persisting = scrape(monitor, "flywheel_monitor_drift_persisting", window="count")
                drifted = scrape(monitor, "flywheel_monitor_windows_total", window="count", verdict="drifted")
                if persisting >= 1 and drifted > drifted_count0:
                    detected_at, delay_s = sent, time.monotonic() - shift_start
                    self.say(
                        f"monitor: drift persisting after {detected_at} shifted predictions ({delay_s:.1f} s); "
                        f"v1 accuracy on shifted inputs {correct / sent:.3f}"
                    )
                    self.results["drift_detected_after_events"] = detected_at
                    self.results["drift_detected_after_s"] = delay_s
                    self.results["v1_shifted_accuracy"] = correct / sent
                    if not self.ep.prometheus:
                        break
                time.sleep(0.05)
                continue
            fired = [
                a
                for a in firing_alerts(self.ep.prometheus)
                if a["labels"].get("alertname") == "FlywheelDriftPersisting"
            ]
            if fired:
                break
            time.sleep(0.5)
        if detected_at is None:
            raise DemoError(
                f"the monitor did not flag drift within {sent} shifted predictions (see {self.ep.logs.get('monitor')})"
            )
        if self.ep.prometheus:
            if not fired:
                raise DemoError(
                    f"Prometheus's FlywheelDriftPersisting alert did not fire (see {self.ep.logs.get('prometheus')})"
                )
            after = time.monotonic() - shift_start
            self.say(
                f"Prometheus: alert FlywheelDriftPersisting firing {after:.1f} s after the shift: "
                f"{fired[0]['annotations'].get('summary', '')}"
            )
            self.results["alert_fired_after_s"] = after
        else:
            self.say("[yellow]Prometheus is not installed: alert step skipped (install prometheus to see it)[/yellow]")
            self.results["alert_fired_after_s"] = None

        def drift_job() -> dict | None:
            jobs = check(self.http.get(f"{self.ep.http['trainer']}/v1/jobs"), "jobs")
            return next((j for j in jobs if j["job_id"] not in jobs_before), None)

        job = wait_for(drift_job, self.cfg.timeout_s, "the monitor's TrainRequest to start a training job", every_s=1.0)
        self.say(f"the DriftAlert became TrainRequest → training job {job['job_id']} on a fresh snapshot")
        job = self.wait_job(job["job_id"], "retraining v2")
        self.results["v2"] = str(job["model_version"])
        m = self.version_metrics(str(job["model_version"])) or job["metrics"]
        self.results["v2_metrics"] = m
        self.results["v2_report"] = job.get("report_uri")
        line = (
            f"v{job['model_version']} on snapshot {job['snapshot_id']}: test accuracy {m.get('test_accuracy', nan):.4f}"
        )
        if "production_test_combined" in m:
            line += (
                f"; combined {m.get('test_combined', nan):.4f} vs production v{int(m['production_version'])} "
                f"{m['production_test_combined']:.4f} on the same split"
            )
        self.say(line)

    # -- 6. canary and gate -----------------------------------------------------------------
    def canary(self) -> None:
        self.step("Canary and gate: promote the candidate if it earns it, or hold it back")
        v1, v2 = self.results["v1"], self.results["v2"]
        trainer = self.ep.http["trainer"]
        resp = self.http.post(f"{trainer}/v1/models/{MODEL}/versions/{v2}/promote", json={"stage": "canary"})
        if resp.status_code >= 400:
            reason = resp.json().get("detail", resp.text)
            self.say(f"[yellow]the gate kept v{v2} as a candidate:[/yellow] {reason}")
            self.results["gate"] = f"v{v2} held back: {reason}"
            self.results["production"] = v1
            return
        self.say(f"v{v2} passed the gate into canary; the gateway splits traffic")
        self.wait_served(v2)
        x, y = self.digits.shifted(self.cfg.canary_requests, seed=self._seed(31))
        served: dict[str, list[bool]] = {}
        wait_for(lambda: self._canary_seen(v2), 30, f"the gateway sending some traffic to v{v2}", every_s=0.2)
        for i in range(len(x)):
            answer = self.predict([{"features": x[i].tolist()}])
            served.setdefault(answer["model_version"], []).append(answer["predictions"][0]["label"] == str(y[i]))
        split = {v: len(ok) for v, ok in served.items()}
        accuracy = {v: float(np.mean(ok)) for v, ok in served.items()}
        self.say(
            "traffic: " + ", ".join(f"v{v} {n} requests (accuracy {accuracy[v]:.3f})" for v, n in sorted(split.items()))
        )
        rollbacks = scrape(self.ep.http["gateway"], "flywheel_gateway_canary_rollbacks_total")
        self.results["canary_split"] = split
        self.results["canary_accuracy"] = accuracy
        if rollbacks:
            self.say(f"[yellow]the gateway rolled the canary back ({int(rollbacks)} rollback)[/yellow]")
            self.results["gate"] = f"v{v2} rolled back by the gateway's canary watch"
            self.results["production"] = v1
            return
        resp = self.http.post(f"{trainer}/v1/models/{MODEL}/versions/{v2}/promote", json={"stage": "production"})
        if resp.status_code >= 400:
            reason = resp.json().get("detail", resp.text)
            self.results["gate"] = f"v{v2} stayed canary: {reason}"
            self.results["production"] = v1
            self.say(f"[yellow]the gate refused production:[/yellow] {reason}")
            return
        wait_for(
            lambda: self.predict([{"features": x[0].tolist()}])["model_version"] == v2, 30, f"v{v2} serving all traffic"
        )
        self.say(f"canary healthy → v{v2} promoted to production; v{v1} stays loaded for rollback")
        self.results["gate"] = f"v{v2} promoted: healthy canary, beats v{v1} and the baselines on the new data"
        self.results["production"] = v2

    def _canary_seen(self, version: str) -> bool:
        routes = check(self.http.get(f"{self.ep.http['gateway']}/admin/routes/{MODEL}", headers=self.auth), "routes")
        return str(routes.get("canary") or "") == version
