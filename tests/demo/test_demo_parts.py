"""The demo's building blocks against the real parsers they feed (the whole story runs in CI as
`make demo DEMO_ARGS=--quick`, which starts every process)."""

from __future__ import annotations

import numpy as np

from services.cli.demo import verdict
from services.cli.demo.data import DEMO_SHIFT, Digits, label_studio_payload, raw_label
from services.cli.demo.endpoints import Endpoints
from services.devstack.supervisor import Component
from services.ingest.label_studio import parse_webhook
from services.preprocessing import png_to_features
from services.preprocessing.shifts import apply_shift


def test_label_studio_payload_is_what_ingest_parses() -> None:
    d = Digits.load(n_labels=20)
    batch = parse_webhook(label_studio_payload(d.label_x[:5], d.label_y[:5], 1000, "ls-test"))
    assert [i.label for i in batch.inputs] == [str(y) for y in d.label_y[:5]]
    assert [i.example_id for i in batch.inputs] == [f"ls-test-{1000 + i}" for i in range(5)]
    # The PNG in the task decodes back to the same features (grey levels survive the round trip).
    assert np.allclose(png_to_features(batch.inputs[0].image), d.label_x[0], atol=1 / 255)
    assert not batch.ignored


def test_raw_label_and_shift() -> None:
    d = Digits.load(n_labels=20)
    event = raw_label(d.label_x[0], int(d.label_y[0]), "kafka-x")
    assert event.example_id == "kafka-x" and event.label == str(d.label_y[0]) and event.meta.event_id
    assert np.allclose(png_to_features(event.data), d.label_x[0], atol=1 / 255)
    x, y = d.shifted(50, seed=1)
    assert x.shape == (50, 64) and x.min() >= 0 and x.max() <= 1 and len(y) == 50
    rng = np.random.default_rng(0)
    assert not np.allclose(apply_shift(DEMO_SHIFT, d.traffic_x[:10], rng), d.traffic_x[:10])


def test_endpoints_from_runner_components() -> None:
    comps = [
        Component("kafka (tansu)", 1, "127.0.0.1:9000", "tcp://127.0.0.1:9000", "k.log", "broker"),
        Component("gateway", 2, "http 127.0.0.1:8080, grpc 127.0.0.1:8081", "", "g.log"),
        Component("monitor", 3, "http 127.0.0.1:8400", "", "m.log"),
        Component("prometheus", 4, "127.0.0.1:9090", "", "p.log", "metrics"),
    ]
    ep = Endpoints.from_components(comps)
    assert ep.kafka == "127.0.0.1:9000" and ep.prometheus == "http://127.0.0.1:9090"
    assert ep.http == {"gateway": "http://127.0.0.1:8080", "monitor": "http://127.0.0.1:8400"}
    assert ep.grpc == {"gateway": "127.0.0.1:8081"}


def test_verdict_fails_a_broken_story() -> None:
    good = {
        "labels_lost": 0,
        "baselines": {"majority": 0.1, "logistic_regression": 0.93},
        "v1_test_accuracy": 0.97,
        "drift_detected_after_events": 200,
        "dead_lettered": 3,
    }
    assert verdict(good) == 0
    assert verdict(good | {"labels_lost": 1}) == 1
    assert verdict(good | {"v1_test_accuracy": 0.9}) == 1
    assert verdict(good | {"drift_detected_after_events": None}) == 1
    assert verdict(good | {"dead_lettered": 0}) == 1
