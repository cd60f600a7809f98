"""The example projects' specs (examples/*/project.yaml) and snapshots prepared for them, for tests."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from services.projects import ProjectSpec, load_spec_file, spec_json
from services.trainer.data import SnapshotData, load_snapshot
from services.trainer.data.inputs import ObjectReader, prepare

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@cache
def example_spec(name: str) -> ProjectSpec:
    return load_spec_file(EXAMPLES / name / "project.yaml")


def example_spec_file(name: str) -> Path:
    return EXAMPLES / name / "project.yaml"


def prepared(uri: str, spec: ProjectSpec | None = None, read_object: ObjectReader | None = None) -> SnapshotData:
    """A snapshot's examples as the project's model inputs (digits unless another spec is given)."""
    spec = spec or example_spec("digits")
    return prepare(load_snapshot(uri, labels=spec.labels), spec, read_object)


def job_project(spec: ProjectSpec | None = None, version: int = 1) -> dict[str, object]:
    """The JobSpec fields that name a project (digits unless another spec is given)."""
    spec = spec or example_spec("digits")
    return {"project": spec.name, "project_version": version, "project_spec": spec_json(spec)}


def publish_spec(bootstrap: str, spec: ProjectSpec, version: int = 1, **kafka: str) -> None:
    """Publish a project version on flywheel.projects, as the trainer's registry does (`kafka`: SASL/SSL
    client settings, for a broker that asks for them)."""
    from services.events import EventProducer
    from services.projects import spec_sha256
    from services.projects.catalog import Project, publish_project

    producer = EventProducer(bootstrap, client_id="test-projects", **kafka)
    try:
        publish_project(producer, Project(spec, version, spec_sha256(spec)), source="test")
    finally:
        producer.close()
