"""Projects shipped as Helm values (issue 16): the chart writes each `projects.<name>` into a ConfigMap the
trainer mounts and registers at start; what it renders is a spec the trainer's own loader accepts,
equal to the project file it came from."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from services.projects import load_spec, load_spec_file, spec_json
from tests.deploy.conftest import CHART, ROOT, load_docs

DIGITS = ROOT / "examples" / "digits" / "project.yaml"


def render(helm: Path, tmp_path: Path, values: dict) -> list[dict]:
    extra = tmp_path / "values.yaml"
    extra.write_text(yaml.safe_dump(values))
    args = [str(helm), "template", "rel", str(CHART), "--namespace", "flywheel"]
    args += ["-f", str(CHART / "ci" / "default-values.yaml"), "-f", str(extra)]
    return load_docs(subprocess.run(args, check=True, capture_output=True, text=True, timeout=120).stdout)


def _named(docs: list[dict], kind: str, name: str) -> dict | None:
    return next((d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name), None)


def test_projects_values_reach_the_trainer_as_spec_files(helm: Path, tmp_path: Path) -> None:
    spec = yaml.safe_load(DIGITS.read_text())
    name = spec.pop("name")
    docs = render(helm, tmp_path, {"projects": {name: spec}})

    files = _named(docs, "ConfigMap", "rel-flywheel-projects")
    assert files is not None and set(files["data"]) == {"digits.yaml"}
    shipped = load_spec(files["data"]["digits.yaml"])
    assert spec_json(shipped) == spec_json(load_spec_file(DIGITS))  # the same project, name included

    trainer_env = _named(docs, "ConfigMap", "rel-flywheel-trainer")
    assert trainer_env is not None and trainer_env["data"]["FLYWHEEL_TRAINER_PROJECT_FILES"] == "/etc/flywheel/projects"
    trainer = _named(docs, "Deployment", "rel-flywheel-trainer")
    assert trainer is not None
    pod = trainer["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "trainer"]
    assert {"name": "projects", "mountPath": "/etc/flywheel/projects", "readOnly": True} in container["volumeMounts"]
    assert {"name": "projects", "configMap": {"name": "rel-flywheel-projects"}} in pod["volumes"]


def test_no_projects_no_files(helm: Path, tmp_path: Path) -> None:
    docs = render(helm, tmp_path, {"projects": {}})
    assert _named(docs, "ConfigMap", "rel-flywheel-projects") is None
    trainer_env = _named(docs, "ConfigMap", "rel-flywheel-trainer")
    assert trainer_env is not None and "FLYWHEEL_TRAINER_PROJECT_FILES" not in trainer_env["data"]
