"""The demo's building blocks against the real parsers they feed (the whole story runs in CI as
`make demo DEMO_ARGS=--quick`, which starts every process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from services.cli.demo import verdict
from services.cli.demo.data import DEMO_SHIFT, Digits, label_studio_payload, raw_label
from services.cli.demo.endpoints import Endpoints
from services.devstack.credentials import StackCredentials
from services.devstack.supervisor import Component
from services.ingest.label_studio import parse_webhook
from services.preprocessing import png_to_features
from services.preprocessing.shifts import apply_shift
from services.projects import spec_sha256
from services.projects.catalog import Project
from tests.support.projects import example_spec


def test_label_studio_payload_is_what_ingest_parses() -> None:
    d = Digits.load(n_labels=20, seed=0)
    digits = example_spec("digits")
    project = Project(digits, 1, spec_sha256(digits))
    batch = parse_webhook(label_studio_payload(d.label_x[:5], d.label_y[:5], 1000, "ls-test"), project)
    assert [i.label for i in batch.inputs] == [str(y) for y in d.label_y[:5]]
    assert [i.example_id for i in batch.inputs] == [f"ls-test-{1000 + i}" for i in range(5)]
    # The PNG in the task decodes back to the same features (grey levels survive the round trip).
    assert np.allclose(png_to_features(batch.inputs[0].image), d.label_x[0], atol=1 / 255)
    assert not batch.ignored


def test_raw_label_and_shift() -> None:
    d = Digits.load(n_labels=20, seed=0)
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
    creds = StackCredentials.generate()
    ep = Endpoints.from_components(comps, creds)
    assert ep.kafka == "127.0.0.1:9000" and ep.prometheus == "http://127.0.0.1:9090"
    assert ep.client().headers["authorization"] == f"Bearer {creds.token('operator')}"
    assert ep.http == {"gateway": "http://127.0.0.1:8080", "monitor": "http://127.0.0.1:8400"}
    assert ep.grpc == {"gateway": "127.0.0.1:8081"}


def test_verdict_fails_a_broken_story() -> None:
    good = {
        "labels_lost": 0,
        "baselines": {"majority": 0.1, "logistic_regression": 0.93},
        "v1_test_accuracy": 0.97,
        "drift_detected_after_events": 200,
        "dead_lettered": 3,
        "clean_windows": 20,
        "clean_windows_drifted": 0,
    }
    assert verdict(good) == 0
    assert verdict(good | {"labels_lost": 1}) == 1
    assert verdict(good | {"v1_test_accuracy": 0.9}) == 1
    assert verdict(good | {"drift_detected_after_events": None}) == 1
    assert verdict(good | {"dead_lettered": 0}) == 1
    assert verdict(good | {"clean_windows_drifted": 1}) == 1  # one false alarm on clean traffic fails the story
    assert verdict(good | {"clean_windows": 0}) == 1  # false alarms must have been measured


def test_the_seed_decides_the_data() -> None:
    a, b, c = Digits.load(100, seed=1), Digits.load(100, seed=1), Digits.load(100, seed=2)
    assert np.array_equal(a.label_x, b.label_x) and a.run == b.run
    assert not np.array_equal(a.label_x, c.label_x)


def test_home_is_accepted_before_and_after_any_command() -> None:
    from services.cli.main import build_parser

    parser = build_parser()
    assert parser.parse_args(["--home", "a", "down"]).home == "a"
    assert parser.parse_args(["down", "--home", "b"]).home == "b"  # as the demo prints it
    assert parser.parse_args(["--home", "a", "status", "--home", "c"]).home == "c"
    assert parser.parse_args(["keys", "list", "--home", "d"]).home == "d"
    assert parser.parse_args(["demo", "--quick", "--home", "e"]).home == "e"
    assert parser.parse_args(["--home", "f", "demo"]).home == "f"
    assert parser.parse_args(["demo"]).home is None


def test_the_demo_uses_its_home_and_never_wipes_someone_elses(tmp_path: Path) -> None:
    """`flywheel --home DIR demo` runs in DIR, which it wipes first: so DIR must be new, empty or an
    earlier demo's; a folder of anything else is refused before anything starts."""
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    out = subprocess.run(
        [sys.executable, "-m", "services.cli", "--home", str(precious), "demo", "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "not a demo's home" in out.stdout and (precious / "notes.txt").read_text() == "keep me"
