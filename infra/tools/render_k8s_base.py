"""Regenerate k8s/base from the Helm chart's defaults (run after changing the chart; tests/deploy checks it).

The chart's Secret is left out: Helm generates it at install, and a kustomize base that carried one
would publish it. k8s/base builds it instead with a secretGenerator from secrets.env, which
infra/tools/k8s_secrets.py makes (random, per checkout, never committed).

.venv/bin/python infra/tools/render_k8s_base.py
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "k8s" / "base"
HEADER = "# Generated from charts/flywheel by infra/tools/render_k8s_base.py; do not edit by hand.\n"
SECRET = "flywheel-flywheel-secrets"


def is_helm_test(doc: dict) -> bool:
    return (doc["metadata"].get("annotations") or {}).get("helm.sh/hook") == "test"


def render() -> dict[str, str]:
    out = subprocess.run(
        [
            str(ROOT / ".tools/bin/helm"),
            "template",
            "flywheel",
            str(ROOT / "charts/flywheel"),
            "--namespace",
            "flywheel",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    files: dict[str, str] = {}
    for doc in yaml.safe_load_all(out):
        if not doc or is_helm_test(doc):  # `helm test` has no kustomize equivalent (tests/k8s runs it there)
            continue
        if doc["kind"] == "Secret":  # random at each render: made by infra/tools/k8s_secrets.py instead
            assert doc["metadata"]["name"] == SECRET, doc["metadata"]["name"]
            continue
        md = doc["metadata"]
        for labels in (
            md.get("labels", {}),
            doc.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {}),
        ):
            labels.pop("helm.sh/chart", None)
            labels.pop("app.kubernetes.io/managed-by", None)
        if doc["kind"] == "Deployment":
            doc["spec"]["template"]["metadata"].pop("annotations", None)
        short = md["name"].removeprefix("flywheel-flywheel-").removeprefix("flywheel-flywheel")
        files[f"{doc['kind'].lower()}-{short}.yaml"] = HEADER + yaml.safe_dump(doc, sort_keys=False)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": "flywheel",
        "labels": [{"pairs": {"app.kubernetes.io/managed-by": "kustomize"}}],
        "resources": sorted(files),
        # Run infra/tools/k8s_secrets.py first: without secrets.env nothing builds.
        "secretGenerator": [
            {
                "name": SECRET,
                "envs": ["secrets.env"],
                "options": {
                    "disableNameSuffixHash": True,
                    "labels": {"app.kubernetes.io/part-of": "flywheel", "app.kubernetes.io/instance": "flywheel"},
                },
            }
        ],
    }
    files["kustomization.yaml"] = HEADER + yaml.safe_dump(kustomization, sort_keys=False)
    return files


def main() -> None:
    for old in BASE.glob("*.yaml"):
        old.unlink()
    BASE.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (BASE / name).write_text(text)


if __name__ == "__main__":
    main()
