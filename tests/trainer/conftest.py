"""Trainer fixtures: a digits snapshot in the lake's format, a registry database, one trained job."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.devstack.brokers import Broker, start_broker
from services.events import ensure_topics
from services.storage import Database, migrate
from services.trainer.data.sklearn_digits import write_digits_snapshot
from services.trainer.export import ExportOptions
from services.trainer.job_run import JobContext, JobOutcome, JobSpec, run_job
from services.trainer.registry import Registry
from services.trainer.tables import MIGRATIONS
from services.trainer.training.metrics import CombinedMetric
from tests.support.projects import job_project

COMBINED = "weighted:accuracy=0.5,macro_f1=0.5"
# Found by the coarse-to-fine search (bench/train); fixed here so the test is one deterministic run.
DIGITS_HP = {"lr": "0.001", "weight_decay": "0.0001", "augment_shift": "0"}


@pytest.fixture(scope="session")
def lake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lake")
    write_digits_snapshot(root, "snap-digits")
    return root


@pytest.fixture(scope="session")
def digits_uri(lake_root: Path) -> str:
    return (lake_root / "snapshots" / "snap-digits").as_uri()


@dataclass
class Trained:
    outcome: JobOutcome
    repo: Path
    registry: Registry
    spec: JobSpec


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, digits_uri: str) -> Iterator[Trained]:
    """One real training job on digits (small CNN), shared by the tests that inspect its results."""
    tmp = tmp_path_factory.mktemp("trained")
    url = f"sqlite:///{tmp / 'registry.db'}"
    migrate(url, [MIGRATIONS])
    db = Database(url)
    registry = Registry(db, repository_uri=(tmp / "models").as_uri())
    ctx = JobContext(
        repository=tmp / "models",
        reports=tmp / "reports",
        registry=registry,
        combined=CombinedMetric.parse(COMBINED),
        export=ExportOptions(exporter="torchscript"),
        threads=1,
        git_commit="test",
    )
    spec = JobSpec("job-digits", "digits", "mlp", "snap-digits", digits_uri, hyperparameters=DIGITS_HP, **job_project())
    yield Trained(run_job(spec, ctx), tmp / "models", registry, spec)
    db.close()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A Tansu broker for the trainer's service tests (one per module)."""
    b = start_broker("tansu", tmp_path_factory.mktemp("tansu"))
    ensure_topics(b.bootstrap)
    yield b
    b.stop()


def record_job_creations(httpserver, namespace: str) -> list[dict]:  # type: ignore[no-untyped-def]
    """A fake Kubernetes API server (pytest-httpserver) that accepts Job creations in `namespace`;
    returns the list each created Job's body is appended to. A real API server cannot run in these
    tests: tests/k8s covers the real cluster."""
    import json

    from werkzeug import Response

    created: list[dict] = []

    def create(request):  # type: ignore[no-untyped-def]
        body = json.loads(request.data)
        created.append(body)
        return Response(json.dumps({**body, "status": {}}), status=201, content_type="application/json")

    httpserver.expect_request(f"/apis/batch/v1/namespaces/{namespace}/jobs", method="POST").respond_with_handler(create)
    return created
