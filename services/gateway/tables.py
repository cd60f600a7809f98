"""The gateway's SQL tables (created by its Alembic branch in migrations/versions)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Column, DateTime, Float, Integer, MetaData, String, Table, func

MIGRATIONS = Path(__file__).parent / "migrations" / "versions"

metadata = MetaData()

api_keys = Table(
    "gateway_api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("key_hash", String(128), nullable=False),
    Column("scopes", String(255), nullable=False),
    Column("rate_per_s", Float, nullable=True),
    Column("burst", Integer, nullable=True),
    Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

routes = Table(
    "gateway_routes",
    metadata,
    Column("model", String(255), primary_key=True),
    Column("production", String(32), nullable=False, server_default=""),
    Column("canary", String(32), nullable=False, server_default=""),
    Column("canary_weight", Float, nullable=False, server_default="0"),
    Column("shadow", String(32), nullable=False, server_default=""),
    Column("updated_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
)
