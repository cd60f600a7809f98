"""The chart and k8s/base do what SECURITY.md's "Kubernetes" section says (issue 15), checked on renders:

- no secret is published: values.yaml and the CI value sets hold none, every credential the chart's
  Secret holds is random per render (kept on upgrades by `lookup`, which tests/k8s proves on a cluster),
  no other rendered document carries one, and k8s/base has no Secret but a generator fed by
  infra/tools/k8s_secrets.py;
- each service gets its own token and admits exactly the callers of the local runner's matrix
  (services/devstack/stack.py), by digest, all through secretKeyRef; given values replace generated ones;
- NetworkPolicies admit only each service's callers, Prometheus only from its own namespace;
- TLS and Kafka security settings reach every pod, passwords by reference;
- training Jobs read the database URL from the Secret and run under an account with no permissions.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from services.devstack.credentials import IDENTITIES, StackCredentials
from services.devstack.stack import SERVICES
from tests.deploy.conftest import CHART, ROOT, VALUE_SETS, make_k8s_secrets, render_kustomize
from tests.deploy.conftest import render_refused as render_fails
from tests.deploy.conftest import render_set as render
from tests.deploy.test_chart_runs import env_of

NAMES = [spec.name for spec in SERVICES]
GIVEN_TOKENS = {identity: f"{identity}-token-given-by-the-operator-0123456789" for identity in IDENTITIES}
API_KEY = re.compile(r"^fwk_([A-Za-z0-9-]+)_([A-Za-z0-9-]{16,})$")
SECRET_KEYS = {
    "api-keys",
    "database-password",
    "database-url",
    "webhook-token",
    *(f"token-{identity}" for identity in IDENTITIES),
    *(f"trusted-callers-{name}" for name in NAMES),
}


def secret(docs: list[dict]) -> dict[str, str]:
    (doc,) = [d for d in docs if d["kind"] == "Secret"]
    return doc["stringData"]


def deployments(docs: list[dict]) -> dict[str, dict]:
    return {d["metadata"]["labels"]["app.kubernetes.io/name"]: d for d in docs if d["kind"] == "Deployment"}


def pod_spec(doc: dict) -> dict:
    return doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]


def env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def ref(entry: dict) -> dict:
    assert "value" not in entry, f"{entry['name']} is a literal"
    return entry["valueFrom"]["secretKeyRef"]


def policies(docs: list[dict]) -> dict[str, dict]:
    return {
        d["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]: d
        for d in docs
        if d["kind"] == "NetworkPolicy"
    }


# -- no published secret ---------------------------------------------------------------------------


@pytest.mark.parametrize("values", ["values.yaml", *(f"ci/{v}" for v in VALUE_SETS)])
def test_value_files_hold_no_secret(values: str) -> None:
    """Findings 2 and 15: no default API key, database password or token ships with the chart."""
    doc = yaml.safe_load((CHART / values).read_text()) or {}
    given = doc.get("secrets", {})
    for key in ("apiKeys", "databaseUrl", "webhookToken"):
        assert not given.get(key), f"{values}: secrets.{key} is set"
    assert not any((given.get("serviceTokens") or {}).values()), f"{values}: a service token is set"
    text = (CHART / values).read_text()
    assert not re.search(r"fwk_[A-Za-z0-9]+_[A-Za-z0-9-]{16,}", text), f"{values}: an API key"
    assert not re.search(r"://[^:/\s]+:[^@\s]+@", text), f"{values}: a URL with a password"


def test_every_credential_is_random_and_only_in_the_secret(helm: Path) -> None:
    first, second = render(helm), render(helm)
    a, b = secret(first), secret(second)
    assert set(a) == SECRET_KEYS
    for key in SECRET_KEYS - {"database-url", "trusted-callers-gateway"} - {f"trusted-callers-{n}" for n in NAMES}:
        assert a[key] != b[key], f"{key} is the same in two renders: a published secret"
    for identity in IDENTITIES:
        assert len(a[f"token-{identity}"]) >= 32
    assert len(a["webhook-token"]) >= 32 and len(a["database-password"]) >= 24
    key_id, key_secret = API_KEY.match(a["api-keys"]).groups()  # type: ignore[union-attr]
    assert "_" not in key_id and len(key_secret) >= 32
    assert a["database-url"] == (
        f"postgresql+psycopg://flywheel:{a['database-password']}@rel-flywheel-postgresql:5432/flywheel"
    )
    others = yaml.safe_dump_all([d for d in first if d["kind"] != "Secret"])
    for key in SECRET_KEYS - {f"trusted-callers-{n}" for n in NAMES}:
        assert a[key] not in others, f"the Secret's {key} appears in another document"


def test_kustomize_base_has_no_secret_but_a_generator(kubectl: Path) -> None:
    base = ROOT / "k8s" / "base"
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    assert not [p for p in base.glob("*.yaml") if yaml.safe_load(p.read_text()).get("kind") == "Secret"]
    (generator,) = kustomization["secretGenerator"]
    assert generator["envs"] == ["secrets.env"] and generator["name"] == "flywheel-flywheel-secrets"
    assert (
        "secrets.env"
        not in subprocess.run(
            ["git", "ls-files", "k8s/base"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    )
    for path in base.glob("*.yaml"):
        text = path.read_text()
        assert not re.search(r"fwk_[A-Za-z0-9]+_", text) and not re.search(r"://[^:/\s]+:[^@\s]+@", text), path
    # The generated file has the chart Secret's keys, and each service admits its callers' tokens.
    values = dict(line.split("=", 1) for line in make_k8s_secrets().read_text().splitlines() if line and line[0] != "#")
    assert set(values) == SECRET_KEYS
    made = StackCredentials({i: values[f"token-{i}"] for i in IDENTITIES}, values["api-keys"], "")
    for spec in SERVICES:
        assert values[f"trusted-callers-{spec.name}"] == made.trusted(*spec.callers), spec.name
    (doc,) = [d for d in render_kustomize(kubectl, "base") if d["kind"] == "Secret"]
    assert doc["metadata"]["name"] == "flywheel-flywheel-secrets" and set(doc["data"]) == SECRET_KEYS


# -- who calls whom --------------------------------------------------------------------------------


def test_each_service_has_its_token_and_admits_the_runners_callers(helm: Path) -> None:
    """The same matrix as `flywheel up` (services/devstack/stack.py): digests of the given tokens."""
    docs = render(helm, *(f"secrets.serviceTokens.{i}={t}" for i, t in GIVEN_TOKENS.items()))
    values = secret(docs)
    given = StackCredentials(GIVEN_TOKENS, "", "")
    for identity, token in GIVEN_TOKENS.items():
        assert values[f"token-{identity}"] == token
    found = deployments(docs)
    for spec in SERVICES:
        container = found[spec.name]["spec"]["template"]["spec"]["containers"][0]
        variables = env(container)
        trusted = ref(variables["FLYWHEEL_TRUSTED_CALLERS"])
        assert trusted == {"name": "rel-flywheel-secrets", "key": f"trusted-callers-{spec.name}"}
        assert values[trusted["key"]] == given.trusted(*spec.callers), spec.name
        if spec.identity:
            assert ref(variables["FLYWHEEL_SERVICE_TOKEN"]) == {
                "name": "rel-flywheel-secrets",
                "key": f"token-{spec.identity}",
            }
        else:
            assert "FLYWHEEL_SERVICE_TOKEN" not in variables, f"{spec.name} calls nobody: it holds no token"
    gateway = env(found["gateway"]["spec"]["template"]["spec"]["containers"][0])
    assert ref(gateway["FLYWHEEL_GATEWAY_BOOTSTRAP_KEYS"])["key"] == "api-keys"
    ingest = env(found["ingest"]["spec"]["template"]["spec"]["containers"][0])
    assert ref(ingest["FLYWHEEL_INGEST_WEBHOOK_TOKEN"])["key"] == "webhook-token"
    # Finding 3: label routes need the labeler's token, which only ingest admits.
    assert [s.name for s in SERVICES if "labeler" in s.callers] == ["ingest"]


def test_given_values_replace_generated_ones(helm: Path) -> None:
    key = "fwk_0123456789ab_given-secret-part-0123456789"
    url = "postgresql+psycopg://app:pw@db.example:5432/flywheel"
    docs = render(
        helm, f"secrets.apiKeys={key}", "secrets.webhookToken=given-webhook-token-0123456789abcdef",
        "postgresql.enabled=false", f"secrets.databaseUrl={url}",
    )  # fmt: skip
    values = secret(docs)
    assert values["api-keys"] == key and values["database-url"] == url
    assert values["webhook-token"] == "given-webhook-token-0123456789abcdef"
    assert "database-password" not in values
    assert not [d for d in docs if d["metadata"]["name"].endswith("-postgresql")]
    assert "postgresql.enabled=false needs secrets.databaseUrl" in render_fails(helm, "postgresql.enabled=false")


def test_an_existing_secret_is_used_as_it_is(helm: Path) -> None:
    docs = render(helm, "secrets.create=false", "secrets.existingSecret=mine")
    assert not [d for d in docs if d["kind"] == "Secret"]
    names = set()
    for d in docs:
        if d["kind"] in ("Deployment", "Pod"):
            for c in pod_spec(d)["containers"] + pod_spec(d).get("initContainers", []):
                names |= {
                    e["valueFrom"]["secretKeyRef"]["name"]
                    for e in c.get("env", [])
                    if "secretKeyRef" in e.get("valueFrom", {})
                }
    assert names == {"mine"}


def test_the_bundled_database_takes_its_password_from_the_secret(helm: Path) -> None:
    docs = render(helm)
    pg = deployments(docs)["postgresql"]["spec"]["template"]["spec"]
    variables = env(pg["containers"][0])
    assert ref(variables["POSTGRES_PASSWORD"]) == {"name": "rel-flywheel-secrets", "key": "database-password"}
    assert pg["automountServiceAccountToken"] is False
    policy = policies(docs)["postgresql"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "flywheel"}}}]
    for name in ("gateway", "ingest", "trainer"):  # they migrate at start: they wait for it
        inits = [c["name"] for c in deployments(docs)[name]["spec"]["template"]["spec"]["initContainers"]]
        assert inits[0] == "wait-for-database", name


def test_helm_test_reads_its_credentials_from_the_secret(helm: Path) -> None:
    (pod,) = [d for d in render(helm) if d["kind"] == "Pod"]
    variables = env(pod["spec"]["containers"][0])
    for name, key in (
        ("SMOKE_API_KEYS", "api-keys"),
        ("SMOKE_WEBHOOK_TOKEN", "webhook-token"),
        ("SMOKE_OPERATOR_TOKEN", "token-operator"),
    ):
        assert ref(variables[name]) == {"name": "rel-flywheel-secrets", "key": key}


# -- network, TLS, Kafka, training Jobs ------------------------------------------------------------


def peers(rule: dict) -> list[dict]:
    return rule.get("from", [])


def release_pods(policy: dict) -> set[str]:
    """The release's pods (by name) a policy admits."""
    return {
        p["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
        for rule in policy["spec"]["ingress"]
        for p in peers(rule)
        if "podSelector" in p and "namespaceSelector" not in p
    }


def test_network_policies_admit_only_callers(helm: Path) -> None:
    """Finding 10: the model server admits the gateway, the lake the trainer; no service every pod."""
    docs = render(helm, "networkPolicy.operatorNamespace=ops", values="keda-prometheus-values.yaml")
    found = policies(docs)
    callers = {spec.name: {c for c in spec.callers if c in ("gateway", "trainer")} for spec in SERVICES}
    for spec in SERVICES:
        policy = found[spec.name]
        if spec.name == "gateway":
            assert release_pods(policy) == set()
        else:
            assert release_pods(policy) == callers[spec.name] | {"test-smoke"}, spec.name
            operator = [
                p
                for r in policy["spec"]["ingress"]
                for p in peers(r)
                if "namespaceSelector" in p and "podSelector" not in p
            ]
            assert operator == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}}]
        for rule in policy["spec"]["ingress"]:
            for peer in peers(rule):
                assert peer.get("namespaceSelector") != {}, f"{spec.name}: every namespace"
                labels = peer.get("podSelector", {}).get("matchLabels", {})
                if labels.get("app.kubernetes.io/name") == "prometheus":
                    # Prometheus's own namespace only, in the same peer (AND), not any pod so labelled anywhere.
                    assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "flywheel"}}
    assert callers["modelserver"] == {"gateway"} and callers["lake"] == {"trainer"}
    open_to_all = {n for n, p in found.items() if any("from" not in r for r in p["spec"]["ingress"])}
    assert open_to_all == {"gateway", "ingest"}
    ingress = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    docs = render(
        helm, "networkPolicy.ingressFrom[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=ingress-nginx"
    )
    for name in ("gateway", "ingest"):
        rules = policies(docs)[name]["spec"]["ingress"]
        assert all("from" in r for r in rules) and any(peers(r) == [ingress] for r in rules), name


def test_tls_mounts_the_certificate_secret(helm: Path) -> None:
    docs = render(helm, "tls.enabled=true", "tls.secretName=flywheel-tls")
    for name, d in deployments(docs).items():
        if name == "postgresql":
            continue
        pod = d["spec"]["template"]["spec"]
        volume = next(v for v in pod["volumes"] if v["name"] == "tls")
        assert volume["secret"]["secretName"] == "flywheel-tls"
        container = pod["containers"][0]
        mount = next(m for m in container["volumeMounts"] if m["name"] == "tls")
        assert mount["readOnly"] is True
        variables = env(container)
        for var, file in (("CERT", "tls.crt"), ("KEY", "tls.key"), ("CA", "ca.crt")):
            assert variables[f"FLYWHEEL_TLS_{var}_FILE"]["value"] == f"{mount['mountPath']}/{file}", name
        assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    (pod,) = [d for d in docs if d["kind"] == "Pod"]
    variables = env(pod["spec"]["containers"][0])
    assert all(url.split("=", 1)[1].startswith("https://") for url in variables["SMOKE_SERVICES"]["value"].split(","))
    assert variables["SMOKE_CA_FILE"]["value"] == "/etc/flywheel/tls/ca.crt"
    assert "tls.secretName" in render_fails(helm, "tls.enabled=true")
    assert "triton" in render_fails(helm, "tls.enabled=true", "tls.secretName=x", "services.modelserver.engine=triton")
    plain = deployments(render(helm))["gateway"]["spec"]["template"]["spec"]
    assert "FLYWHEEL_TLS_CERT_FILE" not in env(plain["containers"][0])


def test_kafka_security_settings_reach_every_client(helm: Path) -> None:
    docs = render(
        helm, "kafka.security.protocol=SASL_SSL", "kafka.security.sasl.mechanism=SCRAM-SHA-512",
        "kafka.security.sasl.username=flywheel", "kafka.security.sasl.passwordSecret.name=flywheel-kafka-user",
        "kafka.security.ssl.secretName=kafka-cluster-ca-cert",
    )  # fmt: skip
    for name, d in deployments(docs).items():
        if name == "postgresql":
            continue
        pod = d["spec"]["template"]["spec"]
        for container in [pod["containers"][0], *(c for c in pod["initContainers"] if c["name"] == "kafka-topics")]:
            variables = env(container)
            assert variables["FLYWHEEL_KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
            assert variables["FLYWHEEL_KAFKA_SASL_MECHANISM"]["value"] == "SCRAM-SHA-512"
            assert variables["FLYWHEEL_KAFKA_SASL_USERNAME"]["value"] == "flywheel"
            assert ref(variables["FLYWHEEL_KAFKA_SASL_PASSWORD"]) == {"name": "flywheel-kafka-user", "key": "password"}
            ca = variables["FLYWHEEL_KAFKA_SSL_CA_FILE"]["value"]
            mount = next(m for m in container["volumeMounts"] if m["name"] == "kafka-tls")
            assert ca == f"{mount['mountPath']}/ca.crt", name
        volume = next(v for v in pod["volumes"] if v["name"] == "kafka-tls")
        assert volume["secret"]["secretName"] == "kafka-cluster-ca-cert"
    trainer = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "rel-flywheel-trainer")
    refs = trainer["data"]["FLYWHEEL_TRAINER_K8S_SECRET_ENV"].split(",")
    assert "FLYWHEEL_KAFKA_SASL_PASSWORD=flywheel-kafka-user:password" in refs
    assert "username" in render_fails(
        helm, "kafka.security.protocol=SASL_PLAINTEXT", "kafka.security.sasl.mechanism=PLAIN"
    )
    plain = deployments(render(helm))["ingest"]["spec"]["template"]["spec"]["containers"][0]
    assert not [n for n in env(plain) if n.startswith("FLYWHEEL_KAFKA_")]


def test_training_jobs_get_secrets_by_reference_and_no_permissions(helm: Path) -> None:
    """Finding 15: what the trainer's Kubernetes runner is told (it renders Jobs from these)."""
    docs = render(helm)
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "rel-flywheel-trainer")
    data = config["data"]
    assert data["FLYWHEEL_TRAINER_K8S_SECRET_ENV"] == "FLYWHEEL_DATABASE_URL=rel-flywheel-secrets:database-url"
    account = data["FLYWHEEL_TRAINER_K8S_SERVICE_ACCOUNT"]
    (sa,) = [d for d in docs if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == account]
    assert sa["automountServiceAccountToken"] is False
    bound = {s["name"] for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding") for s in d["subjects"]}
    assert account not in bound and bound == {"rel-flywheel-trainer"}
    assert deployments(docs)["trainer"]["spec"]["template"]["spec"]["serviceAccountName"] != account


def test_the_gateways_per_key_rate_limit_is_a_value(helm: Path) -> None:
    """services.gateway.rateLimit reaches the gateway's settings (each key's default bucket); nonsense is
    refused at render time, naming the value."""
    default = env_of(render(helm), "gateway")
    assert (default["FLYWHEEL_GATEWAY_DEFAULT_RATE_PER_S"], default["FLYWHEEL_GATEWAY_DEFAULT_BURST"]) == ("100", "200")
    given = env_of(
        render(helm, "services.gateway.rateLimit.perSecond=3", "services.gateway.rateLimit.burst=7"), "gateway"
    )
    assert (given["FLYWHEEL_GATEWAY_DEFAULT_RATE_PER_S"], given["FLYWHEEL_GATEWAY_DEFAULT_BURST"]) == ("3", "7")
    assert "rateLimit" in render_fails(helm, "services.gateway.rateLimit.perSecond=0")
    assert "rateLimit" in render_fails(helm, "services.gateway.rateLimit.burst=0")
