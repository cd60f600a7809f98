"""GatewaySettings: every field is the env var FLYWHEEL_GATEWAY_<FIELD>; flags override."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    """Each field is an env var FLYWHEEL_GATEWAY_<FIELD>; `--help` lists them with defaults."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_GATEWAY_", extra="ignore", protected_namespaces=())

    host: str = Field("127.0.0.1", description="address to bind (0.0.0.0 in a container)")
    http_port: int = Field(8080, ge=0, le=65535, description="REST, /healthz, /readyz, /metrics; 0 = free")
    grpc_port: int = Field(8081, ge=0, le=65535, description="gRPC inference.GRPCInferenceService; 0 = free")
    modelserver_http_addr: str = Field(
        "127.0.0.1:8000", description="the model server's HTTP host:port (every call to it is v2 REST)"
    )
    modelserver_resolve_s: float = Field(
        5.0, gt=0, description="how often the model server's name is looked up again (every replica's address)"
    )
    modelserver_eject_s: float = Field(
        10.0, gt=0, description="how long a replica not reached or answering 503 gets no traffic"
    )
    modelserver_connect_timeout_s: float = Field(
        0.5,
        gt=0,
        le=30,
        description="model-server connect limit: an address not open by then is ejected, the retry goes on",
    )
    modelserver_test_addrs: str = Field(
        "",
        description="TEST ONLY: comma-separated IP:port the model server's name resolves to instead of DNS "
        "(several A records for one name cannot be made on 127.0.0.1); empty in every deployment",
    )
    model_repository: Path = Field(
        Path(".flywheel/models"), description="model repository, read for each version's flywheel.json"
    )
    deadline_ms: float = Field(2000.0, gt=0, description="longest deadline of a request (clients may ask for less)")
    retries: int = Field(2, ge=0, le=10, description="retries of a safe failure (UNAVAILABLE, overloaded)")
    retry_backoff_ms: float = Field(5.0, ge=0, description="first retry back-off, doubled each time")
    breaker_failures: int = Field(5, ge=1, description="consecutive backend failures that open its circuit")
    breaker_open_s: float = Field(5.0, gt=0, description="how long an open circuit refuses before a trial")
    max_request_bytes: int = Field(1 << 20, ge=1024, description="largest HTTP body or gRPC message")
    max_instances: int = Field(256, ge=1, description="most instances in one :predict request")
    max_request_pixels: int = Field(
        1 << 22, ge=64, description="pixels the images of one :predict request decode in all (each: 1024×1024)"
    )
    require_api_key: bool = Field(True, description="predictions need a key (admin routes always do)")
    bootstrap_keys: str = Field(
        "",
        description="comma-separated keys (fwk_<id>_<secret>) registered at start with scopes predict,admin: "
        "how Helm and CI provision a first key; make the rest with `flywheel keys create`",
    )
    key_cache_s: float = Field(2.0, ge=0, description="how long a looked-up key is trusted (revocation delay)")
    default_rate_per_s: float = Field(100.0, gt=0, description="requests per second of a key without its own")
    default_burst: int = Field(200, ge=1, description="bucket size of a key without its own")
    events: bool = Field(True, description="use Kafka: prediction logs, rollback events, follow flywheel.models")
    events_group: str = Field("", description="consumer group for flywheel.models; empty = unique per process")
    log_queue_bound: int = Field(10000, ge=1, description="prediction logs waiting for Kafka before drops")
    log_max_features: int = Field(4096, ge=0, description="inputs larger than this are logged without features")
    fetch_allowed_hosts: str = Field(
        "", description=":predict images given by URL: hosts they may come from, comma-separated (empty: no URLs)"
    )
    fetch_max_bytes: int = Field(10 * 1024 * 1024, gt=0, description="largest image fetched for :predict")
    fetch_timeout_s: float = Field(5.0, gt=0, description="time limit of one :predict fetch, redirects included")
    canary_weight: float = Field(0.1, ge=0, le=1, description="share of traffic for a canary set by an event")
    rollback_window_s: float = Field(60.0, gt=0, description="canary health window")
    rollback_min_requests: int = Field(20, ge=1, description="canary answers in the window before judging")
    rollback_max_error_rate: float = Field(0.2, ge=0, le=1, description="canary error rate that rolls it back")
    rollback_max_p99_ms: float = Field(1000.0, gt=0, description="canary p99 latency that rolls it back")
    event_loop: Literal["uvloop", "asyncio"] = Field("uvloop", description="asyncio event loop implementation")
    drain_timeout_s: float = Field(
        10.0,
        gt=0,
        description="the most SIGTERM to exit takes: unready, answering with Connection: close, then finishing "
        "in-flight requests (HTTP and gRPC)",
    )
