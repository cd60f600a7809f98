"""ModelServerSettings: every field is the env var FLYWHEEL_MODELSERVER_<FIELD>; flags override."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ModelServerSettings(BaseSettings):
    """Each field is an env var FLYWHEEL_MODELSERVER_<FIELD>; `--help` lists them with defaults."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_MODELSERVER_", extra="ignore", protected_namespaces=())

    model_repository: Path = Field(Path(".flywheel/models"), description="Triton-layout model repository folder")
    host: str = Field("127.0.0.1", description="address to bind (0.0.0.0 in a container)")
    http_port: int = Field(8000, ge=0, le=65535, description="KServe v2 REST, /healthz, /readyz, /metrics; 0 = free")
    grpc_port: int = Field(
        8001, ge=0, le=65535, description="KServe v2 gRPC (inference.GRPCInferenceService); 0 = free"
    )
    batching: Literal["adaptive", "off"] = Field("adaptive", description="adaptive SLO-aware batching, or off")
    default_slo_ms: float = Field(
        100.0,
        gt=0,
        description="latency target of a request that brings no deadline: orders the queue and sizes batches, "
        "never fails the request (a model's `slo_ms` parameter overrides)",
    )
    queue_bound: int = Field(
        1024, ge=1, description="queued requests per model version before 429/RESOURCE_EXHAUSTED with a retry hint"
    )
    max_loop_lag_ms: float = Field(
        250.0,
        ge=0,
        description="when the event loop has run later than this at 3 probes in a row (one each 10 ms), new "
        "inference requests are refused with 429/RESOURCE_EXHAUSTED and a retry hint before their bodies are "
        "parsed (the backlog past capacity waits in socket buffers, where QUEUE_BOUND does not see it); 0 = never",
    )
    max_request_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="largest request body / tensor in bytes")
    intra_op_threads: int = Field(1, ge=0, description="runtime intra-op threads per instance; 0 = runtime default")
    instances: int = Field(0, ge=0, description="instances per model version; 0 = config.pbtxt instance_group count")
    inline_below_us: float = Field(
        1000.0,
        ge=0,
        description="a batch the cost model expects to take less than this runs on the event loop thread instead of "
        "a runtime thread (the hand-over costs more than such a batch); 0 = always on a runtime thread",
    )
    grpc_front: Literal["auto", "compiled", "aio"] = Field(
        "auto",
        description="gRPC front: compiled (HTTP/2 and gRPC framing in Rust, `make grpcfront`), aio (grpc.aio), or "
        "auto = compiled when built and TLS is off, else aio; compiled when not built stops start-up",
    )
    event_loop: Literal["uvloop", "asyncio"] = Field("uvloop", description="asyncio event loop implementation")
    consume_model_events: bool = Field(False, description="load versions announced on flywheel.models")
    events_group: str = Field("", description="consumer group for flywheel.models; empty = unique per process")
    remote_repository: str = Field(
        "",
        pattern=r"^(s3://[a-z0-9][a-z0-9.-]{1,62}(/[A-Za-z0-9_./-]*)?)?$",
        description="s3://bucket/prefix the trainer publishes versions to: checked versions are pulled into "
        "model_repository (then a cache) and hot-swapped; credentials from AWS_*; empty = the local folder only",
    )
    remote_poll_s: float = Field(10.0, gt=0, le=3600, description="how often the remote repository is polled")
    remote_latest_versions: int = Field(
        3, ge=1, le=100, description="the newest published versions of each model pulled from the remote repository"
    )
    drain_timeout_s: float = Field(
        20.0,
        gt=0,
        description="the most SIGTERM to exit takes: unready, answering with Connection: close, then finishing "
        "in-flight requests (HTTP and gRPC)",
    )
