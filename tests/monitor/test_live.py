"""A real monitor process, a real broker and Debian's Prometheus with the repository's config and rules.

Two models get the same amount of traffic: one shifted (added noise), one not. Prometheus scrapes
the monitor through the runner's file_sd mechanism and evaluates the repo's alert rules: the drift
alert fires for the shifted model, through /api/v1/alerts, and never for the unshifted one. The
closed loop is checked on the real broker: lasting drift publishes DriftAlerts on flywheel.drift
and exactly one TrainRequest per cooldown on flywheel.train.requests.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from bench.drift.traffic import DigitsTraffic, inversion, noise, prior_weights
from services.devstack.brokers import Broker
from services.devstack.ports import free_port
from services.devstack.supervisor import Component, _terminate, start_prometheus
from services.events import EventProducer, new_meta
from services.events.topics import DRIFT, PREDICTIONS, TRAIN_REQUESTS
from services.genproto.flywheel.v1 import events_pb2 as ev
from tests.monitor.conftest import SNAPSHOT, MonitorProcess, publish_model, read_all, send_predictions
from tests.support.credentials import operator
from tests.support.required import require_binary
from tests.support.waiting import wait_until

EVENTS = 1000


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Component]]:
    require_binary("prometheus", "apt-get install prometheus")
    started: list[Component] = []

    def start(targets: dict[str, str]) -> Component:
        comp = start_prometheus(tmp_path / "prom-home", targets, free_port())
        assert comp is not None
        started.append(comp)
        return comp

    yield start
    for comp in started:
        _terminate(comp.pid, 30)


def _alerts(prom: Component) -> list[dict]:
    body = httpx.get(f"http://{prom.address}/api/v1/alerts", timeout=5).json()
    return body["data"]["alerts"]


def _query(prom: Component, expr: str) -> list[dict]:
    body = httpx.get(f"http://{prom.address}/api/v1/query", params={"query": expr}, timeout=5).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_shifted_traffic_fires_the_drift_alert_in_prometheus_and_unshifted_does_not(
    tansu: Broker,
    traffic: DigitsTraffic,
    start_monitor: Callable[..., MonitorProcess],
    prometheus: Callable[[dict[str, str]], Component],
) -> None:
    run = uuid.uuid4().hex[:6]
    shifted, steady = f"shifted-{run}", f"steady-{run}"
    monitor = start_monitor(tansu.bootstrap)
    prom = prometheus({"monitor": monitor.address})
    for model in (shifted, steady):
        publish_model(tansu.bootstrap, model)
    send_predictions(tansu.bootstrap, traffic, steady, EVENTS, seed=1)
    send_predictions(tansu.bootstrap, traffic, shifted, EVENTS, seed=2, shift=noise(0.2))

    def drift_firing() -> list[dict]:
        return [
            a
            for a in _alerts(prom)
            if a["labels"].get("alertname") == "FlywheelDriftPersisting" and a["state"] == "firing"
        ]

    firing = wait_until(drift_firing, 120, proc=monitor.proc, interval_s=1.0, message="drift alert firing")
    assert {a["labels"]["model"] for a in firing} == {shifted}
    assert firing[0]["labels"]["job"] == "monitor" and firing[0]["labels"]["version"] == "1"

    # Everything the steady model got has been tested and scraped; it never persisted, never alerted.
    wait_until(
        lambda: [
            r
            for r in _query(prom, f'flywheel_monitor_predictions_total{{model="{steady}"}}')
            if float(r["value"][1]) == EVENTS
        ],
        60,
        interval_s=1.0,
        message="steady predictions scraped",
    )
    windows = _query(prom, f'sum(flywheel_monitor_windows_total{{model="{steady}", window="count"}})')
    assert windows and float(windows[0]["value"][1]) >= (EVENTS - 200) / 50
    persisted = _query(prom, f'max_over_time(flywheel_monitor_drift_persisting{{model="{steady}"}}[10m])')
    assert persisted and all(float(r["value"][1]) == 0 for r in persisted)
    assert not [a for a in _alerts(prom) if a["labels"].get("model") == steady]
    # The per-feature exports are there for both models.
    share = _query(prom, f'flywheel_monitor_drifted_share{{model="{shifted}", window="count"}}')
    assert share and float(share[0]["value"][1]) > 0.2
    p = _query(prom, f'flywheel_monitor_drift_p_value{{model="{shifted}", feature="hf_energy", test="ks"}}')
    assert p and float(p[0]["value"][1]) < 1e-6


def test_lasting_drift_publishes_alerts_and_one_train_request_per_cooldown(
    kafka: Broker, traffic: DigitsTraffic, start_monitor: Callable[..., MonitorProcess]
) -> None:
    model = f"loop-{uuid.uuid4().hex[:6]}"
    group = f"monitor-{uuid.uuid4().hex[:8]}"
    # The shares asserted below count the 64 raw pixel tests (+ class priors); the default "auto"
    # tests 9 image statistics instead, where the same noise drifts 2 of 10 tests.
    settings = {"alert_repeat_s": 0, "train_cooldown_s": 3600, "train_budget_s": 120, "group": group}
    settings["features"] = "raw"
    settings["train_hyperparameters"] = "lr=0.001,width=64"
    monitor = start_monitor(kafka.bootstrap, **settings)
    publish_model(kafka.bootstrap, model)
    # Bad input is dead-lettered and the monitor keeps going: bytes that are no event at once; a log
    # with 10 features once the monitor knows that v1 takes 64 (its reference, loaded by the first
    # tested window; before that it cannot tell, so that one is sent after the traffic below).
    bad = EventProducer(kafka.bootstrap)
    bad.send_raw(PREDICTIONS.name, b"not a protobuf", key=model.encode())
    bad.flush()
    send_predictions(kafka.bootstrap, traffic, model, 800, seed=3, shift=noise(0.2))

    def ours(topic_message: type, raw: bytes) -> bool:
        msg = topic_message()
        msg.ParseFromString(raw)
        return msg.model == model

    # Every window after the third drifted one alerts (alert_repeat_s=0); wait until the monitor
    # has published them all, i.e. its alert counter matches what is on the topic.
    wait_until(
        lambda: monitor.metric("flywheel_monitor_predictions_total", model=model) == 800,
        90,
        proc=monitor.proc,
        interval_s=0.5,
        message="predictions observed",
    )
    bad.send(
        PREDICTIONS.name,
        ev.PredictionLog(meta=new_meta("test"), model=model, model_version="1", input_features=[0.5] * 10),
    )
    bad.flush()

    def published_alerts() -> list[ev.DriftAlert]:
        raws = read_all(kafka.bootstrap, DRIFT.name, lambda v: ours(ev.DriftAlert, v))
        counted = monitor.metric("flywheel_monitor_drift_alerts_total", model=model)
        return [_parse(ev.DriftAlert, r) for r in raws] if raws and len(raws) >= counted >= 3 else []

    alerts = wait_until(published_alerts, 60, proc=monitor.proc, interval_s=0.5, message="drift alerts published")
    assert len({a.meta.event_id for a in alerts}) >= 3
    first = alerts[0]
    assert first.snapshot_id == SNAPSHOT and first.model_version == "1" and first.windows >= 3
    # a window of 200 predictions; drawn with replacement, the repeats are tested once
    assert 150 <= first.sample_count <= 200 and first.drifted_share > 0.2
    assert {f.test for f in first.features} <= {"ks", "chi2"} and all(f.drifted for f in first.features)

    requests = [
        _parse(ev.TrainRequest, r)
        for r in read_all(kafka.bootstrap, TRAIN_REQUESTS.name, lambda v: ours(ev.TrainRequest, v))
    ]
    assert len(requests) == 1, f"{len(requests)} TrainRequests for {len(alerts)} alerts within one cooldown"
    req = requests[0]
    assert req.snapshot_id == "" and req.caused_by == first.meta.event_id and req.budget_s == 120
    assert dict(req.hyperparameters) == {"lr": "0.001", "width": "64"}
    assert monitor.metric("flywheel_monitor_train_requests_total", model=model, outcome="cooldown") >= 2
    wait_until(
        lambda: monitor.metric("flywheel_events_dead_lettered_total", topic=PREDICTIONS.name) >= 2,
        30,
        proc=monitor.proc,
        message="both bad prediction logs dead-lettered",
    )

    # A restarted monitor keeps the cooldown: it reads back the TrainRequests it already sent.
    monitor.proc.send_signal(signal.SIGTERM)
    assert monitor.proc.wait(60) == 0
    monitor = start_monitor(kafka.bootstrap, **settings)
    send_predictions(kafka.bootstrap, traffic, model, 800, seed=4, shift=noise(0.2))
    wait_until(
        lambda: monitor.metric("flywheel_monitor_train_requests_total", model=model, outcome="cooldown") >= 1,
        90,
        proc=monitor.proc,
        interval_s=0.5,
        message="an alert after the restart, held back by the cooldown",
    )
    wait_until(lambda: len(published_alerts()) > len(alerts), 60, proc=monitor.proc, message="new alerts published")
    requests = read_all(kafka.bootstrap, TRAIN_REQUESTS.name, lambda v: ours(ev.TrainRequest, v))
    assert len(requests) == 1
    assert monitor.metric("flywheel_monitor_train_requests_total", model=model, outcome="sent") == 0


def _parse(cls: type, raw: bytes):
    msg = cls()
    msg.ParseFromString(raw)
    return msg


def test_synthetic_traffic_is_left_out_and_counted(
    tansu: Broker, traffic: DigitsTraffic, start_monitor: Callable[..., MonitorProcess]
) -> None:
    """A load test of shifted inputs marked synthetic tests no window and raises nothing; the monitor
    counts what it left out, so nothing disappears silently."""
    model = f"synthetic-{uuid.uuid4().hex[:6]}"
    monitor = start_monitor(tansu.bootstrap, persist_windows=1)
    publish_model(tansu.bootstrap, model)
    send_predictions(tansu.bootstrap, traffic, model, 600, seed=5, shift=noise(0.2), synthetic=True)
    send_predictions(tansu.bootstrap, traffic, model, 300, seed=6)  # then production traffic, unshifted
    wait_until(
        lambda: monitor.metric("flywheel_monitor_predictions_total", model=model) == 300,
        90,
        proc=monitor.proc,
        interval_s=0.5,
        message="production predictions observed",
    )
    assert monitor.metric("flywheel_monitor_predictions_ignored_total", reason="synthetic") == 600
    assert monitor.metric("flywheel_monitor_windows_total", model=model, verdict="drifted") == 0
    assert monitor.metric("flywheel_monitor_windows_total", model=model, verdict="ok") >= 2
    assert monitor.metric("flywheel_monitor_drift_alerts_total", model=model) == 0


def test_a_larger_drift_breaks_through_the_cooldown_and_every_decision_is_visible(
    tansu: Broker, traffic: DigitsTraffic, start_monitor: Callable[..., MonitorProcess]
) -> None:
    """A mild drift (a class-prior shift: a few of the window's tests) sends a TrainRequest; the
    inversion that follows inside the cooldown drifts most tests, so it is sent too (escalated);
    GET /v1/retraining shows both requests and the suppressed ones, with the reason."""
    model = f"escalate-{uuid.uuid4().hex[:6]}"
    # "raw": the mild/larger shares below count the 64 pixel tests (see the test above)
    monitor = start_monitor(tansu.bootstrap, persist_windows=1, alert_repeat_s=0, train_cooldown_s=3600, features="raw")
    publish_model(tansu.bootstrap, model)
    send_predictions(tansu.bootstrap, traffic, model, 400, seed=7, class_weights=prior_weights(1.0))
    first = wait_until(
        lambda: _requests(tansu.bootstrap, model), 90, proc=monitor.proc, interval_s=0.5, message="first TrainRequest"
    )
    assert len(first) == 1 and first[0].model_version == "1" and 0 < first[0].drifted_share < 0.2
    send_predictions(tansu.bootstrap, traffic, model, 400, seed=8, shift=inversion(1.0))
    both = wait_until(
        lambda: (r := _requests(tansu.bootstrap, model)) and len(r) >= 2 and r,
        90,
        proc=monitor.proc,
        interval_s=0.5,
        message="escalated TrainRequest",
    )
    assert len(both) == 2 and both[1].drifted_share >= 2 * both[0].drifted_share
    assert monitor.metric("flywheel_monitor_train_requests_total", model=model, outcome="escalated") == 1
    status = httpx.get(f"http://{monitor.address}/v1/retraining", headers=operator(), timeout=5).json()
    mine = next(s for s in status if s["model"] == model)
    assert mine["version"] == "1" and mine["sent"] == 2 and mine["suppressed"].get("cooldown", 0) >= 1
    assert "cooldown" in mine["last_suppressed_reason"]


def _requests(bootstrap: str, model: str) -> list[ev.TrainRequest]:
    raws = read_all(bootstrap, TRAIN_REQUESTS.name)
    return [r for r in (_parse(ev.TrainRequest, raw) for raw in raws) if r.model == model]
