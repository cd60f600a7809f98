"""Alembic migrations across services sharing one database (SQLite; PostgreSQL when configured)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from services.gateway.tables import MIGRATIONS as GATEWAY
from services.ingest.tables import MIGRATIONS as INGEST
from services.storage.db import all_migration_dirs, migrate
from services.trainer.tables import MIGRATIONS as TRAINER
from tests.support.required import unavailable


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_services_migrate_one_database_in_any_order(tmp_path: Path, backend: str) -> None:
    """The gateway, then the trainer, then ingest migrate the same database: each finds the others' heads."""
    if backend == "postgres":
        base = os.environ.get("FLYWHEEL_TEST_POSTGRES_URL")
        if not base:
            unavailable("FLYWHEEL_TEST_POSTGRES_URL not set")
        schema = f"mig_{uuid.uuid4().hex[:8]}"
        admin = create_engine(base)
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        sep = "&" if "?" in base else "?"
        url = f"{base}{sep}options=-csearch_path%3D{schema}"
    else:
        url = f"sqlite:///{tmp_path / 'shared.db'}"
    try:
        for dirs in ([GATEWAY], [TRAINER], [INGEST], [GATEWAY]):
            migrate(url, dirs)
        engine = create_engine(url)
        tables = set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            heads = {row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))}
        engine.dispose()
    finally:
        if backend == "postgres":
            with admin.begin() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            admin.dispose()
    # base_0001 is folded into the service heads that depend on it.
    assert len(heads) == len(all_migration_dirs()), heads
    assert "processed_events" in tables
    assert len(tables) >= 4, tables


def test_concurrent_migrations_of_one_database(tmp_path: Path) -> None:
    """Services started together migrate the same SQLite file at once: the lock serialises them."""
    import multiprocessing

    url = f"sqlite:///{tmp_path / 'race.db'}"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=migrate, args=(url,)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    engine = create_engine(url)
    assert "processed_events" in inspect(engine).get_table_names()
    engine.dispose()
