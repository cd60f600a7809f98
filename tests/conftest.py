"""Shared fixtures: real brokers (Tansu and Apache Kafka), databases (SQLite and PostgreSQL), an S3 server
(Versity S3 Gateway, tests/support/s3.py).

Broker fixtures are parametrized so a Kafka test runs on both. Apache Kafka needs the jars
from `make kafka-jars`; PostgreSQL needs FLYWHEEL_TEST_POSTGRES_URL (set by .ci/run). In CI
(CI=true) a missing one fails the run instead of skipping, so a broken install cannot hide.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.devstack.brokers import Broker, kafka_jars_present, start_broker
from services.devstack.ports import free_port
from services.events import ensure_topics
from tests.support.required import unavailable
from tests.support.s3 import S3Server, running_s3_server


@pytest.fixture(scope="session")
def broker_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("brokers")


_brokers: dict[str, Broker] = {}


@pytest.fixture(scope="session", params=["tansu", "apache"])
def kafka(request: pytest.FixtureRequest, broker_work: Path) -> Iterator[Broker]:
    """A running broker with Flywheel's topics, shared by the session (one per kind)."""
    kind = request.param
    if kind == "apache" and not kafka_jars_present():
        unavailable("Apache Kafka jars missing: run `make kafka-jars`")
    broker = start_broker(kind, broker_work)
    ensure_topics(broker.bootstrap)
    yield broker
    broker.stop()


@pytest.fixture
def tansu(tmp_path: Path) -> Iterator[Broker]:
    """A fresh Tansu broker of this test's own (for tests that restart or kill the broker)."""
    broker = start_broker("tansu", tmp_path)
    ensure_topics(broker.bootstrap)
    yield broker
    broker.stop()


@pytest.fixture
def group_id() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'flywheel.db'}"
        return
    base = os.environ.get("FLYWHEEL_TEST_POSTGRES_URL")
    if not base:
        unavailable("PostgreSQL not configured: set FLYWHEEL_TEST_POSTGRES_URL")
    from sqlalchemy import create_engine, text

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = base.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3-compatible server with random keys, shared by the session (each test uses its own bucket)."""
    with running_s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server
