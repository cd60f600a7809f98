"""Several model-server replicas behind the gateway, on a real cluster (issue 19): the chart points the
gateway at the model server's headless Service, so it balances every request over every Ready pod.

Installed with two model servers (one gateway, whose /metrics counts attempts per model-server
address: flywheel_gateway_upstream_requests_total{addr}), a model of the test's own published
through the model repository and flywheel.models (the chart's smoke-test script, in a pod), then:

1. 300 predictions through the gateway: each of the 2 pods gets 120-180 of them;
2. scaled to 3: once the new pod is Ready and the gateway has resolved it, 300 more: each of the 3
   gets 70-130 of them (differences of the counters);
3. scaled back to 2 while requests keep coming (from before the scale until the gateway has dropped
   the removed pod's address): not one fails.

The split of each phase is printed (make test-k8s runs pytest with -s). Services the test does not
use (ingest, lake, monitor, trainer) are left out of the release: fewer pods on the 2-CPU node.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterable

import httpx
import pytest

from tests.k8s.conftest import (
    create_namespace,
    describe_failures,
    install,
    kubectl,
    port_forward,
    remove_namespace,
    secret_value,
    start_deps,
    step,
    wait_until,
)
from tests.k8s.serving import MODEL, Client, publish_model, wait_serving

NAMESPACE = "flywheel-scaleout"
RELEASE = "flywheel"
FULL = f"{RELEASE}-flywheel"
MODELSERVER = f"deployment/{FULL}-modelserver"
POD_SELECTOR = f"app.kubernetes.io/name=modelserver,app.kubernetes.io/instance={RELEASE}"
HTTP_PORT = 8000  # services.modelserver.ports.http: the port of every address the gateway resolves
GATEWAY_PORT = 8080  # services.gateway.ports.http: predictions and /metrics
SETTINGS = [
    "services.modelserver.replicas=2",
    "services.gateway.replicas=1",  # one gateway: its /metrics sees every request the test sends
    "services.gateway.modelserverDiscovery=headless",
    # The balance phases send as fast as 4 threads get answers (~300/s on a fast host): above the
    # default 100/s per key, and a 429 there would measure the rate limit, not the balancing.
    "services.gateway.rateLimit.perSecond=2000",
    "services.gateway.rateLimit.burst=2000",
    "services.ingest.enabled=false",
    "services.lake.enabled=false",
    "services.monitor.enabled=false",
    "services.trainer.enabled=false",
    "grafana.dashboards.enabled=false",
]
REQUESTS = 300
PACE_S = 0.03  # phase 3's pause between a thread's requests
# How long the gateway may take to see a change of pods: its re-resolution (5 s) plus CoreDNS's
# answer cache (the local cluster's Corefile: ttl 30 and cache 30).
RESOLVE_S = 75.0
UPSTREAM = re.compile(r'^flywheel_gateway_upstream_requests_total\{[^}]*addr="([^"]+)"[^}]*\} (\S+)$')


def ready_pod_addrs() -> set[str]:
    """IP:port of every model-server pod that is Ready and not terminating: what the headless
    Service's name answers."""
    items = json.loads(kubectl("-n", NAMESPACE, "get", "pods", "-l", POD_SELECTOR, "-o", "json").stdout)["items"]
    addrs = set()
    for pod in items:
        conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
        if conditions.get("Ready") == "True" and not pod["metadata"].get("deletionTimestamp"):
            addrs.add(f"{pod['status']['podIP']}:{HTTP_PORT}")
    return addrs


def upstream_counts(gateway: str) -> dict[str, float]:
    """flywheel_gateway_upstream_requests_total by address; a series appears when the gateway's lookup
    finds the address (at 0) and leaves with it."""
    text = httpx.get(gateway + "/metrics", timeout=10).text
    counts = {}
    for line in text.splitlines():
        if (m := UPSTREAM.match(line)) and m.group(1) != "unresolved":
            counts[m.group(1)] = float(m.group(2))
    return counts


def gateway_sees(gateway: str, addrs: set[str], client: Client | None) -> list[str]:
    """Until the gateway balances over exactly these addresses (its lookup caught up with the pods).
    The gateway re-resolves only when it picks an address, so with `client` each check first sends a
    prediction (None: the caller keeps traffic going); the failures of those predictions."""
    failures: list[str] = []

    def caught_up() -> bool:
        if client is not None and (why := client.predict()):
            failures.append(why)
        return set(upstream_counts(gateway)) == addrs

    wait_until(f"the gateway resolving {sorted(addrs)}", caught_up, timeout_s=RESOLVE_S, interval_s=1)
    return failures


def split(before: dict[str, float], after: dict[str, float], addrs: Iterable[str]) -> dict[str, int]:
    return {a: int(after.get(a, 0.0) - before.get(a, 0.0)) for a in sorted(addrs)}


def balanced_phase(name: str, client: Client, gateway: str, addrs: set[str], low: int, high: int) -> None:
    """REQUESTS predictions: none fails, and each of `addrs` gets between `low` and `high` of them."""
    before = upstream_counts(gateway)
    failed = client.send(REQUESTS)
    counts = split(before, upstream_counts(gateway), addrs)
    print(f"    {name} split: {counts} (failed: {len(failed)})")
    assert not failed, failed[:5]
    assert sum(counts.values()) >= REQUESTS, counts
    assert all(low <= n <= high for n in counts.values()), counts


def scale(replicas: int) -> None:
    kubectl("-n", NAMESPACE, "scale", MODELSERVER, f"--replicas={replicas}")
    out = kubectl(
        "-n", NAMESPACE, "rollout", "status", MODELSERVER, "--timeout=180s", timeout=200, check=False
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr + describe_failures(NAMESPACE)
    wait_until(f"{replicas} model-server pods Ready", lambda: len(ready_pod_addrs()) == replicas, timeout_s=120)


@pytest.mark.timeout(900)
def test_gateway_balances_over_every_model_server_replica(cluster: str) -> None:
    with step("namespace and Kafka (PostgreSQL comes with the chart)"):
        create_namespace(NAMESPACE)
        start_deps(NAMESPACE)
    try:
        with step("helm install --wait: 2 model servers, 1 gateway on the headless Service"):
            install(NAMESPACE, RELEASE, SETTINGS)
            addr = kubectl(
                "-n", NAMESPACE, "get", "configmap", f"{FULL}-gateway",
                "-o", "jsonpath={.data.FLYWHEEL_GATEWAY_MODELSERVER_HTTP_ADDR}",
            ).stdout  # fmt: skip
            assert addr == f"{FULL}-modelserver-pods:{HTTP_PORT}", addr
            cluster_ip = kubectl(
                "-n", NAMESPACE, "get", "service", f"{FULL}-modelserver-pods", "-o", "jsonpath={.spec.clusterIP}"
            ).stdout
            assert cluster_ip == "None", cluster_ip
        with step(f"{MODEL} published (model repository + flywheel.models)"):
            publish_model(NAMESPACE, RELEASE, SETTINGS)
        api_key = secret_value(NAMESPACE, RELEASE, "api-keys").split(",")[0]
        with port_forward(NAMESPACE, f"{FULL}-gateway", GATEWAY_PORT) as gateway:
            client = Client(gateway, api_key)
            try:
                with step("both replicas serve the model, the gateway resolves both"):
                    two = ready_pod_addrs()
                    assert len(two) == 2, two
                    # Its first requests make the gateway look the name up (until then: `unresolved`).
                    gateway_sees(gateway, two, client)
                    # 20 answers in a row: both pods have loaded the announced version.
                    wait_serving(client, f"the gateway serving {MODEL} from both pods")

                with step(f"phase 1: {REQUESTS} predictions over 2 replicas"):
                    balanced_phase("phase 1", client, gateway, two, 120, 180)

                with step("scale to 3: the new pod Ready, then resolved by the gateway"):
                    t0 = time.monotonic()
                    scale(3)
                    three = ready_pod_addrs()
                    assert len(three) == 3 and two < three, (two, three)
                    failed = gateway_sees(gateway, three, client)
                    took = time.monotonic() - t0
                    print(f"    new pod {sorted(three - two)} in the gateway's set {took:.0f} s after the scale")
                    assert not failed, failed[:5]  # scaling up breaks no request either

                with step(f"phase 2: {REQUESTS} predictions over 3 replicas"):
                    balanced_phase("phase 2", client, gateway, three, 70, 130)

                with step("scale back to 2 under load: no request fails"):
                    ok, failures, stop = [0], [], threading.Event()

                    def load() -> None:
                        # Paced (two threads at most ~33/s each): a steady trickle across the scale-down.
                        while not stop.wait(PACE_S):
                            why = client.predict()
                            if why:
                                failures.append(why)
                            else:
                                ok[0] += 1

                    before = upstream_counts(gateway)
                    threads = [threading.Thread(target=load, daemon=True) for _ in range(2)]
                    for t in threads:
                        t.start()
                    try:
                        time.sleep(2)  # traffic on all 3 before one goes
                        scale(2)
                        remaining = ready_pod_addrs()
                        assert len(remaining) == 2 and remaining < three, (three, remaining)
                        # Traffic goes on until the gateway's lookup has dropped the removed pod: the
                        # window where DNS may still name it is the one that must not fail.
                        gateway_sees(gateway, remaining, None)
                        time.sleep(2)
                    finally:
                        stop.set()
                        for t in threads:
                            t.join(60)
                    after = upstream_counts(gateway)
                    removed = three - remaining
                    print(
                        f"    phase 3: {ok[0]} answered, {len(failures)} failed; removed {sorted(removed)}; "
                        f"split over the remaining: {split(before, after, remaining)}"
                    )
                    assert ok[0] > 0
                    assert not failures, failures[:5]
            finally:
                client.close()
    finally:
        with step("namespace removed, volumes back in the pool"):
            remove_namespace(NAMESPACE, RELEASE)
