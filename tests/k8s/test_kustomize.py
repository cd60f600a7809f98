"""The kustomize tree on the same cluster: the dev overlay applied, with the Secret that
infra/tools/k8s_secrets.py makes and the bundled PostgreSQL on the image built here, and passing the
same smoke test as `helm test` (the chart's test pod, rendered for the release name the base was
generated with), then deleted without leftovers. base and gpu are checked by the API server with a server-side dry run:
base asks for more CPU than this 2-CPU node has, gpu for a GPU node."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.k8s.conftest import (
    CHART,
    DEPS,
    ROOT,
    all_volumes_available,
    create_namespace,
    describe_failures,
    helm,
    kubectl,
    leftovers,
    start_deps,
    step,
    wait_until,
)

NAMESPACE = "flywheel-dev"  # k8s/overlays/dev
SERVICES = ["postgresql", "gateway", "ingest", "lake", "modelserver", "monitor", "trainer"]


def smoke_test_manifest() -> str:
    """The chart's `helm test` pod and its script, for the objects k8s/base names (release "flywheel")."""
    out = helm(
        "template", "flywheel", CHART, "-n", NAMESPACE, "--show-only", "templates/tests/test-smoke.yaml", timeout=120
    )
    return out.stdout


def make_secrets() -> None:
    """k8s/base/secrets.env, the Secret's values (random, made once per checkout): the documented step."""
    subprocess.run([sys.executable, str(ROOT / "infra" / "tools" / "k8s_secrets.py")], check=True, timeout=60)


def dev_overlay_here(folder: Path) -> Path:
    """k8s/overlays/dev as this cluster runs it: the bundled PostgreSQL on the image `make images` built
    (the base names the official one, which no registry serves here)."""
    make_secrets()
    overlay = os.path.relpath(ROOT / "k8s" / "overlays" / "dev", folder)
    (folder / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{overlay}]\n"
        'images: [{name: postgres, newName: flywheel.local/postgresql, newTag: "15"}]\n'
    )
    return folder


def pod_phase(name: str) -> str:
    out = kubectl("-n", NAMESPACE, "get", "pod", name, "-o", "jsonpath={.status.phase}", check=False)
    return out.stdout if out.stdout in ("Succeeded", "Failed") else ""


@pytest.mark.timeout(2400)
def test_dev_overlay_passes_the_smoke_test(cluster: str) -> None:
    with step("namespace and Kafka (PostgreSQL comes with the chart)"):
        create_namespace(NAMESPACE)
        start_deps(NAMESPACE)
    overlay = dev_overlay_here(Path(tempfile.mkdtemp(prefix="flywheel-dev-overlay-")))
    try:
        with step("kubectl apply -k k8s/overlays/dev, every deployment available"):
            kubectl("apply", "-k", overlay)
            for name in SERVICES:
                out = kubectl(
                    "-n",
                    NAMESPACE,
                    "rollout",
                    "status",
                    f"deployment/flywheel-flywheel-{name}",
                    "--timeout=600s",
                    timeout=620,
                    check=False,
                )
                assert out.returncode == 0, out.stdout + out.stderr + describe_failures(NAMESPACE)
        with step("the smoke test of helm test, as a pod"):
            manifest = smoke_test_manifest()
            kubectl("apply", "-n", NAMESPACE, "-f", "-", stdin=manifest)
            pod = "flywheel-flywheel-test-smoke"
            phase = wait_until("the smoke test pod finished", lambda: pod_phase(pod), timeout_s=600, interval_s=3)
            logs = kubectl("-n", NAMESPACE, "logs", pod).stdout
            print(logs)
            assert phase == "Succeeded", logs + describe_failures(NAMESPACE)
            assert "all checks passed" in logs
            kubectl("delete", "-n", NAMESPACE, "-f", "-", "--wait=true", stdin=manifest)
        with step("kubectl delete -k leaves nothing behind"):
            kubectl("delete", "-k", overlay, "--wait=true", timeout=300)
            wait_until(
                "the overlay's objects gone", lambda: not leftovers(NAMESPACE, "app.kubernetes.io/part-of=flywheel")
            )
    finally:
        with step("namespace removed, volumes back in the pool"):
            kubectl("delete", "-k", overlay, "--ignore-not-found", "--wait=true", check=False, timeout=300)
            kubectl("delete", "-n", NAMESPACE, "-k", DEPS, "--ignore-not-found", "--wait=true", check=False)
            kubectl("delete", "namespace", NAMESPACE, "--wait=true", timeout=300)
            wait_until("every local volume available again", all_volumes_available, timeout_s=120, interval_s=3)
            shutil.rmtree(overlay, ignore_errors=True)


def test_base_and_gpu_overlays_pass_the_api_servers_validation(cluster: str) -> None:
    """A server-side dry run: the API server validates and defaults every object, admission included."""
    make_secrets()
    create_namespace("flywheel")
    try:
        for overlay in ("base", "overlays/gpu"):
            with step(f"kubectl apply -k k8s/{overlay} --dry-run=server"):
                out = kubectl("apply", "-k", ROOT / "k8s" / overlay, "--dry-run=server")
                assert "(server dry run)" in out.stdout
    finally:
        kubectl("delete", "namespace", "flywheel", "--wait=true", timeout=300)
