"""TrainerSettings: every field is the env var FLYWHEEL_TRAINER_<FIELD>; `--help` lists them."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TrainerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_TRAINER_", extra="ignore")

    http_port: int = Field(8300, ge=0, le=65535, description="REST, health and metrics port (0 picks one)")
    grpc_port: int = Field(8301, ge=0, le=65535, description="gRPC port (0 picks one)")
    host: str = Field("127.0.0.1", description="address to listen on")
    model_repository: Path = Field(Path(".flywheel/models"), description="Triton-layout model repository to write")
    remote_model_repository: str = Field(
        "",
        pattern=r"^(s3://[a-z0-9][a-z0-9.-]{1,62}(/[A-Za-z0-9_./-]*)?)?$",
        description="s3://bucket/prefix each registered version is also published to (files, then a manifest "
        "with their sha256), for model servers that pull from it; credentials from AWS_*; empty = local only",
    )
    reports_dir: Path = Field(Path(""), description="job reports; empty means FLYWHEEL_HOME/reports")
    lake_root: str = Field("", description="fsspec URL of the lake root; empty means file://FLYWHEEL_HOME/lake")
    lake_addr: str = Field("127.0.0.1:8201", description="the lake's gRPC address (CreateSnapshot for empty ids)")
    runner: str = Field("local", pattern=r"^(local|kubernetes)$", description="default runner: local or kubernetes")
    max_concurrent_jobs: int = Field(1, ge=1, description="local runner: jobs run at once (the rest queue)")
    threads: int = Field(1, ge=1, description="torch CPU threads per local job")
    combined_metric: str = Field(
        "weighted:accuracy=0.5,macro_f1=0.5", description="formula of the one number that ranks models"
    )
    promotion_margin: float = Field(0.002, ge=0, description="gate: how much a version must beat the others by")
    onnx_exporter: str = Field("dynamo", pattern=r"^(dynamo|torchscript)$", description="torch.onnx exporter")
    consume: bool = Field(True, description="consume flywheel.train.requests")
    project_files: str = Field(
        "",
        description="project specs to register at start (comma-separated files or folders of *.yaml, "
        "e.g. a mounted ConfigMap); more at any time with `flywheel projects create`",
    )
    consumer_group: str = Field("trainer", description="Kafka consumer group")
    # Kubernetes runner
    k8s_namespace: str = Field("flywheel", description="namespace of training Jobs")
    k8s_image: str = Field("ghcr.io/flywheel/trainer:latest", description="image of training Jobs")
    k8s_service_account: str = Field(
        "", description="service account of training pods: one of their own, with no API permissions"
    )
    k8s_secret_env: str = Field(
        "",
        description="env vars training pods read from Secrets, NAME=secret:key,… (the database URL with its "
        "password, Kafka passwords): never written into the Job spec",
    )
    k8s_ttl_s: int = Field(3600, ge=0, description="ttlSecondsAfterFinished of training Jobs")
    k8s_backoff_limit: int = Field(1, ge=0, description="backoffLimit of training Jobs")
    k8s_cpu: str = Field("2", description="CPU request/limit of a training pod")
    k8s_memory: str = Field("4Gi", description="memory request/limit of a training pod")
    k8s_allowed_images: str = Field(
        "",
        description="image prefixes a project's `kubernetes.image` may use, comma-separated "
        "(e.g. ghcr.io/acme/); empty: only k8s_image",
    )
    k8s_max_gpus: int = Field(8, ge=0, le=64, description="most nvidia.com/gpu one training Job may ask for")
    k8s_gpu_node_selector: str = Field(
        "", description="nodeSelector of GPU Jobs, key=value,… (e.g. nvidia.com/gpu.present=true)"
    )
    k8s_gpu_tolerations: str = Field(
        "nvidia.com/gpu:NoSchedule",
        description="tolerations of GPU Jobs, key[=value]:Effect,… (no value: operator Exists)",
    )
    k8s_pvc: str = Field("flywheel-data", description="PVC mounted at FLYWHEEL_HOME in training pods")
    log_read_timeout_s: float = Field(
        300.0, gt=0, le=3600, description="`logs?follow=true`: the stream ends after this long without output"
    )
    k8s_stuck_after_s: float = Field(
        600.0,
        gt=0,
        description="a training pod unschedulable (no node has the resources) or unable to pull its image this "
        "long fails its job with that reason, and its Job is deleted",
    )
    k8s_reconcile_interval_s: float = Field(
        15.0, ge=0, description="how often running Kubernetes jobs are checked against their Jobs (0: only when read)"
    )
    broker_check_s: float = Field(
        15.0,
        gt=0,
        le=3600,
        description="how often the broker's cluster id is checked: a broker back without its log (a new id) gets "
        "every project spec published again",
    )
    k8s_in_cluster: bool = Field(False, description="use the in-cluster service account config")
    k8s_api_url: str = Field("", description="API server URL (tests); empty: kubeconfig or in-cluster")
