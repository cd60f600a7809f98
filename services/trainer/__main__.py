"""Flywheel trainer: training jobs, exports, the model registry.

`python -m services.trainer`: REST + gRPC API, Kafka train requests, job runners (local or Kubernetes).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path

from services.config import CommonSettings, ConfigError, load_settings
from services.events import ConsumeLoop, ConsumerConfig, EventProducer, ensure_topics
from services.events.new_broker import NewBrokerWatch
from services.events.producer import ProduceFailed
from services.events.topics import MODELS, PROJECTS, TRAIN_REQUESTS
from services.projects.catalog import Project, publish_project
from services.storage import Database, ObjectStore, migrate
from services.telemetry import Readiness, StopSignal, configure_logging, serve_http_in_thread
from services.trainer.errors import InvalidRequest, ProjectConflict, PublishFailed
from services.trainer.external import ExternalDeployer
from services.trainer.job_run import git_commit
from services.trainer.jobs import JobService, JobStore, Runner
from services.trainer.lake_client import LakeClient
from services.trainer.projects import ProjectRegistry
from services.trainer.registry import Registry, remote_publisher
from services.trainer.runners.kubernetes import KubernetesRunner, secret_env
from services.trainer.runners.local import LocalRunner
from services.trainer.settings import TrainerSettings
from services.trainer.snapshots import SnapshotResolver
from services.trainer.tables import MIGRATIONS
from services.trainer.training.metrics import CombinedMetric
from services.trainer.transport.grpc import TrainerServicer, serve_grpc
from services.trainer.transport.rest import build_asgi
from services.trainer.transport.train_requests import TrainRequestHandler
from services.transportkit import bootstrap

log = logging.getLogger("services.trainer")


# A training worker calls no service: it gets none of the trainer's service credentials.
NOT_FOR_WORKERS = ("FLYWHEEL_SERVICE_TOKEN", "FLYWHEEL_TRUSTED_CALLERS")


def worker_env(common: CommonSettings, settings: TrainerSettings) -> dict[str, str]:
    """What a worker needs: the same database, broker, repository and settings as the service."""
    env = {
        k: v
        for k, v in os.environ.items()
        if (k.startswith("FLYWHEEL_") and k not in NOT_FOR_WORKERS)
        or k in ("PATH", "HOME", "PYTHONPATH")
        or k.startswith("AWS_")  # a worker publishes to the remote model repository itself
    }
    env.update(
        FLYWHEEL_HOME=str(common.home.resolve()),
        FLYWHEEL_DATABASE_URL=common.resolved_database_url(),
        FLYWHEEL_KAFKA_BOOTSTRAP=common.kafka_bootstrap,
        FLYWHEEL_TRAINER_MODEL_REPOSITORY=str(settings.model_repository.resolve()),
    )
    return env


def main(argv: list[str] | None = None) -> int:
    parser = bootstrap.service_parser("trainer", __doc__, TrainerSettings)
    parser.add_argument("--runner", choices=["local", "kubernetes"], help="overrides FLYWHEEL_TRAINER_RUNNER")
    parser.add_argument(
        "--no-consume",
        action="store_const",
        const=False,
        dest="consume",
        help="do not consume flywheel.train.requests",
    )
    args = parser.parse_args(argv)
    common = load_settings(CommonSettings)
    settings = load_settings(TrainerSettings, **bootstrap.given(args))
    try:
        CombinedMetric.parse(settings.combined_metric)
    except InvalidRequest as exc:
        raise ConfigError(f"invalid configuration:\n  FLYWHEEL_TRAINER_COMBINED_METRIC: {exc}") from None
    configure_logging("trainer", common.log_level)
    security = bootstrap.security(common)
    stop = StopSignal().install()

    db_url = common.resolved_database_url()
    migrate(db_url, [MIGRATIONS])
    db = Database(db_url)
    store = JobStore(db)
    kafka = common.kafka_security()
    producer = EventProducer(common.kafka_bootstrap, client_id="trainer", **kafka)

    def publish(event) -> None:  # type: ignore[no-untyped-def]
        producer.send(MODELS.name, event)
        producer.flush()

    def publish_spec(project: Project) -> None:
        try:
            publish_project(producer, project)
        except ProduceFailed as exc:
            raise PublishFailed(f"project {project.name} v{project.version} not published: {exc}") from exc

    ensure_topics(common.kafka_bootstrap, [PROJECTS, MODELS], security=kafka)
    project_registry = ProjectRegistry(db, publish=publish_spec)
    try:
        project_registry.register_files([Path(p.strip()) for p in settings.project_files.split(",") if p.strip()])
    except (InvalidRequest, ProjectConflict) as exc:
        raise ConfigError(f"invalid configuration:\n  FLYWHEEL_TRAINER_PROJECT_FILES: {exc}") from None
    project_registry.publish_all()  # a broker that lost flywheel.projects learns every project again
    # ...and so does one that loses it while the trainer runs (a broker pod restarted on an emptyDir).
    broker_watch = NewBrokerWatch(producer, project_registry.publish_all, settings.broker_check_s)
    broker_watch.check()
    threading.Thread(target=broker_watch.run, args=(stop.event,), name="new-broker-watch", daemon=True).start()

    settings.model_repository.mkdir(parents=True, exist_ok=True)
    registry = Registry(
        db,
        repository_uri=settings.model_repository.resolve().as_uri(),
        margin=settings.promotion_margin,
        publish=publish,
        remote=remote_publisher(settings.remote_model_repository, settings.model_repository),
    )
    env = worker_env(common, settings)
    local = LocalRunner(
        store,
        env,
        settings.max_concurrent_jobs,
        log_dir=common.home / "logs" / "train",
        log_read_timeout_s=settings.log_read_timeout_s,
    )
    runners: dict[str, Runner] = {"local": local}
    if settings.runner == "kubernetes" or settings.k8s_api_url:
        try:
            from_secrets = secret_env(settings.k8s_secret_env)
        except ValueError as exc:
            raise ConfigError(f"invalid configuration:\n  FLYWHEEL_TRAINER_K8S_SECRET_ENV: {exc}") from None
        if "FLYWHEEL_DATABASE_URL" not in from_secrets and "@" in common.resolved_database_url():
            log.warning(
                "training Jobs will carry the database URL, credentials included, in their spec: "
                "set FLYWHEEL_TRAINER_K8S_SECRET_ENV=FLYWHEEL_DATABASE_URL=<secret>:<key>"
            )
        pod_env = {
            "FLYWHEEL_HOME": "/data",
            "FLYWHEEL_DATABASE_URL": common.resolved_database_url(),
            "FLYWHEEL_KAFKA_BOOTSTRAP": common.kafka_bootstrap,
            **{
                k: v
                for k, v in os.environ.items()
                if k.startswith("FLYWHEEL_KAFKA_") and k != "FLYWHEEL_KAFKA_BOOTSTRAP"
            },
            "FLYWHEEL_TRAINER_MODEL_REPOSITORY": "/data/models",
            "FLYWHEEL_TRAINER_COMBINED_METRIC": settings.combined_metric,
            **({"FLYWHEEL_OBJECT_STORE_URL": common.object_store_url} if common.object_store_url else {}),
        }
        k8s = KubernetesRunner.from_settings(store, settings, pod_env)
        k8s.begin(stop.event)
        runners["kubernetes"] = k8s
    lake_root = settings.lake_root or (common.home / "lake").resolve().as_uri()
    lake = LakeClient(settings.lake_addr, security) if settings.lake_addr else None
    resolver = SnapshotResolver(lake_root, lake)
    jobs = JobService(store, runners, settings.runner, resolver, project_registry)

    readiness = Readiness()
    readiness.add("database", db.ping)
    local.recover()
    local.begin()

    loop = None
    loop_thread = None
    if settings.consume:
        dlq = EventProducer(common.kafka_bootstrap, client_id="trainer-dlq", **kafka)
        loop = ConsumeLoop(
            ConsumerConfig(common.kafka_bootstrap, settings.consumer_group, [TRAIN_REQUESTS.name], extra=kafka),
            TrainRequestHandler(jobs, db, resolver),
            dlq,
            stop.event,
        )
        readiness.add("train_requests", loop.healthy)
        loop_thread = threading.Thread(target=loop.run, name="train-requests", daemon=True)
        loop_thread.start()

    deployer = ExternalDeployer(
        project_registry,
        registry,
        settings.model_repository,
        resolver,
        ObjectStore(common.resolved_object_store_url()).get,
        CombinedMetric.parse(settings.combined_metric),
        git_commit(),
    )
    http = serve_http_in_thread(
        build_asgi(jobs, registry, readiness, stop.event, security.callers, project_registry, deployer),
        settings.host,
        settings.http_port,
        ssl=security.tls.uvicorn_options(),
    )
    grpc_server, grpc_port = serve_grpc(
        TrainerServicer(jobs, registry, stop.event), settings.host, settings.grpc_port, security
    )
    log.info("trainer ready", extra={"http_port": http.port, "grpc_port": grpc_port, "runner": settings.runner})

    stop.wait()
    log.info("stopping: draining")
    grpc_server.stop(grace=5).wait(10)
    http.stop()
    if loop_thread is not None:
        loop_thread.join(30)
    local.close()
    if "kubernetes" in runners:
        runners["kubernetes"].close()
    producer.close(10)
    if lake is not None:
        lake.close()
    db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
