"""IngestSettings: env FLYWHEEL_INGEST_<FIELD>, checked at start-up."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.preprocessing import DIGIT_LABELS


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
    labels: str = Field(",".join(DIGIT_LABELS), description="allowed labels, comma-separated (the label schema)")
    label_schema_version: int = Field(1, ge=1, description="version of the label schema, stored with each label")
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

    @field_validator("labels")
    @classmethod
    def _labels_not_empty(cls, value: str) -> str:
        items = [v.strip() for v in value.split(",") if v.strip()]
        if not items:
            raise ValueError("at least one label is required, e.g. 0,1,2")
        if len(set(items)) != len(items):
            raise ValueError("labels must be unique")
        return ",".join(items)

    def allowed_labels(self) -> tuple[str, ...]:
        return tuple(self.labels.split(","))
