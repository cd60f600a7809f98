"""The chart on a real cluster: `helm install --wait`, `helm test` (every service healthy and scraped,
locked to callers without the Secret's tokens, a model the test writes served through the gateway), the
flywheel's story on that install (tests/k8s/story.py: labels in over HTTP and Kafka with none lost or
stored twice, training Jobs, their logs and TTL, serving, drift, retraining, the canary), an upgrade that
keeps every generated credential, and `helm uninstall` leaving only the volume the chart keeps on purpose.
Every credential is read from the Secret the chart generated: none is known."""

from __future__ import annotations

import json

import pytest

from tests.k8s import conftest
from tests.k8s.conftest import (
    CHART,
    LOCAL_VALUES,
    create_namespace,
    describe_failures,
    helm,
    kubectl,
    leftovers,
    remove_namespace,
    start_deps,
    step,
    wait_until,
)
from tests.k8s.story import Credentials, run_story

NAMESPACE = "flywheel-helm"
RELEASE = "flywheel"


def secret_value(key: str) -> str:
    return conftest.secret_value(NAMESPACE, RELEASE, key)


def secret_values() -> dict[str, str]:
    return conftest.secret_values(NAMESPACE, RELEASE)


@pytest.mark.timeout(2400)
def test_install_test_upgrade_uninstall(cluster: str) -> None:
    with step("namespace and Kafka (PostgreSQL comes with the chart)"):
        create_namespace(NAMESPACE)
        start_deps(NAMESPACE)
    try:
        with step("helm install --wait"):
            out = helm(
                "install",
                RELEASE,
                CHART,
                "-n",
                NAMESPACE,
                "-f",
                LOCAL_VALUES,
                "--wait",
                "--timeout",
                "10m",
                check=False,
            )
            assert out.returncode == 0, out.stdout + out.stderr + describe_failures(NAMESPACE)
        with step("helm test"):
            out = helm("test", RELEASE, "-n", NAMESPACE, "--logs", "--timeout", "10m", check=False)
            print(out.stdout)
            assert out.returncode == 0, out.stdout + out.stderr + describe_failures(NAMESPACE)
            assert "all checks passed" in out.stdout
        with step("the story: labels → lake → Jobs → served → drift → retrained → canary"):
            creds = Credentials(
                api_key=secret_value("api-keys").split(",")[0],
                webhook=secret_value("webhook-token"),
                labeler=secret_value("token-labeler"),
                operator=secret_value("token-operator"),
            )
            numbers = run_story(NAMESPACE, RELEASE, creds)
            print("    the story's numbers: " + json.dumps(numbers), flush=True)
        with step("the model server restarts ready beside the trainer's TorchScript export"):
            kubectl("-n", NAMESPACE, "rollout", "restart", f"deployment/{RELEASE}-flywheel-modelserver")
            out = kubectl(
                "-n", NAMESPACE, "rollout", "status", f"deployment/{RELEASE}-flywheel-modelserver", "--timeout=300s",
                timeout=320, check=False,
            )  # fmt: skip
            assert out.returncode == 0, out.stdout + out.stderr + describe_failures(NAMESPACE)
            # Training Jobs are the trainer's, not Helm's (they go after their TTL): removed here.
            kubectl("-n", NAMESPACE, "delete", "jobs", "-l", "app.kubernetes.io/component=training-job", "--wait=true")
        with step("helm upgrade keeps every generated credential"):
            before = secret_values()
            assert len(before["webhook-token"]) >= 32 and len(before["token-operator"]) >= 32
            helm("upgrade", RELEASE, CHART, "-n", NAMESPACE, "-f", LOCAL_VALUES, "--wait", "--timeout", "10m")
            assert secret_values() == before
        with step("helm uninstall leaves nothing but the kept volume"):
            helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout", "5m")
            selector = f"app.kubernetes.io/instance={RELEASE}"
            kept = [f"persistentvolumeclaim/{RELEASE}-flywheel-data"]  # helm.sh/resource-policy: keep
            wait_until("only the kept volume left", lambda: leftovers(NAMESPACE, selector) == kept)
            kubectl("-n", NAMESPACE, "delete", "pvc", f"{RELEASE}-flywheel-data", "--wait=true")
    finally:
        with step("namespace removed, volumes back in the pool"):
            remove_namespace(NAMESPACE, RELEASE)
