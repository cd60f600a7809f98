"""LakeSettings: every field is the env var FLYWHEEL_LAKE_<FIELD>."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class LakeSettings(BaseSettings):
    """Each field is an env var FLYWHEEL_LAKE_<FIELD>; `--help` lists them with defaults."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_LAKE_", extra="ignore")

    root: str = Field("", description="fsspec URL of the lake; empty means file://$FLYWHEEL_HOME/lake")
    host: str = Field("127.0.0.1", description="address the HTTP and gRPC servers bind")
    http_port: int = Field(8200, ge=0, le=65535, description="health, metrics and REST; 0 picks a free port")
    grpc_port: int = Field(8201, ge=0, le=65535, description="gRPC flywheel.v1.Lake; 0 picks a free port")
    group: str = Field("flywheel-lake", min_length=1, description="Kafka consumer group")
    topics: str = Field("flywheel.labels,flywheel.predictions", description="comma-separated topics to sink")
    flush_rows: int = Field(5000, ge=1, le=1_000_000, description="most events written in one Parquet flush")
    flush_interval_s: float = Field(1.0, gt=0, le=600, description="longest wait before a partial batch is flushed")
    compact_min_files: int = Field(8, ge=2, description="compact a topic/date once it has this many small files")
    compact_small_rows: int = Field(50_000, ge=1, description="files with fewer rows than this are 'small'")
    compact_interval_s: float = Field(10.0, gt=0, description="how often the compactor looks for small files")
    gauges_interval_s: float = Field(15.0, gt=0, description="how often the aggregate gauges are recomputed")
    code_version: str = Field("", description="code version in snapshot ids; empty: a hash of the snapshot code")
    default_project: str = Field(
        "digits",
        pattern=r"^([a-z][a-z0-9_-]{0,62})?$",
        description="the project a snapshot request that names none cuts",
    )


def resolved_root(settings: LakeSettings, home: Path) -> str:
    return settings.root or f"file://{(home / 'lake').resolve()}"
