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

`reconcile` turns what the cluster knows into the job's row: a Job failed before its worker could
report (OOMKilled, DeadlineExceeded, BackoffLimitExceeded), and a pod that cannot start (no node
has the GPUs it asks for, an image that cannot be pulled), said in the job's message and, once it
has lasted FLYWHEEL_TRAINER_K8S_STUCK_AFTER_S, failing the job and deleting its Job. `logs` reads
the log of the Job's newest pod (found by Flywheel's job-id label) from the API server.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import urllib3
from kubernetes import client

from services.projects.spec import KubernetesSpec, parse_quantity
from services.trainer.errors import JobLogGone, JobLogUnavailable, JobSpecInvalid, RunnerFailed
from services.trainer.job_run import JobSpec
from services.trainer.jobs import CANCELLED, FAILED, RUNNING, Job, JobStore
from services.trainer.logs import JobLog, LogRequest, bounded, quiet_marker
from services.trainer.settings import TrainerSettings

log = logging.getLogger(__name__)

LABELS = {"app.kubernetes.io/name": "flywheel-trainer", "app.kubernetes.io/part-of": "flywheel"}
JOB_ID_LABEL = "flywheel.dev/job-id"
CONTAINER = "trainer"
# A label value (RFC 1123-ish): what a label selector may carry; anything else is refused, not quoted.
_LABEL_VALUE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?")
# The scheduler's message names what no node has: "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
_INSUFFICIENT = re.compile(r"Insufficient ([A-Za-z0-9./_-]*[A-Za-z0-9])")
_IMAGE_PULL = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
# Waiting reasons that do not resolve by themselves (a Secret or ConfigMap the pod names is missing, say).
_CONFIG = ("CreateContainerConfigError", "CreateContainerError")


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


@dataclass(frozen=True)
class PodTrouble:
    """Why a pod is not running its worker: `reason` for a person; `stuck` when it will not resolve by
    itself (so the job fails once it has lasted k8s_stuck_after_s); `since`: when it began."""

    reason: str
    stuck: bool
    since: datetime | None


def _container(pod: client.V1Pod) -> client.V1Container | None:
    return next((c for c in (pod.spec.containers if pod.spec else []) if c.name == CONTAINER), None)


def _status(pod: client.V1Pod) -> client.V1ContainerStatus | None:
    statuses = (pod.status.container_statuses if pod.status else None) or []
    return next((c for c in statuses if c.name == CONTAINER), statuses[0] if statuses else None)


def pending_trouble(pod: client.V1Pod) -> PodTrouble | None:
    """Why a pod that has not started its container has not (None: it is running or finished)."""
    status = pod.status or client.V1PodStatus()
    if status.phase not in (None, "Pending"):
        return None
    for cond in status.conditions or []:
        if cond.type == "PodScheduled" and cond.status == "False" and cond.reason == "Unschedulable":
            message = (cond.message or "").strip()
            missing = sorted(set(_INSUFFICIENT.findall(message)))
            what = (
                "no node has a free " + " or ".join(missing)
                if missing
                else "no node fits the pod (node selector, tolerations or affinity)"
            )
            return PodTrouble(f"unschedulable: {what} ({message})", True, cond.last_transition_time)
    cs = _status(pod)
    waiting = cs.state.waiting if cs is not None and cs.state is not None else None
    if waiting is None:
        return PodTrouble("the pod is waiting to be scheduled", False, pod.metadata.creation_timestamp)
    since = status.start_time or pod.metadata.creation_timestamp
    if waiting.reason in _IMAGE_PULL:
        container = _container(pod)
        image = cs.image or (container.image if container is not None else "?")
        return PodTrouble(
            f"image {image} cannot be pulled: {waiting.reason}: {waiting.message or ''}".rstrip(": "), True, since
        )
    if waiting.reason in _CONFIG:
        return PodTrouble(f"{waiting.reason}: {waiting.message or ''}".rstrip(": "), True, since)
    return PodTrouble(f"the pod is starting: {waiting.reason or 'waiting'}", False, since)


def termination(pod: client.V1Pod, memory_limit: str) -> str:
    """How the pod's container ended ("" while it runs): OOMKilled with the limit it exceeded, or the
    reason and exit code."""
    cs = _status(pod)
    if cs is None:
        return ""
    ended = (cs.state.terminated if cs.state else None) or (cs.last_state.terminated if cs.last_state else None)
    if ended is None or ended.exit_code == 0:
        return ""
    if ended.reason == "OOMKilled":
        return (
            f"OOMKilled: the training container used more than its memory limit {memory_limit} "
            f"(exit code {ended.exit_code}); raise kubernetes.resources.limits.memory or lower the batch size"
        )
    return f"{ended.reason or 'Error'}: the training container exited with code {ended.exit_code}"


def _newest(pods: list[client.V1Pod]) -> client.V1Pod | None:
    epoch = datetime.min.replace(tzinfo=UTC)
    return max(pods, key=lambda p: p.metadata.creation_timestamp or epoch, default=None)


class KubernetesRunner:
    name = "kubernetes"

    def __init__(self, store: JobStore, settings: TrainerSettings, env: dict[str, str], api: client.ApiClient) -> None:
        self._store = store
        self._settings = settings
        self._env = env
        self._batch = client.BatchV1Api(api)
        self._core = client.CoreV1Api(api)
        self._thread: threading.Thread | None = None
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

    def _pods(self, job: Job) -> list[client.V1Pod]:
        value = job.job_id[:63]
        if not _LABEL_VALUE.fullmatch(value):
            # Such an id could not be a label: its Job was never created.
            raise JobLogUnavailable(f"job {job.job_id}: its id is not a Kubernetes label value; it has no pod")
        selector = f"{JOB_ID_LABEL}={value}"
        return list(self._core.list_namespaced_pod(self._settings.k8s_namespace, label_selector=selector).items)

    def _memory_limit(self, job: Job) -> str:
        try:
            return resource_lists(job.spec, self._settings)[1]["memory"]
        except JobSpecInvalid:
            return "?"

    def reconcile(self, job: Job) -> None:
        """The cluster's view into the job's row: a Job that failed before its worker could report, or a pod
        that cannot start (failed once that has lasted k8s_stuck_after_s)."""
        ns = self._settings.k8s_namespace
        try:
            k8s_job = self._batch.read_namespaced_job_status(job_name(job.job_id), ns)
        except client.ApiException as exc:
            log.warning("could not read the Job's status", extra={"job_id": job.job_id, "status": exc.status})
            return
        try:
            pods = self._pods(job)
        except (client.ApiException, JobLogUnavailable) as exc:
            # The Job's own conditions still say that it failed, if less precisely.
            log.warning("could not list the Job's pods", extra={"job_id": job.job_id, "error": str(exc)[:200]})
            pods = []
        status = k8s_job.status or client.V1JobStatus()
        ended = [t for t in (termination(p, self._memory_limit(job)) for p in pods) if t]
        for cond in status.conditions or []:
            if cond.type == "Failed" and cond.status == "True":
                self._store.update(job.job_id, state=FAILED, phase="failed", reason=self._failed(k8s_job, cond, ended))
                return
        pod = _newest(pods)
        trouble = pending_trouble(pod) if pod is not None else None
        if trouble is None:
            return
        since = trouble.since or job.created_at
        lasted = (datetime.now(UTC) - since.replace(tzinfo=since.tzinfo or UTC)).total_seconds() if since else 0.0
        if trouble.stuck and lasted >= self._settings.k8s_stuck_after_s:
            reason = (
                f"{trouble.reason}; for {lasted:.0f} s (FLYWHEEL_TRAINER_K8S_STUCK_AFTER_S), so its Job was deleted"
            )
            if self._store.update(job.job_id, state=FAILED, phase="failed", reason=reason):
                self._delete(job)
            return
        # Still pending: said in the job's message until the worker starts and reports its own.
        self._store.update(job.job_id, phase="pending", message=trouble.reason)

    def _failed(self, k8s_job: client.V1Job, cond: client.V1JobCondition, ended: list[str]) -> str:
        spec = k8s_job.spec or client.V1JobSpec(template=client.V1PodTemplateSpec())
        if cond.reason == "DeadlineExceeded":
            why = (
                f"DeadlineExceeded: the Job ran longer than its activeDeadlineSeconds "
                f"({spec.active_deadline_seconds} s; kubernetes.activeDeadlineSeconds)"
            )
        elif cond.reason == "BackoffLimitExceeded":
            failed = (k8s_job.status.failed if k8s_job.status else None) or 0
            why = f"BackoffLimitExceeded: its pod failed {failed} time(s) (backoffLimit {spec.backoff_limit})"
        else:
            why = f"{cond.reason}: {cond.message or ''}".rstrip(": ")
        # The container's own end (OOMKilled, say) is the cause a person can act on: it comes first.
        return "Kubernetes Job failed: " + "; ".join([*dict.fromkeys(ended), why])

    def _delete(self, job: Job) -> None:
        try:
            self._batch.delete_namespaced_job(
                job_name(job.job_id),
                self._settings.k8s_namespace,
                body=client.V1DeleteOptions(propagation_policy="Background"),
            )
        except client.ApiException as exc:
            if exc.status != 404:
                log.warning("could not delete a stuck Job", extra={"job_id": job.job_id, "status": exc.status})

    def begin(self, stop: threading.Event) -> None:
        """Reconcile running Kubernetes jobs every k8s_reconcile_interval_s, so a stuck or failed Job is seen
        without anyone reading the job (a watch, say)."""
        interval = self._settings.k8s_reconcile_interval_s
        if interval <= 0:
            return

        def loop() -> None:
            while not stop.wait(interval):
                for job in self._store.list(RUNNING):
                    if job.runner == self.name:
                        try:
                            self.reconcile(job)
                        except Exception:  # one job's odd status must not stop the loop for the others
                            log.exception("reconcile failed", extra={"job_id": job.job_id})

        self._thread = threading.Thread(target=loop, name="k8s-reconcile", daemon=True)
        self._thread.start()

    def logs(self, job: Job, req: LogRequest, stop: threading.Event) -> JobLog:
        """The log of the Job's newest pod. JobLogUnavailable (409) while no pod has started, saying why;
        JobLogGone (404) when the Job is gone (its TTL after it finished)."""
        ns = self._settings.k8s_namespace
        name = job_name(job.job_id)
        try:
            pods = self._pods(job)
        except client.ApiException as exc:
            raise RunnerFailed(f"Kubernetes refused to list the job's pods: {exc.status} {_api_message(exc)}") from None
        pod = _newest(pods)
        if pod is None:
            raise self._no_pod(job, name)
        trouble = pending_trouble(pod)
        if trouble is not None:
            raise JobLogUnavailable(
                f"job {job.job_id}: its pod {pod.metadata.name} has not started, so it has no log yet: {trouble.reason}"
            )
        timeout = self._settings.log_read_timeout_s
        try:
            resp = self._core.read_namespaced_pod_log(
                pod.metadata.name,
                ns,
                container=CONTAINER,
                tail_lines=req.tail,
                limit_bytes=req.max_bytes + 1,  # the one extra byte tells that there was more
                follow=req.follow,
                _preload_content=False,
                _request_timeout=(10, timeout),
            )
        except client.ApiException as exc:
            if exc.status == 404:
                raise self._no_pod(job, name) from None
            if exc.status == 400:  # the kubelet's "container … is waiting to start": it changed since the listing
                raise JobLogUnavailable(f"job {job.job_id}: no log yet: {_api_message(exc)}") from None
            raise RunnerFailed(f"Kubernetes refused the pod's log: {exc.status} {_api_message(exc)}") from None
        log_ = JobLog(source=f"pod {ns}/{pod.metadata.name}")
        log_.chunks = bounded(log_, _stream(resp, timeout, stop), req.max_bytes)
        return log_

    def _no_pod(self, job: Job, name: str) -> Exception:
        ns = self._settings.k8s_namespace
        try:
            self._batch.read_namespaced_job_status(name, ns)
        except client.ApiException as exc:
            if exc.status != 404:
                return RunnerFailed(f"Kubernetes refused to read the Job: {exc.status} {_api_message(exc)}")
            if job.state == CANCELLED or job.reason.endswith("so its Job was deleted"):
                return JobLogGone(
                    f"job {job.job_id} {job.state}; its Kubernetes Job {ns}/{name} was deleted then "
                    f"({job.reason}), and its pod's log with it"
                )
            ttl = job_block(job.spec).ttlSecondsAfterFinished
            ttl = self._settings.k8s_ttl_s if ttl is None else ttl
            ended = job.finished_at.replace(tzinfo=job.finished_at.tzinfo or UTC) if job.finished_at else None
            if job.done and (ended is None or (datetime.now(UTC) - ended).total_seconds() >= ttl):
                return JobLogGone(
                    f"job {job.job_id} {job.state}; its Kubernetes Job {ns}/{name} was removed "
                    f"{ttl} s after it finished (ttlSecondsAfterFinished), and its pod's log with it"
                )
            return JobLogGone(f"job {job.job_id}: its Kubernetes Job {ns}/{name} is not there (deleted by hand?)")
        if job.state == RUNNING and job.phase in ("starting", "pending"):
            return JobLogUnavailable(f"job {job.job_id}: its Job {ns}/{name} has created no pod yet")
        return JobLogGone(f"job {job.job_id}: its Job {ns}/{name} has no pod any more (deleted?)")

    def close(self) -> None:
        if self._thread is not None:
            self._thread.join(5)


def _stream(resp: urllib3.HTTPResponse, timeout_s: float, stop: threading.Event) -> Iterator[bytes]:
    """The log response's bytes as they come; a read that waits longer than timeout_s ends the stream with
    a marker. The connection is released however the stream ends (the client gone, say)."""
    try:
        while not stop.is_set():
            try:
                chunk = resp.read1(64 << 10) if hasattr(resp, "read1") else resp.read(64 << 10)
            except (urllib3.exceptions.ReadTimeoutError, TimeoutError):
                yield quiet_marker(timeout_s)
                return
            except urllib3.exceptions.ProtocolError:  # the API server closed it mid-way: what came is the log
                return
            if not chunk:
                return
            yield chunk
    finally:
        resp.release_conn()
        resp.close()
