"""Fixtures for the deployment checks: helm and kubectl from .tools/bin (make k8s-tools), rendered manifests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "flywheel"
TOOLS = ROOT / ".tools" / "bin"
VALUE_SETS = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))
OVERLAYS = ["base", "overlays/dev", "overlays/gpu"]


def _tool(name: str) -> Path:
    path = TOOLS / name
    if not path.exists():
        subprocess.run([str(ROOT / "infra" / "tools" / "fetch_k8s_tools.sh")], check=True, timeout=600)
    return path


@pytest.fixture(scope="session")
def helm() -> Path:
    return _tool("helm")


@pytest.fixture(scope="session")
def kubectl() -> Path:
    return _tool("kubectl")


def load_docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def render_set(helm: Path, *settings: str, values: str = "default-values.yaml") -> list[dict]:
    """`helm template` of the chart with ci/`values` and each `--set` of `settings`: its documents."""
    args = [str(helm), "template", "rel", str(CHART), "--namespace", "flywheel", "-f", str(CHART / "ci" / values)]
    for setting in settings:
        args += ["--set", setting]
    out = subprocess.run(args, check=True, capture_output=True, text=True, timeout=120)
    return load_docs(out.stdout)


def render_refused(helm: Path, *settings: str) -> str:
    """`helm template` with these `--set`s must fail: its stderr (the message a user would read)."""
    args = [str(helm), "template", "rel", str(CHART)]
    for setting in settings:
        args += ["--set", setting]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0, f"helm template accepted {settings}"
    return out.stderr


def render_chart(helm: Path, values_file: str) -> list[dict]:
    out = subprocess.run(
        [str(helm), "template", "rel", str(CHART), "--namespace", "flywheel", "-f", str(CHART / "ci" / values_file)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return load_docs(out.stdout)


def make_k8s_secrets() -> Path:
    """k8s/base/secrets.env (infra/tools/k8s_secrets.py, the step the base documents), made once."""
    subprocess.run([sys.executable, str(ROOT / "infra" / "tools" / "k8s_secrets.py")], check=True, timeout=60)
    return ROOT / "k8s" / "base" / "secrets.env"


def render_kustomize(kubectl: Path, overlay: str) -> list[dict]:
    make_k8s_secrets()
    out = subprocess.run(
        [str(kubectl), "kustomize", str(ROOT / "k8s" / overlay)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return load_docs(out.stdout)
