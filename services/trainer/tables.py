"""The trainer's SQL tables (created by migrations/versions/trainer_000*.py)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Boolean, Column, DateTime, Float, Integer, MetaData, String, Table, Text

MIGRATIONS = Path(__file__).parent / "migrations" / "versions"

metadata = MetaData()

jobs = Table(
    "trainer_jobs",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("model", String(128), nullable=False),
    Column("model_family", String(64), nullable=False),
    Column("snapshot_id", String(128), nullable=False),
    Column("snapshot_uri", Text, nullable=False),
    Column("runner", String(16), nullable=False),
    Column("spec", Text, nullable=False),
    Column("phase", String(32), nullable=False, default=""),
    Column("fraction", Float, nullable=False, default=0.0),
    Column("message", Text, nullable=False, default=""),
    Column("metrics", Text, nullable=False, default="{}"),
    Column("reason", Text, nullable=False, default=""),
    Column("model_version", String(32), nullable=False, default=""),
    Column("report_uri", Text, nullable=False, default=""),
    Column("external_id", String(255), nullable=False, default=""),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
)

model_versions = Table(
    "trainer_model_versions",
    metadata,
    Column("model", String(128), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("stage", String(16), nullable=False),
    Column("model_family", String(64), nullable=False),
    Column("snapshot_id", String(128), nullable=False),
    Column("git_commit", String(64), nullable=False),
    Column("job_id", String(64), nullable=False),
    Column("hyperparameters", Text, nullable=False),
    Column("metrics", Text, nullable=False),
    Column("artifacts", Text, nullable=False),
    Column("platform", String(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("lineage", String(16), nullable=False, default="trained"),  # or "external" (flywheel models deploy)
    Column("project_version", Integer, nullable=False, default=0),  # the spec version it was built for
)

# One row per version of a project spec (canonical JSON); the latest version is the one in force.
projects = Table(
    "trainer_projects",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("spec", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
