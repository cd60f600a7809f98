"""Tests on a real Kubernetes cluster: the local one of `make k8s-up` (infra/k8s-local), with the images
of `make images` in its containerd. They need root and minutes, so `make test` leaves them out and
`make test-k8s` runs them (it brings the cluster up, builds the images, runs these, takes it down).
With CI=true a cluster that does not answer is a failure, never a skip."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "flywheel"
DEPS = ROOT / "infra" / "k8s-local" / "deps"
VOLUMES = ROOT / "infra" / "k8s-local" / "volumes.sh"
LOCAL_VALUES = CHART / "ci" / "local-cluster-values.yaml"
KUBECTL = ROOT / ".tools" / "bin" / "kubectl"
HELM = ROOT / ".tools" / "bin" / "helm"
# The cluster's containerd (infra/k8s-local/lib.sh's CONTAINERD_SOCK and CTR): what the kubelet runs.
CTR = ("ctr", "--address", "/run/flywheel-k8s/containerd/containerd.sock", "--namespace", "k8s.io")

if os.environ.get("FLYWHEEL_K8S_TESTS") != "1":
    # `make test` runs without root or a cluster: these run only through `make test-k8s`.
    collect_ignore_glob = ["test_*.py"]


@contextmanager
def step(what: str) -> Iterator[None]:
    """Print a sub-step and its time (make test-k8s runs pytest with -s)."""
    t0 = time.monotonic()
    print(f"\n--- {what}", file=sys.stderr, flush=True)
    yield
    print(f"    {what}: {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)


def run(
    *cmd: str | Path, timeout: float = 600, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, input=stdin)
    if check and out.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} exited {out.returncode}:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
        )
    return out


def kubectl(
    *args: str | Path, timeout: float = 600, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return run(KUBECTL, *args, timeout=timeout, check=check, stdin=stdin)


def helm(*args: str | Path, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(HELM, *args, timeout=timeout, check=check)


@pytest.fixture(scope="session")
def cluster() -> str:
    """The cluster's API server answers; its kubeconfig is KUBECONFIG (make test-k8s sets it)."""
    kubeconfig = os.environ.get("KUBECONFIG", "")
    ready = bool(kubeconfig) and kubectl("get", "--raw", "/readyz", timeout=30, check=False).returncode == 0
    if not ready:
        message = f"no Kubernetes cluster answers (KUBECONFIG={kubeconfig!r}): run `make test-k8s`"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return kubeconfig


def wait_until(what: str, check, timeout_s: float = 180.0, interval_s: float = 2.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    result = None
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval_s)
    raise AssertionError(f"{what}: not after {timeout_s:.0f} s (last: {result!r})")


def create_namespace(name: str) -> None:
    kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=true", timeout=300)
    kubectl("create", "namespace", name)


def start_deps(namespace: str) -> None:
    """Kafka in the namespace, at the chart's default address (PostgreSQL comes with the chart)."""
    kubectl("apply", "-n", namespace, "-k", DEPS)
    for name in ("kafka",):
        out = kubectl(
            "-n", namespace, "rollout", "status", f"statefulset/{name}", "--timeout=300s", timeout=320, check=False
        )
        assert out.returncode == 0, out.stdout + out.stderr + describe_failures(namespace)


def install(
    namespace: str, release: str, settings: list[str], timeout_s: int = 360, value_files: Sequence[Path] = ()
) -> None:
    """`helm install --wait` of the chart with the local cluster's values, then `value_files`, and these `--set`s."""
    files = [a for f in (LOCAL_VALUES, *value_files) for a in ("-f", str(f))]
    sets = [a for s in settings for a in ("--set", s)]
    out = helm(
        "install", release, CHART, "-n", namespace, *files, *sets, "--wait", "--timeout", f"{timeout_s}s",
        timeout=timeout_s + 60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr + describe_failures(namespace)


def service_url(namespace: str, service: str, port: int) -> str:
    """The Service's ClusterIP, which the node (where the tests run) reaches through kube-proxy: unlike a
    port-forward, which holds one pod, it outlives pods being replaced."""
    ip = kubectl("-n", namespace, "get", "service", service, "-o", "jsonpath={.spec.clusterIP}").stdout
    assert ip and ip != "None", f"{service}: no ClusterIP ({ip!r})"
    return f"http://{ip}:{port}"


def tag_images(tag: str, new_tag: str) -> list[str]:
    """Every Flywheel service image of `tag` in the cluster's containerd also as `new_tag` (the same
    image under a new name: what `helm upgrade` to a new release sees); the new names."""
    names = run(*CTR, "images", "ls", "-q").stdout.split()
    ours = [n for n in names if "/flywheel-" in n and n.endswith(f":{tag}")]
    assert ours, f"no flywheel-* image tagged {tag} in the cluster's containerd: {names}"
    made = [n.removesuffix(tag) + new_tag for n in ours]
    for old, new in zip(ours, made, strict=True):
        run(*CTR, "images", "tag", "--force", old, new)
    return made


def untag_images(names: list[str]) -> None:
    if names:
        run(*CTR, "images", "rm", *names, check=False)


def describe_failures(namespace: str) -> str:
    """Pods that are not ready, with their events and the tail of their logs (for a failed wait)."""
    out = [kubectl("-n", namespace, "get", "pods", "-o", "wide", check=False).stdout]
    names = kubectl("-n", namespace, "get", "pods", "-o", "name", check=False).stdout.split()
    for pod in names:
        ready = kubectl(
            "-n", namespace, "get", pod, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False
        ).stdout
        if ready != "True":
            out.append(kubectl("-n", namespace, "describe", pod, check=False).stdout[-3000:])
            out.append(kubectl("-n", namespace, "logs", pod, "--all-containers", "--tail=40", check=False).stdout)
    return "\n".join(out)


def leftovers(namespace: str, selector: str) -> list[str]:
    kinds = ",".join(
        [
            "deployments",
            "replicasets",
            "pods",
            "services",
            "configmaps",
            "secrets",
            "persistentvolumeclaims",
            "serviceaccounts",
            "roles",
            "rolebindings",
            "networkpolicies",
            "poddisruptionbudgets",
            "horizontalpodautoscalers",
            "jobs",
        ]
    )
    out = kubectl("-n", namespace, "get", kinds, "-l", selector, "-o", "name", check=False)
    return out.stdout.split()


def all_volumes_available() -> bool:
    """Return released local volumes to the pool (infra/k8s-local/volumes.sh), then check none is taken."""
    run(VOLUMES, timeout=120)
    phases = kubectl("get", "pv", "-l", "flywheel.dev/local-volume=true", "-o", "jsonpath={.items[*].status.phase}")
    return set(phases.stdout.split()) == {"Available"}


def secret_values(namespace: str, release: str) -> dict[str, str]:
    """Every credential the chart generated into the release's Secret (none is known in advance)."""
    out = kubectl("-n", namespace, "get", "secret", f"{release}-flywheel-secrets", "-o", "json")
    return {k: base64.b64decode(v).decode() for k, v in json.loads(out.stdout)["data"].items()}


def secret_value(namespace: str, release: str, key: str) -> str:
    out = kubectl("-n", namespace, "get", "secret", f"{release}-flywheel-secrets", "-o", f"jsonpath={{.data.{key}}}")
    return base64.b64decode(out.stdout).decode()


def remove_namespace(namespace: str, release: str) -> None:
    """A chart test's `finally`: the release uninstalled, Kafka and the namespace deleted, the local
    volumes back in the pool (whatever the test got to)."""
    helm("uninstall", release, "-n", namespace, "--wait", check=False)
    kubectl("delete", "-n", namespace, "-k", DEPS, "--ignore-not-found", "--wait=true", check=False)
    kubectl("delete", "namespace", namespace, "--wait=true", timeout=300)
    wait_until("every local volume available again", all_volumes_available, timeout_s=120, interval_s=3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def port_forward(namespace: str, service: str, port: int) -> Iterator[str]:
    """`kubectl port-forward svc/<service>`: every connection goes to the one pod kubectl picked."""
    with port_forwards(namespace, service, port) as (local,):
        yield f"http://127.0.0.1:{local}"


@contextmanager
def port_forwards(namespace: str, service: str, *ports: int) -> Iterator[list[int]]:
    """One `kubectl port-forward svc/<service>` of several ports: the local ports, in order, once the
    first (HTTP) answers /healthz."""
    local = [free_port() for _ in ports]
    proc = subprocess.Popen(
        [
            str(KUBECTL),
            "-n",
            namespace,
            "port-forward",
            f"svc/{service}",
            *(f"{a}:{b}" for a, b in zip(local, ports, strict=True)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{local[0]}"
    try:
        wait_until(f"port-forward to {service}", lambda: _answers(url), timeout_s=30, interval_s=0.5)
        yield local
    finally:
        proc.terminate()
        proc.wait(10)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
