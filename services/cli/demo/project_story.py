"""`flywheel demo --project PATH`: one turn of the flywheel for any project, through public APIs only.

register the spec → labels in (native API and Label Studio webhooks; image files fetched from a
Label Studio-compatible server by reference; bad inputs refused naming the field; a task whose file
is gone dead-lettered) → snapshot → train against baselines → promote through the gate → served,
predictions through the gateway → clean traffic (no false alarm) → shifted traffic (drift found).

Several stories can run on one stack (one per project): each talks only about its own project, so
two projects side by side keep their own models, snapshots and drift.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.console import Console

from services.cli.demo.endpoints import DemoError, Endpoints, check, scrape, wait_for
from services.cli.demo.project_data import Example, ProjectData, shift_description
from services.devstack.label_studio import LabelStudioFiles
from services.projects import spec_json

BATCH = 50
LS_PROJECT = 42  # the Label Studio project id the demo's tasks belong to


@dataclass
class ProjectConfig:
    n_labels: int = 1200
    clean_predictions: int = 600
    max_shifted: int = 4000
    seed: int = 0
    timeout_s: float = 300.0
    search_trials: int = 0


@dataclass
class ProjectResults:
    values: dict[str, Any] = field(default_factory=dict)

    def __setitem__(self, key: str, value: Any) -> None:
        self.values[key] = value

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)


class ProjectStory:
    def __init__(
        self,
        data: ProjectData,
        ep: Endpoints,
        api_key: str,
        webhook_token: str,
        console: Console,
        cfg: ProjectConfig,
        label_studio: LabelStudioFiles | None = None,
    ) -> None:
        self.data = data
        self.spec = data.spec
        self.name = data.spec.name
        self.ep = ep
        self.key = api_key
        self.webhook_token = webhook_token
        self.console = console
        self.cfg = cfg
        self.ls = label_studio
        self.results = ProjectResults()
        self.results["project"] = self.name
        self.results["kind"] = self.spec.kind
        self.labelled, self.traffic = data.split(cfg.n_labels, cfg.seed)
        self.http = ep.client(timeout_s=60)  # as the operator; gateway and webhook calls pass their own

    # -- helpers ------------------------------------------------------------------------------------
    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def say(self, msg: str) -> None:
        self.console.print(f"  [dim]·[/dim] [bold]{self.name}[/bold]: {msg}", highlight=False)

    def predict(self, examples: list[Example]) -> dict:
        body = {"instances": [self.data.instance(e) for e in examples]}
        resp = self.http.post(f"{self.ep.http['gateway']}/v1/models/{self.name}:predict", json=body, headers=self.auth)
        return check(resp, f"{self.name} :predict")

    def lake_labels(self) -> int:
        dist = check(
            self.http.get(f"{self.ep.http['lake']}/v1/labels/distribution", params={"project": self.name}), "lake"
        )
        return sum(int(v) for v in dist.values())

    def monitor(self, metric: str, **labels: str) -> float:
        return scrape(self.ep.http["monitor"], metric, model=self.name, **labels)

    def close(self) -> None:
        self.http.close()

    def run(self) -> ProjectResults:
        for step in (self.register, self.ingest, self.train, self.serve, self.drift):
            step()
        return self.results

    # -- 1. the project -------------------------------------------------------------------------
    def register(self) -> None:
        body = json.loads(spec_json(self.spec))
        resp = self.http.post(f"{self.ep.http['trainer']}/v1/projects", json=body)
        project = check(resp, f"register project {self.name}")
        self.say(
            f"project v{project['version']} registered: {self.spec.kind} input, {len(self.spec.labels)} labels, "
            f"family {project['family']}"
        )
        wait_for(
            lambda: any(
                p["name"] == self.name for p in check(self.http.get(f"{self.ep.http['ingest']}/v1/projects"), "ingest")
            ),
            60,
            f"ingest to learn project {self.name} from flywheel.projects",
        )
        self.results["project_version"] = project["version"]

    # -- 2. labels in -------------------------------------------------------------------------------
    def ingest(self) -> None:
        half = len(self.labelled) // 2
        native, studio = self.labelled[:half], self.labelled[half:]
        url = f"{self.ep.http['ingest']}/v1/labels"
        accepted = 0
        for start in range(0, len(native), BATCH):
            items = [self.data.label_item(e) for e in native[start : start + BATCH]]
            body = check(self.http.post(url, json={"project": self.name, "labels": items}), "POST /v1/labels")
            accepted += int(body["accepted"])
        queued = self._label_studio(studio)
        self.say(
            f"{accepted} labels through POST /v1/labels; {len(studio)} as Label Studio webhooks"
            + (f" ({queued} referencing files ingest fetched from Label Studio)" if queued else "")
        )
        refused = self._bad_inputs()
        dead = self._gone_file()
        sent = len(self.labelled)
        landed = wait_for(
            lambda: (n := self.lake_labels()) >= sent and n,
            self.cfg.timeout_s,
            f"{sent} {self.name} labels in the lake (see {self.ep.logs.get('ingest')} and {self.ep.logs.get('lake')})",
        )
        self.say(
            f"lake holds {landed} labels of {self.name} (sent {sent}); {refused} bad inputs refused with their field"
        )
        self.results["labels_sent"] = sent
        self.results["labels_in_lake"] = landed
        self.results["labels_lost"] = max(0, sent - landed)
        self.results["bad_inputs_refused"] = refused
        self.results["fetches_dead_lettered"] = dead

    def _label_studio(self, examples: list[Example]) -> int:
        hook = f"{self.ep.http['ingest']}/webhooks/label-studio/{self.name}"
        headers = {"Authorization": f"Token {self.webhook_token}"}
        control = self.spec.label_studio.control or "label"
        queued = 0
        for start in range(0, len(examples), BATCH):
            chunk = examples[start : start + BATCH]
            tasks, annotations = [], []
            for i, ex in enumerate(chunk):
                task_id = 100_000 + start + i
                reference = ""
                if self.spec.kind == "image":
                    if self.ls is None:
                        raise DemoError("an image project's Label Studio step needs the Label Studio file server")
                    reference = self.ls.upload(LS_PROJECT, ex.name or f"{ex.example_id}.png", ex.input)
                tasks.append({"id": task_id, "data": self.data.task_data(ex, reference)})
                annotations.append(_annotation(task_id, control, ex.label))
            payload = {
                "action": "ANNOTATIONS_CREATED",
                "annotation": annotations,
                "task": tasks,
                "project": _ls_project(control, self.spec.labels),
            }
            body = check(self.http.post(hook, json=payload, headers=headers), "Label Studio webhook")
            queued += int(body.get("queued", 0))
        return queued

    def _bad_inputs(self) -> int:
        """Inputs a careless client sends: each must be refused with 400 naming the field, nothing stored."""
        good = self.data.label_item(self.labelled[0])
        cases: list[tuple[dict, str]] = [({**good, "label": "no-such-label"}, "labels[0].label")]
        kind = self.spec.kind
        if kind == "tabular":
            column = self.spec.input.columns[0]  # type: ignore[union-attr]
            cases.append(({**good, "row": {**good["row"], column.name: "oops"}}, f"labels[0].row.{column.name}"))
            cases.append(({**good, "row": {**good["row"], "no_such_column": 1}}, "labels[0].row.no_such_column"))
        elif kind == "text":
            cases.append(({**good, "text": ""}, "labels[0].text"))
        else:
            cases.append(({**good, "image": "bm90IGFuIGltYWdl"}, "labels[0].image"))  # "not an image"
        refused = 0
        for body, field_name in cases:
            resp = self.http.post(f"{self.ep.http['ingest']}/v1/labels", json={"project": self.name, "labels": [body]})
            if resp.status_code != 400 or resp.json().get("field") != field_name:
                raise DemoError(
                    f"a bad input was not refused naming {field_name}: {resp.status_code} {resp.text[:200]}"
                )
            refused += 1
        return refused

    def _gone_file(self) -> int:
        """A Label Studio task whose file is gone: ingest answers at once, then dead-letters it with the reason."""
        if self.spec.kind != "image" or self.ls is None:
            return 0
        hook = f"{self.ep.http['ingest']}/webhooks/label-studio/{self.name}"
        control = self.spec.label_studio.control or "label"
        ex = self.labelled[0]
        task = {"id": 999_999, "data": {**self.data.task_data(ex, f"/data/upload/{LS_PROJECT}/0000dead-gone.jpg")}}
        task["data"]["example_id"] = f"{ex.example_id}-gone"
        payload = {
            "action": "ANNOTATION_CREATED",
            "annotation": {**_annotation(999_999, control, ex.label), "task": 999_999},
            "task": task,
            "project": _ls_project(control, self.spec.labels),
        }
        check(self.http.post(hook, json=payload, headers={"Authorization": f"Token {self.webhook_token}"}), "webhook")
        dead = wait_for(
            lambda: [
                f
                for f in check(
                    self.http.get(f"{self.ep.http['ingest']}/v1/fetches", params={"state": "dead"}), "fetches"
                )
                if f["project"] == self.name
            ],
            60,
            "the task with a missing file to be dead-lettered",
        )
        self.say(f"a task whose file is gone was dead-lettered: {dead[0]['reason']}")
        return len(dead)

    # -- 3. snapshot, train, promote ----------------------------------------------------------------
    def train(self) -> None:
        split = {"train": 0.7, "validation": 0.15, "test": 0.15, "salt": f"demo-{self.cfg.seed}"}
        body = {"project": self.name, "split": split, "description": f"flywheel demo: {self.name}"}
        snap = wait_for(
            lambda: (
                (r := self.http.post(f"{self.ep.http['lake']}/v1/snapshots", json=body)).status_code < 400 and r.json()
            ),
            60,
            f"a snapshot of {self.name} (the lake learns projects from flywheel.projects)",
        )
        self.say(f"snapshot {snap['snapshot_id']}: " + ", ".join(f"{k} {v}" for k, v in snap["rows_per_split"].items()))
        job = {"project": self.name, "snapshot_id": snap["snapshot_id"]}
        if self.cfg.search_trials:
            job["search"] = {"trials": self.cfg.search_trials, "rounds": 2}
        submitted = check(self.http.post(f"{self.ep.http['trainer']}/v1/jobs", json=job), "submit training job")
        url = f"{self.ep.http['trainer']}/v1/jobs/{submitted['job_id']}"
        done = wait_for(
            lambda: (j := check(self.http.get(url), "job"))["state"] in ("succeeded", "failed", "cancelled") and j,
            self.cfg.timeout_s * 3,
            f"training {self.name} (see {self.ep.logs.get('trainer')})",
            every_s=1.0,
        )
        if done["state"] != "succeeded":
            raise DemoError(f"training {self.name} {done['state']}: {done.get('reason') or done.get('message')}")
        version = str(done["model_version"])
        versions = check(self.http.get(f"{self.ep.http['trainer']}/v1/models", params={"model": self.name}), "models")
        m = next(v["metrics"] for v in versions if str(v["version"]) == version)
        baselines = {
            k.removeprefix("baseline_").removesuffix("_test_accuracy"): v
            for k, v in m.items()
            if k.startswith("baseline_") and k.endswith("_test_accuracy")
        }
        self.say(
            f"v{version} ({done['model_family']}): test accuracy {m['test_accuracy']:.4f}; baselines "
            + ", ".join(f"{k} {v:.4f}" for k, v in baselines.items())
        )
        promote = f"{self.ep.http['trainer']}/v1/models/{self.name}/versions/{version}/promote"
        check(self.http.post(promote, json={"stage": "production"}), f"promote {self.name} v{version}")
        self.say(f"the gate let v{version} into production (it beats every baseline)")
        self.results["snapshot"] = snap["snapshot_id"]
        self.results["v1"] = version
        self.results["family"] = done["model_family"]
        self.results["v1_test_accuracy"] = m["test_accuracy"]
        self.results["baselines"] = baselines
        self.results["margin_over_best_baseline"] = m["test_combined"] - m["baseline_best_test_combined"]

    # -- 4. served ----------------------------------------------------------------------------------
    def serve(self) -> None:
        version = self.results.get("v1")
        ready = f"{self.ep.http['gateway']}/v2/models/{self.name}/versions/{version}/ready"
        wait_for(
            lambda: self.http.get(ready, headers=self.auth).status_code == 200, 120, f"{self.name} v{version} served"
        )
        n = min(200, len(self.traffic))
        correct = 0
        for start in range(0, n, 20):
            chunk = self.traffic[start : min(n, start + 20)]
            answer = self.predict(chunk)
            correct += sum(p["label"] == e.label for p, e in zip(answer["predictions"], chunk, strict=True))
        self.say(f":predict with native inputs: {n} held-out examples, accuracy {correct / n:.4f}")
        self.results["live_accuracy"] = correct / n

    # -- 5. drift -----------------------------------------------------------------------------------
    def drift(self) -> None:
        rng_seed = self.cfg.seed * 1000 + 17
        import numpy as np

        rng = np.random.default_rng(rng_seed)
        clean = [self.traffic[int(i)] for i in rng.integers(0, len(self.traffic), self.cfg.clean_predictions)]
        before = self.monitor("flywheel_monitor_predictions_total")
        for start in range(0, len(clean), 25):
            self.predict(clean[start : start + 25])
        wait_for(
            lambda: self.monitor("flywheel_monitor_predictions_total") >= before + len(clean),
            60,
            f"the monitor to read {len(clean)} clean predictions of {self.name}",
        )
        windows = self.monitor("flywheel_monitor_windows_total")
        drifted = self.monitor("flywheel_monitor_windows_total", verdict="drifted")
        colour = "green" if not drifted else "red"
        self.say(f"clean traffic: {int(windows)} windows tested, [{colour}]{int(drifted)} false alarms[/{colour}]")
        self.results["clean_windows"] = int(windows)
        self.results["clean_windows_drifted"] = int(drifted)

        shifted = self.data.shifted(self.traffic, self.cfg.seed * 1000 + 23)
        drifted0 = self.monitor("flywheel_monitor_windows_total", window="count", verdict="drifted")
        started = time.monotonic()
        sent = correct = 0
        detected: int | None = None
        while sent < self.cfg.max_shifted and time.monotonic() - started < self.cfg.timeout_s:
            chunk = [shifted[(sent + i) % len(shifted)] for i in range(25)]
            answer = self.predict(chunk)
            correct += sum(p["label"] == e.label for p, e in zip(answer["predictions"], chunk, strict=True))
            sent += len(chunk)
            persisting = self.monitor("flywheel_monitor_drift_persisting", window="count")
            now_drifted = self.monitor("flywheel_monitor_windows_total", window="count", verdict="drifted")
            if persisting >= 1 and now_drifted > drifted0:
                detected = sent
                break
            time.sleep(0.05)
        if detected is None:
            raise DemoError(f"the monitor did not flag drift in {self.name} within {sent} shifted predictions")
        tests = _drifted_tests(self.ep.http["monitor"], self.name)
        self.say(
            f"shift ({shift_description(self.spec.kind)}): drift persisting after {detected} predictions "
            f"({time.monotonic() - started:.1f} s); accuracy on shifted inputs {correct / sent:.3f}; "
            f"drifted: {', '.join(tests[:6]) or '—'}"
        )
        self.results["drift_detected_after_events"] = detected
        self.results["shifted_accuracy"] = correct / sent
        self.results["drifted_tests"] = tests


def verdict(v: dict[str, Any]) -> list[str]:
    """What breaks a project's story (the demo fails on any)."""
    problems = []
    if v.get("labels_lost"):
        problems.append(f"{v['labels_lost']} labels lost between ingest and the lake")
    if (v.get("margin_over_best_baseline") or 0) <= 0:
        problems.append("the model does not beat its baselines")
    if not v.get("clean_windows"):
        problems.append("no window of clean traffic was tested, so false alarms were not measured")
    if v.get("clean_windows_drifted"):
        problems.append(f"{v['clean_windows_drifted']} of {v['clean_windows']} clean windows were flagged as drifted")
    if not v.get("drift_detected_after_events"):
        problems.append("drift was not detected")
    return problems


def _annotation(task_id: int, control: str, label: str) -> dict[str, Any]:
    return {
        "id": task_id,
        "task": task_id,
        "result": [{"from_name": control, "to_name": "input", "type": "choices", "value": {"choices": [label]}}],
        "was_cancelled": False,
        "completed_by": 1,
        "created_at": "2026-11-30T00:00:00Z",
        "updated_at": "2026-11-30T00:00:00Z",
    }


def _ls_project(control: str, labels: tuple[str, ...]) -> dict[str, Any]:
    """What Label Studio puts in a webhook's `project`: its id and the parsed labelling config."""
    return {
        "id": LS_PROJECT,
        "title": "flywheel demo",
        "parsed_label_config": {control: {"type": "Choices", "to_name": ["input"], "labels": list(labels)}},
    }


def _drifted_tests(monitor: str, model: str) -> list[str]:
    """The monitor's last window's tests that rejected: `feature (test)`."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{monitor}/metrics", timeout=5).text
    out = []
    for family in text_string_to_metric_families(text):
        if family.name != "flywheel_monitor_feature_drifted":
            continue
        for s in family.samples:
            if s.labels.get("model") == model and s.labels.get("window") == "count" and s.value >= 1:
                out.append(f"{s.labels.get('feature')} ({s.labels.get('test')})")
    return sorted(out)
