"""The chart's `rollout` block and disruption budgets: pods are replaced without a failed request.

Rendered with the real helm (tests/deploy/conftest.py); what the values schema and the chart's
checks refuse is refused by `helm template` itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.conftest import render_refused as refused
from tests.deploy.conftest import render_set as render

RECREATED = {"lake", "trainer"}
DRAINING = {"modelserver", "gateway"}  # the services with a drain_timeout_s setting


def deployments(docs: list[dict]) -> dict[str, dict]:
    return {
        d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]: d
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["name"] != "rel-flywheel-postgresql"
    }


def disruption_budgets(docs: list[dict]) -> set[str]:
    return {d["metadata"]["labels"]["app.kubernetes.io/name"] for d in docs if d["kind"] == "PodDisruptionBudget"}


@pytest.mark.parametrize("values", ["default-values.yaml", "triton-values.yaml", "local-cluster-values.yaml"])
def test_every_service_rolls_one_surged_pod_at_a_time_except_the_volume_owners(helm: Path, values: str) -> None:
    found = deployments(render(helm, values=values))
    assert set(found) == {"modelserver", "gateway", "ingest", "lake", "trainer", "monitor"}
    for name, d in found.items():
        strategy = d["spec"]["strategy"]
        if name in RECREATED:
            assert strategy == {"type": "Recreate"}, name
        else:
            assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}, name


def test_a_stopping_pod_sleeps_then_drains_within_its_grace_period(helm: Path) -> None:
    for name, d in deployments(render(helm)).items():
        spec = d["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        assert container["lifecycle"]["preStop"] == {"exec": {"command": ["sleep", "5"]}}, name
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        env = {e["name"]: e.get("value") for e in container["env"]}
        drain = env.get(f"FLYWHEEL_{name.upper()}_DRAIN_TIMEOUT_S")
        if name in DRAINING:
            assert drain == "25", name
            assert spec["terminationGracePeriodSeconds"] > 5 + 25, name
        else:
            assert drain is None, name
        assert spec["terminationGracePeriodSeconds"] == 35, name


def test_a_probe_waits_longer_than_the_checks_it_runs(helm: Path) -> None:
    """Ingest's /readyz asks the broker with a 2 s timeout (services/ingest/__main__.py broker_check):
    a probe giving up after the kubelet's default 1 s counts a slow broker answer on a loaded node as
    a failure."""
    for name, d in deployments(render(helm)).items():
        (container,) = d["spec"]["template"]["spec"]["containers"]
        assert container["readinessProbe"]["timeoutSeconds"] > 2, name
        assert container["livenessProbe"]["timeoutSeconds"] > 1, name


def test_the_rollout_values_reach_every_deployment(helm: Path) -> None:
    docs = render(
        helm,
        "rollout.preStopSleepSeconds=0",
        "rollout.drainSeconds=50",
        "rollout.terminationGracePeriodSeconds=60",
        "rollout.maxSurge=2",
        "rollout.recreate={lake}",
    )
    found = deployments(docs)
    assert found["trainer"]["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 2, "maxUnavailable": 0}
    for name, d in found.items():
        (container,) = d["spec"]["template"]["spec"]["containers"]
        assert "lifecycle" not in container, name  # no sleep asked: no hook
        assert d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 60
    gateway = found["gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "FLYWHEEL_GATEWAY_DRAIN_TIMEOUT_S", "value": "50"} in gateway["env"]


def test_disruption_budgets_only_for_services_that_run_more_than_one_pod(helm: Path) -> None:
    # Defaults: the model server and gateway scale with an HPA from 2; the rest run one pod.
    assert disruption_budgets(render(helm)) == {"modelserver", "gateway"}
    assert disruption_budgets(render(helm, values="local-cluster-values.yaml")) == set()
    # Replicas count where nothing scales; the HPA's minimum where one does; KEDA's for its consumers.
    assert disruption_budgets(render(helm, "services.ingest.replicas=3")) == {"modelserver", "gateway", "ingest"}
    assert disruption_budgets(render(helm, "services.gateway.autoscaling.minReplicas=1")) == {"modelserver"}
    keda = render(helm, "keda.enabled=true", "keda.minReplicas=2")
    assert disruption_budgets(keda) == {"modelserver", "gateway", "ingest", "lake", "monitor"}
    budget = next(d for d in render(helm) if d["kind"] == "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1


@pytest.mark.parametrize(
    ("sets", "says"),
    [
        (("rollout.drainSeconds=40",), "must exceed rollout.preStopSleepSeconds + rollout.drainSeconds"),
        (("rollout.terminationGracePeriodSeconds=30",), "must exceed rollout.preStopSleepSeconds"),
        (("services.gateway.pdb.minAvailable=2",), "services.gateway.pdb.minAvailable (2) must be below"),
        (("rollout.recreate={gateway,registry}",), "/rollout/recreate/1"),
        (("rollout.maxUnavailable=-1",), "/rollout/maxUnavailable"),
        (("rollout.preStopSleepSeconds=1000",), "/rollout/preStopSleepSeconds"),
        (("rollout.drainSecs=10",), "drainSecs"),
    ],
)
def test_bad_rollout_values_are_refused_with_the_reason(helm: Path, sets: tuple[str, ...], says: str) -> None:
    assert says in refused(helm, *sets)
