"""The Kubernetes runner: a job becomes a batch/v1 Job built with the `kubernetes` client's models.

The pod runs the same worker as the local runner (`python -m services.trainer.worker`), or, for
more than one GPU, `torchrun --nproc-per-node N -m services.trainer.worker` (PyTorch DDP). It
requests `nvidia.com/gpu`, mounts the shared data volume at FLYWHEEL_HOME, and reports into the
same SQL database. The Job has a TTL after it finishes, a backoff limit and Flywheel's labels;
cancelling deletes it with background propagation (the API call returns at once; its pods still
get SIGTERM and record 'cancelled').

A project's `kubernetes:` block (services/projects/spec.py, a request's over it) may set the image
(within FLYWHEEL_TRAINER_K8S_ALLOWED_IMAGES), command/args, requests/limits, GPUs (up to
FLYWHEEL_TRAINER_K8S_MAX_GPUS; GPU Jobs get the configured nodeSelector and tolerations), env and
the Job's TTL and deadline. `check` refuses what this trainer will not run before any job exists.
"""

from __future__ import annotations

import json
import logging
import re

from kubernetes import client

from services.projects.spec import KubernetesSpec, parse_quantity
from services.trainer.errors import JobSpecInvalid, RunnerFailed
from services.trainer.job_run import JobSpec
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


def node_selector(spec: str) -> dict[str, str]:
    """`key=value,…` (FLYWHEEL_TRAINER_K8S_GPU_NODE_SELECTOR) → {key: value}; ValueError when malformed."""
    out: dict[str, str] = {}
    for entry in (e.strip() for e in spec.split(",") if e.strip()):
        key, sep, value = entry.partition("=")
        if not (key and sep):
            raise ValueError(f"{entry!r} is not key=value")
        out[key] = value
    return out


def tolerations(spec: str) -> list[client.V1Toleration]:
    """`key[=value]:Effect,…` (FLYWHEEL_TRAINER_K8S_GPU_TOLERATIONS); no value: operator Exists."""
    out = []
    for entry in (e.strip() for e in spec.split(",") if e.strip()):
        taint, _, effect = entry.rpartition(":")
        key, sep, value = taint.partition("=")
        if not key or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise ValueError(f"{entry!r} is not key[=value]:NoSchedule|PreferNoSchedule|NoExecute")
        op = "Equal" if sep else "Exists"
        out.append(client.V1Toleration(key=key, operator=op, value=value if sep else None, effect=effect))
    return out


def job_block(spec: JobSpec) -> KubernetesSpec:
    return KubernetesSpec.model_validate(spec.kubernetes) if spec.kubernetes else KubernetesSpec()


def image_allowed(image: str, settings: TrainerSettings) -> bool:
    prefixes = [p.strip() for p in settings.k8s_allowed_images.split(",") if p.strip()]
    return image == settings.k8s_image or any(image.startswith(p) for p in prefixes)


def resource_lists(spec: JobSpec, settings: TrainerSettings) -> tuple[dict[str, str], dict[str, str]]:
    """(requests, limits): the block's, else the trainer's k8s_cpu/k8s_memory as both (Guaranteed QoS);
    a GPU job's `nvidia.com/gpu` in both (the device plugin requires them equal). JobSpecInvalid when a
    request is above the limit it ends up with."""
    res = job_block(spec).resources
    limits = {"cpu": settings.k8s_cpu, "memory": settings.k8s_memory}
    requests: dict[str, str] = {}
    for name in ("cpu", "memory"):
        lim = getattr(res.limits, name) if res else None
        req = getattr(res.requests, name) if res else None
        limits[name] = lim or limits[name]
        requests[name] = req or limits[name]
        if parse_quantity(requests[name]) > parse_quantity(limits[name]):
            where = f"limits.{name}" if lim else f"the trainer's limit (FLYWHEEL_TRAINER_K8S_{name.upper()})"
            raise JobSpecInvalid(
                f"kubernetes.resources.requests.{name}: {requests[name]} is above {where} {limits[name]}; "
                f"give resources.limits.{name}"
            )
    if spec.gpus > 0:
        limits["nvidia.com/gpu"] = requests["nvidia.com/gpu"] = str(spec.gpus)
    return requests, limits


def check(spec: JobSpec, settings: TrainerSettings) -> None:
    """What this trainer will not run, refused with the field and the reason (JobSpecInvalid)."""
    block = job_block(spec)
    if block.image is not None and not image_allowed(block.image, settings):
        allowed = settings.k8s_allowed_images or settings.k8s_image
        raise JobSpecInvalid(
            f"kubernetes.image: {block.image!r} is not allowed here; allowed: {allowed} "
            "(FLYWHEEL_TRAINER_K8S_ALLOWED_IMAGES)"
        )
    if spec.gpus > settings.k8s_max_gpus:
        raise JobSpecInvalid(
            f"kubernetes.gpus: {spec.gpus} is above this trainer's limit of {settings.k8s_max_gpus} "
            "(FLYWHEEL_TRAINER_K8S_MAX_GPUS)"
        )
    resource_lists(spec, settings)


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
    block = job_block(job.spec)
    if block.command is not None:
        command = list(block.command)
    elif gpus > 1:
        command = ["torchrun", f"--nproc-per-node={gpus}", "-m", "services.trainer.worker", "--job-id", job.job_id]
    else:
        command = ["python", "-m", "services.trainer.worker", "--job-id", job.job_id]
    requests, limits = resource_lists(job.spec, settings)
    # The user's variables win, but the block cannot name FLYWHEEL_* (the spec refuses them): those are the platform's.
    pod_env = {**env, **block.env, "FLYWHEEL_JOB_ID": job.job_id}
    labels = {
        **LABELS,
        "app.kubernetes.io/component": "training-job",
        "flywheel.dev/job-id": job.job_id[:63],
        "flywheel.dev/model": job.model[:63],
    }
    container = client.V1Container(
        name="trainer",
        image=block.image or settings.k8s_image,
        image_pull_policy="IfNotPresent",
        command=command,
        args=list(block.args) if block.args is not None else None,
        env=_env(pod_env, secret_env(settings.k8s_secret_env)),
        resources=client.V1ResourceRequirements(requests=requests, limits=limits),
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
    pod = client.V1PodSpec(
        restart_policy="Never",
        containers=[container],
        service_account_name=settings.k8s_service_account or None,
        automount_service_account_token=False,  # a training pod has no business with the Kubernetes API
        tolerations=(tolerations(settings.k8s_gpu_tolerations) or None) if gpus > 0 else None,
        node_selector=(node_selector(settings.k8s_gpu_node_selector) or None) if gpus > 0 else None,
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
            ttl_seconds_after_finished=(
                settings.k8s_ttl_s if block.ttlSecondsAfterFinished is None else block.ttlSecondsAfterFinished
            ),
            active_deadline_seconds=block.activeDeadlineSeconds
            or (int(job.spec.budget_s * 3 + 1800) if job.spec.budget_s else None),
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
        node_selector(settings.k8s_gpu_node_selector)  # a malformed setting stops the trainer at start-up
        tolerations(settings.k8s_gpu_tolerations)

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

    def check(self, spec: JobSpec) -> None:
        check(spec, self._settings)

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
                body=client.V1DeleteOptions(propagation_policy="Background", grace_period_seconds=30),
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
