"""The Kubernetes runner: a job becomes a batch/v1 Job built with the `kubernetes` client's models.

The pod runs the same worker as the local runner (`python -m services.trainer.worker`), or, for
more than one GPU, `torchrun --nproc-per-node N -m services.trainer.worker` (PyTorch DDP). It
requests `nvidia.com/gpu`, mounts the shared data volume at FLYWHEEL_HOME, and reports into the
same SQL database. The Job has a TTL after it finishes, a backoff limit and Flywheel's labels;
cancelling deletes it with foreground propagation (its pods get SIGTERM and record 'cancelled').
"""

from __future__ import annotations

import json
import logging
import re

from kubernetes import client

from services.trainer.errors import RunnerFailed
from services.trainer.jobs import FAILED, Job, JobStore
from services.trainer.settings import TrainerSettings

log = logging.getLogger(__name__)

LABELS = {"app.kubernetes.io/name": "flywheel-trainer", "app.kubernetes.io/part-of": "flywheel"}


def _api_message(exc: client.ApiException) -> str:
    """The API server's Status reason and message, not just the HTTP reason phrase."""
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        return str(exc.reason)
    return f"{body.get('reason', exc.reason)}: {body.get('message', '')}".rstrip(": ")


def job_name(job_id: str) -> str:
    return "flywheel-train-" + re.sub(r"[^a-z0-9-]", "-", job_id.lower())[:40]


def secret_env(spec: str) -> dict[str, tuple[str, str]]:
    """`NAME=secret:key,…` (FLYWHEEL_TRAINER_K8S_SECRET_ENV) → {NAME: (secret, key)}; ValueError when malformed."""
    refs: dict[str, tuple[str, str]] = {}
    for entry in (e.strip() for e in spec.split(",") if e.strip()):
        name, _, ref = entry.partition("=")
        secret, _, key = ref.partition(":")
        if not (name and secret and key):
            raise ValueError(f"{entry!r} is not NAME=secret:key")
        refs[name] = (secret, key)
    return refs


def _env(env: dict[str, str], from_secrets: dict[str, tuple[str, str]]) -> list[client.V1EnvVar]:
    """Literal values, except those a Secret holds: those are references, so no secret lands in the Job spec."""
    plain = [client.V1EnvVar(name=k, value=v) for k, v in sorted(env.items()) if k not in from_secrets]
    refs = [
        client.V1EnvVar(
            name=name,
            value_from=client.V1EnvVarSource(secret_key_ref=client.V1SecretKeySelector(name=secret, key=key)),
        )
        for name, (secret, key) in sorted(from_secrets.items())
    ]
    return plain + refs


def build_job(job: Job, settings: TrainerSettings, env: dict[str, str]) -> client.V1Job:
    """The V1Job for a training job (pure: no API call)."""
    gpus = job.spec.gpus
    if gpus > 1:
        command = ["torchrun", f"--nproc-per-node={gpus}", "-m", "services.trainer.worker", "--job-id", job.job_id]
    else:
        command = ["python", "-m", "services.trainer.worker", "--job-id", job.job_id]
    limits = {"cpu": settings.k8s_cpu, "memory": settings.k8s_memory}
    if gpus > 0:
        limits["nvidia.com/gpu"] = str(gpus)
    labels = {
        **LABELS,
        "app.kubernetes.io/component": "training-job",
        "flywheel.dev/job-id": job.job_id[:63],
        "flywheel.dev/model": job.model[:63],
    }
    container = client.V1Container(
        name="trainer",
        image=settings.k8s_image,
        image_pull_policy="IfNotPresent",
        command=command,
        env=_env(env, secret_env(settings.k8s_secret_env)),
        resources=client.V1ResourceRequirements(requests=dict(limits), limits=limits),
        volume_mounts=[
            client.V1VolumeMount(name="data", mount_path="/data"),
            client.V1VolumeMount(name="dshm", mount_path="/dev/shm"),
        ],
        security_context=client.V1SecurityContext(
            allow_privilege_escalation=False,
            run_as_non_root=True,
            run_as_user=10001,
            capabilities=client.V1Capabilities(drop=["ALL"]),
        ),
    )
    tolerations = (
        [client.V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")] if gpus > 0 else None
    )
    pod = client.V1PodSpec(
        restart_policy="Never",
        containers=[container],
        service_account_name=settings.k8s_service_account or None,
        automount_service_account_token=False,  # a training pod has no business with the Kubernetes API
        tolerations=tolerations,
        volumes=[
            client.V1Volume(
                name="data",
                persistent_volume_claim=client.V1PersistentVolumeClaimVolumeSource(claim_name=settings.k8s_pvc),
            ),
            # torchrun's workers share tensors through /dev/shm; the default 64 MiB is too small.
            client.V1Volume(name="dshm", empty_dir=client.V1EmptyDirVolumeSource(medium="Memory")),
        ],
    )
    return client.V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=client.V1ObjectMeta(name=job_name(job.job_id), namespace=settings.k8s_namespace, labels=labels),
        spec=client.V1JobSpec(
            backoff_limit=settings.k8s_backoff_limit,
            ttl_seconds_after_finished=settings.k8s_ttl_s,
            active_deadline_seconds=int(job.spec.budget_s * 3 + 1800) if job.spec.budget_s else None,
            template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels=labels), spec=pod),
        ),
    )


def job_manifest(job: Job, settings: TrainerSettings, env: dict[str, str]) -> dict:
    """The Job as a plain manifest dict (camelCase, as kubectl and kubernetes-validate read it)."""
    return client.ApiClient().sanitize_for_serialization(build_job(job, settings, env))


class KubernetesRunner:
    name = "kubernetes"

    def __init__(self, store: JobStore, settings: TrainerSettings, env: dict[str, str], api: client.ApiClient) -> None:
        self._store = store
        self._settings = settings
        self._env = env
        self._batch = client.BatchV1Api(api)

    @classmethod
    def from_settings(cls, store: JobStore, settings: TrainerSettings, env: dict[str, str]) -> KubernetesRunner:
        from kubernetes import config as kconfig

        if settings.k8s_api_url:
            cfg = client.Configuration(host=settings.k8s_api_url)
            return cls(store, settings, env, client.ApiClient(cfg))
        if settings.k8s_in_cluster:
            kconfig.load_incluster_config()
        else:
            kconfig.load_kube_config()
        return cls(store, settings, env, client.ApiClient())

    def start(self, job: Job) -> None:
        body = build_job(job, self._settings, self._env)
        name = body.metadata.name
        if not self._store.claim(job.job_id, f"k8s:{self._settings.k8s_namespace}/{name}"):
            return
        try:
            self._batch.create_namespaced_job(self._settings.k8s_namespace, body)
        except client.ApiException as exc:
            reason = f"Kubernetes refused the Job: {exc.status} {_api_message(exc)}"
            self._store.update(job.job_id, state=FAILED, phase="failed", reason=reason)
            raise RunnerFailed(reason) from None
        log.info("kubernetes job created", extra={"job_id": job.job_id, "k8s_job": name})

    def cancel(self, job: Job) -> None:
        try:
            self._batch.delete_namespaced_job(
                job_name(job.job_id),
                self._settings.k8s_namespace,
                body=client.V1DeleteOptions(propagation_policy="Foreground", grace_period_seconds=30),
            )
        except client.ApiException as exc:
            if exc.status != 404:
                raise RunnerFailed(f"Kubernetes refused to delete the Job: {exc.status} {_api_message(exc)}") from None
        self._store.update(job.job_id, state="cancelled", phase="cancelled", reason="cancelled; Kubernetes Job deleted")

    def reconcile(self, job: Job) -> None:
        """A Job that failed in the cluster before its worker could report (image pull, OOM, backoff)."""
        try:
            status = self._batch.read_namespaced_job_status(job_name(job.job_id), self._settings.k8s_namespace).status
        except client.ApiException as exc:
            log.warning("could not read the Job's status", extra={"job_id": job.job_id, "status": exc.status})
            return
        for cond in status.conditions or []:
            if cond.type == "Failed" and cond.status == "True":
                self._store.update(
                    job.job_id,
                    state=FAILED,
                    phase="failed",
                    reason=f"Kubernetes Job failed: {cond.reason}: {cond.message}",
                )

    def close(self) -> None:
        pass
