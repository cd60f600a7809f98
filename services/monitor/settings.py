"""MonitorSettings: every field is the env var FLYWHEEL_MONITOR_<FIELD>."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class MonitorSettings(BaseSettings):
    """Each field is an env var FLYWHEEL_MONITOR_<FIELD>; `--help` lists them with defaults."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_MONITOR_", extra="ignore")

    host: str = Field("127.0.0.1", description="address the HTTP server binds")
    http_port: int = Field(8400, ge=0, le=65535, description="health and /metrics; 0 picks a free port")
    group: str = Field("flywheel-monitor", min_length=1, description="Kafka consumer group")
    lake_root: str = Field("", description="fsspec URL of the lake; empty means file://$FLYWHEEL_HOME/lake")
    model_repository: str = Field(
        "", description="optional Triton repository; <model>/<version>/flywheel.json gives a version's snapshot_id"
    )
    features: Literal["auto", "all", "derived", "raw"] = Field(
        "auto",
        description="which features are tested: derived image statistics, the raw features, or both; "
        "auto: the image statistics when the profile has them, else the raw features",
    )
    window_size: int = Field(200, ge=10, le=100_000, description="count window: the last N predictions")
    window_step: int = Field(50, ge=1, le=100_000, description="count window: evaluated every N new predictions")
    time_window_s: float = Field(300.0, gt=0, description="time window: predictions of the last T seconds (event time)")
    time_step_s: float = Field(30.0, gt=0, description="time window: evaluated every T seconds of event time")
    time_window_max: int = Field(5000, ge=10, description="most predictions a time window keeps (the newest)")
    min_samples: int = Field(100, ge=5, description="a window with fewer predictions is not tested")
    alpha: float = Field(0.005, gt=0, lt=1, description="family-wise significance per window (after correction)")
    correction: Literal["bh", "bonferroni"] = Field("bh", description="multiple-testing correction")
    min_drifted_share: float = Field(0.0, ge=0, le=1, description="a window drifts when more than this share drifts")
    min_effect: float = Field(
        0.3,
        ge=0,
        description="a significant feature drifts only if its PSI, less what sampling noise gives, is at least this "
        "(0.1: small, 0.25: large by the usual PSI rule of thumb); see the monitor's README",
    )
    dedupe: bool = Field(
        True, description="test each distinct input of a window once (repeats carry no new information)"
    )
    persist_windows: int = Field(3, ge=1, description="consecutive drifted windows that make a DriftAlert")
    alert_repeat_s: float = Field(300.0, ge=0, description="while drift lasts, repeat the DriftAlert this often")
    train_cooldown_s: float = Field(
        3600.0, ge=0, description="after a TrainRequest for a model version, its further alerts wait this long"
    )
    train_escalation: float = Field(
        2.0,
        ge=1,
        description="inside the cooldown, an alert whose drifted share is this many times the last request's is sent",
    )
    train_budget: int = Field(6, ge=0, description="at most this many TrainRequests per model per budget period")
    train_budget_period_s: float = Field(86400.0, gt=0, description="the budget's period")
    train_budget_s: float = Field(600.0, ge=0, description="budget_s (training seconds) put in each TrainRequest")
    train_model_family: str = Field("", description="model_family put in each TrainRequest (empty: trainer's default)")
    train_hyperparameters: str = Field(
        "",
        pattern=r"^([A-Za-z_][A-Za-z0-9_]*=[^,=]+(,[A-Za-z_][A-Za-z0-9_]*=[^,=]+)*)?$",
        description="hyperparameters put in each TrainRequest, as name=value,name=value (empty: trainer's defaults)",
    )
    label_join_max: int = Field(100_000, ge=0, description="predictions kept to join with later labels (0: off)")
    accuracy_window: int = Field(500, ge=1, description="live accuracy over the last N labelled predictions")


def resolved_lake_root(settings: MonitorSettings, home: Path) -> str:
    return (settings.lake_root or f"file://{(home / 'lake').resolve()}").rstrip("/")


def parse_hyperparameters(text: str) -> dict[str, str]:
    """`lr=0.001,width=256` → {"lr": "0.001", "width": "256"} (the setting's pattern already checked it)."""
    return dict(item.split("=", 1) for item in text.split(",") if item)
