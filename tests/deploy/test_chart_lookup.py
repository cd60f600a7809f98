"""The bundled S3 server's keys survive `helm upgrade`: the chart reads them back from the installed
Secret with `lookup`, checked without a cluster.

`helm template --dry-run=server` renders the way an upgrade does, asking the API server for what
`lookup` names. No Kubernetes API server can run here, so a fake one on 127.0.0.1 answers: discovery
for the kinds the chart renders, the installed Secret (owned by the release, as Helm leaves it), and
404 for everything else. tests/k8s/test_s3.py checks the same on a real cluster.
"""

from __future__ import annotations

import base64
import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.deploy.conftest import CHART, load_docs

RESOURCES = {
    "v1": {
        "secrets": "Secret",
        "configmaps": "ConfigMap",
        "services": "Service",
        "persistentvolumeclaims": "PersistentVolumeClaim",
        "pods": "Pod",
        "serviceaccounts": "ServiceAccount",
    },
    "apps/v1": {"deployments": "Deployment"},
    "networking.k8s.io/v1": {"networkpolicies": "NetworkPolicy"},
    "policy/v1": {"poddisruptionbudgets": "PodDisruptionBudget"},
    "autoscaling/v2": {"horizontalpodautoscalers": "HorizontalPodAutoscaler"},
    "rbac.authorization.k8s.io/v1": {"roles": "Role", "rolebindings": "RoleBinding"},
}
KEYS_SECRET = "/api/v1/namespaces/flywheel/secrets/rel-flywheel-s3"


class FakeApi(ThreadingHTTPServer):
    def __init__(self, secret: dict[str, str] | None) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.secret = secret
        self.asked: list[str] = []


class Handler(BaseHTTPRequestHandler):
    server: FakeApi

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        self.server.asked.append(path)
        body = self.answer(path)
        data = json.dumps(body or {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404}).encode()
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def answer(self, path: str) -> dict | None:
        if path == "/version":
            return {"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"}
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if path == "/apis":
            groups = [
                {"name": gv.split("/")[0], "versions": [{"groupVersion": gv, "version": gv.split("/")[1]}]}
                for gv in RESOURCES
                if "/" in gv
            ]
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
        gv = path.removeprefix("/api/").removeprefix("/apis/")
        if gv in RESOURCES:
            resources = [
                {"name": plural, "singularName": kind.lower(), "namespaced": True, "kind": kind, "verbs": ["get"]}
                for plural, kind in RESOURCES[gv].items()
            ]
            return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}
        if path == KEYS_SECRET and self.server.secret is not None:
            return {
                "kind": "Secret",
                "apiVersion": "v1",
                # Helm's ownership marks: the Secret is the release's own, as an install leaves it.
                "metadata": {
                    "name": "rel-flywheel-s3",
                    "namespace": "flywheel",
                    "labels": {"app.kubernetes.io/managed-by": "Helm"},
                    "annotations": {"meta.helm.sh/release-name": "rel", "meta.helm.sh/release-namespace": "flywheel"},
                },
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in self.server.secret.items()},
            }
        return None

    def log_message(self, *args: object) -> None:
        pass


def fake_api(secret: dict[str, str] | None) -> Iterator[FakeApi]:
    server = FakeApi(secret)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def render_upgrade(helm: Path, api: FakeApi, tmp_path: Path) -> list[dict]:
    """`helm template --dry-run=server` of ci/s3-values.yaml against `api`: the keys Secret it renders."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: fake, cluster: {{server: 'http://127.0.0.1:{api.server_address[1]}'}}}}]\n"
        "users: [{name: fake, user: {}}]\n"
        "contexts: [{name: fake, context: {cluster: fake, user: fake, namespace: flywheel}}]\n"
        "current-context: fake\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "KUBECONFIG": str(kubeconfig),
        **{f"HELM_{d}_HOME": str(tmp_path / d.lower()) for d in ("CACHE", "CONFIG", "DATA")},
    }
    args = [str(helm), "template", "rel", str(CHART), "-n", "flywheel", "-f", str(CHART / "ci" / "s3-values.yaml")]
    # The fake serves no OpenAPI documents: the render is what is checked, not server-side validation.
    args += ["--dry-run=server", "--disable-openapi-validation"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    return [d for d in load_docs(out.stdout) if d["kind"] == "Secret" and d["metadata"]["name"] == "rel-flywheel-s3"]


@pytest.fixture
def installed() -> Iterator[FakeApi]:
    yield from fake_api({"AWS_ACCESS_KEY_ID": "FWINSTALLEDKEYID", "AWS_SECRET_ACCESS_KEY": "installed-secret-key-0123"})


@pytest.fixture
def fresh() -> Iterator[FakeApi]:
    yield from fake_api(None)


def test_an_upgrade_keeps_the_installed_s3_keys(helm: Path, installed: FakeApi, tmp_path: Path) -> None:
    (secret,) = render_upgrade(helm, installed, tmp_path)
    assert secret["stringData"] == {
        "AWS_ACCESS_KEY_ID": "FWINSTALLEDKEYID",
        "AWS_SECRET_ACCESS_KEY": "installed-secret-key-0123",
    }
    assert KEYS_SECRET in installed.asked


def test_an_install_without_the_secret_generates_keys(helm: Path, fresh: FakeApi, tmp_path: Path) -> None:
    (secret,) = render_upgrade(helm, fresh, tmp_path)
    assert KEYS_SECRET in fresh.asked
    keys = secret["stringData"]
    assert len(keys["AWS_ACCESS_KEY_ID"]) >= 16 and len(keys["AWS_SECRET_ACCESS_KEY"]) >= 40
