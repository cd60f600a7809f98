"""Finding 15's code half: a training Job's spec carries no secret and no API credential.

The database URL (with its password) and Kafka passwords reach training pods as references to a
Secret (FLYWHEEL_TRAINER_K8S_SECRET_ENV), never as literal values in the Job a `kubectl get job -o
yaml` shows; and training pods mount no service-account token. The manifest is validated strictly
against Kubernetes' schema; the chart's half is in tests/deploy. It lives here, not in tests/security:
the trainer loads tritonclient, which cannot share a process with the gateway's generated code.
"""

from __future__ import annotations

import kubernetes_validate
import pytest

from services.storage import Database, migrate
from services.trainer.job_run import JobSpec
from services.trainer.jobs import JobStore
from services.trainer.runners.kubernetes import job_manifest, secret_env
from services.trainer.settings import TrainerSettings
from services.trainer.tables import MIGRATIONS
from tests.support.projects import job_project

SECRET_URL = "postgresql+psycopg://flywheel:s3cret-password@db/flywheel"


@pytest.fixture
def store(tmp_path):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    migrate(url, [MIGRATIONS])
    db = Database(url)
    yield JobStore(db)
    db.close()


def _spec() -> JobSpec:
    return JobSpec(
        job_id="job-1",
        model="digits",
        model_family="mlp",
        snapshot_id="snap",
        snapshot_uri="file:///data/lake/snapshots/snap",
        runner="kubernetes",
        **job_project(),
    )


def test_f15_training_jobs_read_secrets_by_reference_and_mount_no_token(store: JobStore) -> None:
    settings = TrainerSettings(
        k8s_secret_env="FLYWHEEL_DATABASE_URL=flywheel-secrets:database-url,"
        "FLYWHEEL_KAFKA_SASL_PASSWORD=flywheel-secrets:kafka-password",
        k8s_service_account="flywheel-training",
    )
    env = {"FLYWHEEL_HOME": "/data", "FLYWHEEL_DATABASE_URL": SECRET_URL, "FLYWHEEL_KAFKA_SASL_PASSWORD": "k"}
    manifest = job_manifest(store.create(_spec()), settings, env)
    kubernetes_validate.validate(manifest, "1.37.0", strict=True)
    pod = manifest["spec"]["template"]["spec"]
    variables = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert "s3cret-password" not in str(manifest)
    assert variables["FLYWHEEL_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "flywheel-secrets",
        "key": "database-url",
    }
    assert "value" not in variables["FLYWHEEL_KAFKA_SASL_PASSWORD"]
    assert variables["FLYWHEEL_HOME"]["value"] == "/data"
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "flywheel-training"


def test_secret_env_names_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="NAME=secret:key"):
        secret_env("FLYWHEEL_DATABASE_URL=only-a-secret")
    assert secret_env(" A=s:k , B=t:l ") == {"A": ("s", "k"), "B": ("t", "l")}
