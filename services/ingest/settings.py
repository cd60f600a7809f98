"""IngestSettings: env FLYWHEEL_INGEST_<FIELD>, checked at start-up."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class IngestSettings(BaseSettings):
    """Each field is the env var FLYWHEEL_INGEST_<FIELD>; `--help` lists them with defaults."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_INGEST_", extra="ignore")

    host: str = Field("127.0.0.1", description="address the HTTP and gRPC servers bind")
    http_port: int = Field(8100, ge=0, le=65535, description="HTTP port (REST, webhooks, health); 0 picks a free one")
    grpc_port: int = Field(8101, ge=0, le=65535, description="gRPC port (flywheel.v1.Ingest); 0 picks a free one")
    webhook_token: str = Field(
        "", description="shared token Label Studio sends as `Authorization: Token <token>`; empty disables the webhook"
    )
    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0, description="largest HTTP body accepted (413 above)")
    max_batch: int = Field(5000, gt=0, description="most labels in one HTTP batch or gRPC stream chunk")
    default_project: str = Field(
        "digits",
        pattern=r"^([a-z][a-z0-9_-]{0,62})?$",
        description="the project of labels that name none (events, `POST /v1/labels`, `/webhooks/label-studio`); "
        "empty: every label must name its project",
    )
    label_studio_url: str = Field(
        "", description="Label Studio's base URL, for task data it stores (/data/upload/…, /data/local-files/…)"
    )
    label_studio_token: str = Field("", description="Label Studio API token (legacy `Authorization: Token …`)")
    label_studio_refresh_token: str = Field(
        "", description="or a Label Studio JWT refresh token (exchanged at /api/token/refresh/ for access tokens)"
    )
    fetch_allowed_hosts: str = Field(
        "", description="hosts task data may be fetched from over http(s), comma-separated (host or host:port)"
    )
    fetch_max_bytes: int = Field(20 * 1024 * 1024, gt=0, description="largest fetched task data")
    fetch_timeout_s: float = Field(10.0, gt=0, description="time limit of one fetch, redirects included")
    fetch_max_redirects: int = Field(3, ge=0, le=10, description="most redirects a fetch follows")
    fetch_attempts: int = Field(5, ge=1, le=50, description="tries before a fetch that keeps failing is dead-lettered")
    fetch_backoff_s: float = Field(1.0, gt=0, description="wait before the second try; doubles after each")
    fetch_workers: int = Field(4, ge=1, le=64, description="fetches in parallel")
    grpc_workers: int = Field(8, ge=1, le=256, description="gRPC label streams served at once (more: refused)")
    stream_max_labels: int = Field(20_000, gt=0, description="most labels in one gRPC stream")
    stream_max_bytes: int = Field(64 << 20, gt=0, description="most bytes of labels in one gRPC stream")
    stream_idle_s: float = Field(10.0, gt=0, description="a gRPC stream silent this long is cancelled")
    stream_max_s: float = Field(300.0, gt=0, description="a gRPC stream open this long is cancelled")
    consume_raw: bool = Field(True, description="consume flywheel.labels.raw from external producers")
    consumer_group: str = Field("ingest", min_length=1, description="Kafka consumer group for flywheel.labels.raw")
    raw_batch: int = Field(
        2000, gt=0, le=50000, description="most flywheel.labels.raw events stored, published and committed as one batch"
    )
    outbox_retry_s: float = Field(2.0, gt=0, description="how often unpublished outbox events are re-sent")
    outbox_keep_s: float = Field(
        900.0,
        ge=0,
        description="how long acknowledged events stay in the outbox: re-sent when the broker comes back "
        "without them (a restarted broker on memory storage, told by its new cluster id)",
    )

    @field_validator("label_studio_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s):// URL, e.g. http://label-studio:8080")
        return value.rstrip("/")

    def allowed_hosts(self) -> tuple[str, ...]:
        return tuple(h.strip() for h in self.fetch_allowed_hosts.split(",") if h.strip())
