"""Pods die and the chart is upgraded while predictions and labels flow, on a real cluster (issue 19).

One install (2 model servers, 1 gateway, ingest, the lake; Kafka from infra/k8s-local/deps), a model of
the test's own published (serving.py) and a project for the labels. Two loads run from start to end:

- predictions through the gateway's Service, paced under the API key's rate limit; a failed one is
  retried once by the client (its retry budget: at most RETRY_BUDGET of a step's predictions fail
  first time, none twice);
- labels into ingest's Service, each example id once, in batches; a batch that is not accepted
  (ingest or the broker away) is sent again unchanged, as a label producer does (its ids and times
  fixed, so ingest gives a re-sent label the same event id).

Meanwhile `kubectl delete pod`, one at a time, waiting for each replacement: a model server, the lake,
ingest, the Kafka broker; then `helm upgrade` to a new image tag (the loaded images tagged anew in the
cluster's containerd): no prediction may fail during it. At the end every accepted label is in the
lake once: its live examples of the project equal the labels sent (none lost) and so do its distinct
label events (none duplicated). The counts of each step are printed (make test-k8s runs pytest -s).

The broker keeps its log in an emptyDir: a new broker pod has lost every topic. Ingest's outbox sends
again what the old broker acknowledged, and the lake tells the new log from the old one, both by the
broker's cluster id (infra/k8s-local/deps/kafka.yaml gives each broker pod a new one). flywheel.projects
is lost too and the trainer publishes projects only when it starts: this release has no trainer, so
the test publishes the project as the trainer's start does, at first and again once the broker is back
(the pods the upgrade starts read the project from that topic).
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest

from services.projects import load_spec_file, spec_json
from tests.k8s.conftest import (
    CHART,
    create_namespace,
    describe_failures,
    helm,
    install,
    kubectl,
    remove_namespace,
    secret_value,
    service_url,
    start_deps,
    step,
    tag_images,
    untag_images,
    wait_until,
)
from tests.k8s.serving import MODEL, Client, publish_model, run_in_test_pod, wait_serving
from tests.support.projects import example_spec_file

NAMESPACE = "flywheel-failures"
RELEASE = "flywheel"
FULL = f"{RELEASE}-flywheel"
SETTINGS = [
    "services.modelserver.replicas=2",
    "services.gateway.replicas=1",
    "services.gateway.modelserverDiscovery=headless",
    "services.monitor.enabled=false",
    "services.trainer.enabled=false",
    "grafana.dashboards.enabled=false",
]
TAG = "0.1.0"  # charts/flywheel/values.yaml image.tag: what `make images` loads
NEW_TAG = "0.1.0-upgraded"
PROJECT = "failures"
PREDICTION_THREADS = 2
PACE_S = 0.05  # between a thread's predictions: under 40/s in all, under the key's 100/s
RETRY_BUDGET = 0.01  # of a step's predictions, the most that may fail first time (each retried once)
LABEL_BATCH = 10
LABEL_PACE_S = 0.5  # between batches: 20 labels/s
LABEL_TIMEOUT_S = 20.0  # one POST; not answered by then, the batch goes again
# Run in the chart's test pod: the project published on flywheel.projects, as the trainer does at start.
PUBLISH_PROJECT = """
import os, sys
sys.path[:0] = [os.environ.get("SMOKE_APP", "/app")]
from services.config import CommonSettings
from services.events import EventProducer
from services.projects.catalog import Project, publish_project
from services.projects.loading import parse_spec_json, spec_sha256
spec = parse_spec_json({spec!r})
producer = EventProducer(os.environ["SMOKE_KAFKA"], client_id="tests-k8s-failures", **CommonSettings().kafka_security())
publish_project(producer, Project(spec, 1, spec_sha256(spec)))
producer.close(10)
print(f"published project {{spec.name}}", flush=True)
"""


def project_script() -> str:
    spec = json.loads(spec_json(load_spec_file(example_spec_file("digits"))))
    return PUBLISH_PROJECT.format(spec=json.dumps({**spec, "name": PROJECT}))


@dataclass
class Tally:
    sent: int = 0
    answered: int = 0
    failed: int = 0  # first time
    failed_twice: int = 0  # and again when retried
    label_batches: int = 0  # accepted
    label_resends: int = 0  # attempts that were not accepted
    labels: int = 0  # accepted


class Loads:
    """The prediction and label loads; counts per step (`self.step`, set by the test)."""

    def __init__(self, gateway: str, api_key: str, ingest: str, labeler: str) -> None:
        self.client = Client(gateway, api_key)
        self.ingest = httpx.Client(
            base_url=ingest, headers={"Authorization": f"Bearer {labeler}"}, timeout=LABEL_TIMEOUT_S
        )
        self.step = "start"
        self.tallies: dict[str, Tally] = defaultdict(Tally)
        self.failures: dict[str, list[str]] = defaultdict(list)  # step -> first few reasons
        # step -> ingest pods' own /readyz answers while labels were refused, as they changed
        self.readiness: dict[str, list[str]] = defaultdict(list)
        self.last_sample = 0.0
        self.labels_sent = 0
        self.last_label_ok = 0.0  # monotonic time of the last accepted batch
        self.stop = threading.Event()
        self.lock = threading.Lock()
        threads = [threading.Thread(target=self.predict, daemon=True) for _ in range(PREDICTION_THREADS)]
        self.threads = [*threads, threading.Thread(target=self.label, daemon=True)]

    def __enter__(self) -> Loads:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(LABEL_TIMEOUT_S * 4)
        self.client.close()
        self.ingest.close()

    def note(self, why: str) -> None:
        with self.lock:
            if len(self.failures[self.step]) < 5:
                self.failures[self.step].append(why)

    def predict(self) -> None:
        while not self.stop.wait(PACE_S):
            tally = self.tallies[self.step]
            tally.sent += 1
            if not (why := self.client.predict()):
                tally.answered += 1
                continue
            tally.failed += 1
            self.note(f"prediction: {why}")
            if self.client.predict():
                tally.failed_twice += 1

    def label(self) -> None:
        """Until stopped, then until the batch in hand is accepted (so `labels_sent` is exact). How
        long labels may be refused is the test's to bound (`labels_flow`, from the moment the killed
        pod's replacement is ready): a clock of its own here, started at the kill, would also count
        the replacement's start, which a loaded machine stretches."""
        n = 0
        while not self.stop.wait(LABEL_PACE_S):
            batch = {
                "project": PROJECT,
                "labels": [
                    {
                        "example_id": f"failures-{n + i}",
                        "label": str((n + i) % 10),
                        "annotator": "tests/k8s/failures",
                        "features": [((n + i + j) % 17) / 16.0 for j in range(64)],
                        # Fixed at first send: a re-sent label is the same label (ingest's event id)
                        "updated_at": datetime.now(UTC).isoformat(),
                    }
                    for i in range(LABEL_BATCH)
                ],
            }
            stopped_at = 0.0
            while not self.send_labels(batch):
                if self.stop.is_set():
                    stopped_at = stopped_at or time.monotonic()
                    assert time.monotonic() - stopped_at < 180, f"labels not accepted for 180 s: {self.failures}"
                self.sample_readiness()
                time.sleep(LABEL_PACE_S)
            n += LABEL_BATCH
            self.labels_sent = n

    def send_labels(self, batch: dict) -> bool:
        tally = self.tallies[self.step]
        try:
            r = self.ingest.post("/v1/labels", json=batch)
        except httpx.HTTPError as exc:
            why = f"{type(exc).__name__}: {exc}"
        else:
            if r.status_code == 200:
                tally.label_batches += 1
                tally.labels += len(batch["labels"])
                self.last_label_ok = time.monotonic()
                return True
            why = f"{r.status_code} {r.text[:200]}"
        tally.label_resends += 1
        self.note(f"labels: {why}")
        return False

    def sample_readiness(self) -> None:
        """Labels refused: what ingest's own /readyz says (every 3 s at most; kept when it changes)."""
        if time.monotonic() - self.last_sample < 3:
            return
        self.last_sample = time.monotonic()
        answers = "; ".join(pod_readiness("ingest", 8100))
        timeline = self.readiness[self.step]
        if not timeline or not timeline[-1].endswith(answers):
            timeline.append(f"{datetime.now(UTC):%H:%M:%S} {answers}")

    def labels_flow(self, what: str) -> None:
        """Until a batch sent from now on is accepted (within 120 s); prints how long it took."""
        since = time.monotonic()
        try:
            wait_until(what, lambda: self.last_label_ok > since, timeout_s=120)
        except AssertionError as exc:  # which pod is not ready, and why: a CI log is all there is
            timeline = "\n".join(self.readiness[self.step])
            pods_now = describe_failures(NAMESPACE)
            raise AssertionError(f"{exc}\ningest's /readyz while refused:\n{timeline}\n{pods_now}") from None
        print(f"    {what}: in {self.last_label_ok - since:.1f} s")

    def report(self, name: str, kill: bool) -> list[str]:
        """Print the step's counts; what breaks its promise (checked at the end, so that one run shows
        every step)."""
        t = self.tallies[name]
        print(
            f"    {name}: predictions {t.sent} sent, {t.answered} answered, {t.failed} failed "
            f"({t.failed_twice} twice); labels {t.labels} accepted in {t.label_batches} batches, "
            f"{t.label_resends} re-sent; first failures: {self.failures.get(name, [])}"
        )
        for line in self.readiness.get(name, []):
            print(f"      ingest's /readyz while labels were refused: {line}")
        broken = []
        if not (t.sent > 0 and t.label_batches > 0):
            broken.append(f"{name}: no load ran through it: {t}")
        budget = RETRY_BUDGET * t.sent if kill else 0
        if t.failed > budget or t.failed_twice:
            broken.append(f"{name}: {t.failed} predictions failed ({t.failed_twice} twice), budget {budget:.0f}")
        return broken


def pods(selector: str) -> list[dict]:
    return json.loads(kubectl("-n", NAMESPACE, "get", "pods", "-l", selector, "-o", "json").stdout)["items"]


def pod_readiness(name: str, port: int) -> list[str]:
    """Each `name` pod's own /readyz answer, asked at its IP (the Service hides an unready pod)."""
    answers = []
    for pod in pods(selector(name)):
        ip, pod_name = pod["status"].get("podIP"), pod["metadata"]["name"]
        try:
            r = httpx.get(f"http://{ip}:{port}/readyz", timeout=3)
            answers.append(f"{pod_name}: {r.status_code} {r.text[:400]}")
        except httpx.HTTPError as exc:
            answers.append(f"{pod_name}: {type(exc).__name__}: {exc}")
    return answers


def ready(pod: dict) -> bool:
    conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
    return conditions.get("Ready") == "True" and not pod["metadata"].get("deletionTimestamp")


def kill_one(selector: str, replicas: int) -> str:
    """`kubectl delete pod` of one pod of `selector` (graceful: preStop, drain), then until it is gone and
    `replicas` pods are Ready again; the pod's name."""
    meta = pods(selector)[0]["metadata"]
    victim, uid = meta["name"], meta["uid"]  # a StatefulSet's replacement has the same name: compare uids
    kubectl("-n", NAMESPACE, "delete", "pod", victim, "--wait=false")

    def back() -> bool:
        now = pods(selector)
        return uid not in {p["metadata"]["uid"] for p in now} and sum(map(ready, now)) == replicas

    try:
        wait_until(f"{victim} replaced", back, timeout_s=180, interval_s=1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{describe_failures(NAMESPACE)}") from None
    return victim


def lake_counts(lake: str, operator: str) -> tuple[int, int, int]:
    """(live examples of the project, distinct label events, label rows in files) in the lake."""
    auth = {"Authorization": f"Bearer {operator}"}
    live = httpx.get(f"{lake}/v1/labels/distribution", params={"project": PROJECT}, headers=auth, timeout=60)
    stats = httpx.get(f"{lake}/v1/stats", headers=auth, timeout=60)
    assert live.status_code == 200 and stats.status_code == 200, (live.text, stats.text)
    labels = next(s for s in stats.json() if s["topic"] == "flywheel.labels")
    return sum(live.json().values()), labels["distinct_events"], labels["rows"]


def broker_cluster_id() -> str:
    out = kubectl("-n", NAMESPACE, "exec", "statefulset/kafka", "--", "cat", "/var/lib/kafka/meta.properties")
    return next(line.split("=", 1)[1] for line in out.stdout.splitlines() if line.startswith("cluster.id="))


def lake_live(lake: str, operator: str) -> int:
    try:
        return lake_counts(lake, operator)[0]
    except (httpx.HTTPError, AssertionError):  # the lake replaced by the upgrade: not answering yet
        return -1


def selector(name: str) -> str:
    return f"app.kubernetes.io/name={name}"


@pytest.mark.timeout(900)
def test_pod_kills_and_an_upgrade_under_load_lose_nothing(cluster: str) -> None:
    t0 = time.monotonic()
    with step("namespace and Kafka"):
        create_namespace(NAMESPACE)
        start_deps(NAMESPACE)
    new_images: list[str] = []
    try:
        with step("helm install --wait: 2 model servers, gateway, ingest, lake"):
            install(NAMESPACE, RELEASE, SETTINGS)
        with step(f"{MODEL} and project {PROJECT} published"):
            publish_model(NAMESPACE, RELEASE, SETTINGS, project_script())
        api_key = secret_value(NAMESPACE, RELEASE, "api-keys").split(",")[0]
        operator = secret_value(NAMESPACE, RELEASE, "token-operator")
        gateway = service_url(NAMESPACE, f"{FULL}-gateway", 8080)
        ingest = service_url(NAMESPACE, f"{FULL}-ingest", 8100)
        lake = service_url(NAMESPACE, f"{FULL}-lake", 8200)
        probe = Client(gateway, api_key)
        try:
            wait_serving(probe, f"the gateway serving {MODEL} from both model servers")
        finally:
            probe.close()
        with Loads(gateway, api_key, ingest, secret_value(NAMESPACE, RELEASE, "token-labeler")) as loads:
            with step("load running"):
                loads.labels_flow("labels accepted")
                time.sleep(3)
            broken = loads.report("start", kill=False)
            for name, replicas in (("modelserver", 2), ("lake", 1), ("ingest", 1), ("kafka", 1)):
                loads.step = f"kill {name}"
                with step(f"kubectl delete pod: one {name} pod, until replaced"):
                    log_before = broker_cluster_id() if name == "kafka" else ""
                    victim = kill_one(selector(name), replicas)
                    if name == "kafka":
                        # A new, empty log must say so (infra/k8s-local/deps/kafka.yaml), else labels are lost.
                        assert broker_cluster_id() != log_before, log_before
                        # The new broker has no topics: the project again, as a starting trainer sends it.
                        run_in_test_pod(NAMESPACE, RELEASE, SETTINGS, "project", project_script())
                    loads.labels_flow("labels accepted again")
                    time.sleep(3)  # traffic on the replacement
                    print(f"    {victim} replaced")
                broken += loads.report(f"kill {name}", kill=True)

            loads.step = "upgrade"
            with step(f"helm upgrade --wait to image tag {NEW_TAG} under load"):
                new_images = tag_images(TAG, NEW_TAG)
                out = helm(
                    "upgrade", RELEASE, CHART, "-n", NAMESPACE, "--reuse-values",
                    "--set", f"image.tag={NEW_TAG}", "--wait", "--timeout", "300s",
                    timeout=360, check=False,
                )  # fmt: skip
                assert out.returncode == 0, out.stdout + out.stderr + describe_failures(NAMESPACE)
                running = [p for p in pods(f"app.kubernetes.io/instance={RELEASE}") if ready(p)]
                images = [c["image"] for p in running for c in p["spec"]["containers"]]
                ours = [i for i in images if "/flywheel-" in i]
                assert ours and all(i.endswith(f":{NEW_TAG}") for i in ours), images
                loads.labels_flow("labels accepted after the upgrade")
                time.sleep(3)
            broken += loads.report("upgrade", kill=False)
        sent = loads.labels_sent
        with step(f"every one of the {sent} labels in the lake, once"):
            try:
                wait_until("the lake has every label", lambda: lake_live(lake, operator) >= sent, timeout_s=180)
            finally:
                live, distinct, rows = lake_counts(lake, operator)
                total = Tally()
                for t in loads.tallies.values():
                    for field in ("sent", "answered", "failed", "failed_twice"):
                        setattr(total, field, getattr(total, field) + getattr(t, field))
                print(
                    f"    predictions: {total.sent} sent, {total.answered} answered, {total.failed} failed "
                    f"({total.failed_twice} twice)\n"
                    f"    labels: {sent} sent, {live} in the lake, {sent - live} lost, {distinct - sent} duplicated "
                    f"({rows} rows in files: {rows - distinct} re-deliveries dropped on read)"
                )
            assert live == sent, (live, sent, broken)
            assert distinct == sent, (distinct, sent, broken)
        assert not broken, broken
        print(f"    wall time so far: {time.monotonic() - t0:.0f} s")
    finally:
        with step("namespace removed, volumes back in the pool, the new tag dropped"):
            untag_images(new_images)
            remove_namespace(NAMESPACE, RELEASE)
