"""One SQLAlchemy engine per process, and Alembic migrations across every service's branch.

Each service keeps its own Alembic branch (its own `migrations/` folder with a branch label)
so that services evolve their tables independently; `migrate()` upgrades all heads.
SQLite is the default; PostgreSQL works through the same URL (`postgresql+psycopg://…`).
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

BASE_MIGRATIONS = Path(__file__).parent / "migrations"


def _make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            # WAL lets readers run beside the one writer; synchronous=FULL keeps commits durable.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on any exception."""
        with self._sessions.begin() as session:
            yield session

    def ping(self) -> tuple[bool, str]:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True, "ok"
        except Exception as exc:  # noqa: BLE001 - readiness reports the reason
            return False, f"database unreachable: {type(exc).__name__}"

    def close(self) -> None:
        self.engine.dispose()


SERVICES_DIR = Path(__file__).resolve().parent.parent


def all_migration_dirs() -> list[Path]:
    """Every service's Alembic branch (`services/<name>/migrations/versions`).

    A database shared by several services records each one's head in `alembic_version`; Alembic
    must see every branch to upgrade any of them, or it fails with "Can't locate revision".
    """
    return sorted(p for p in SERVICES_DIR.glob("*/migrations/versions") if p.parent.parent.name != "storage")


def migrate(url: str, service_migrations: Sequence[Path] = ()) -> None:
    """Upgrade the database at `url` to every head: the shared base and every service's branch.

    `service_migrations` adds locations outside `services/` (plugins, tests).
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(BASE_MIGRATIONS))
    extra = [Path(p).resolve() for p in service_migrations]
    known = all_migration_dirs()
    locations = [BASE_MIGRATIONS / "versions", *known, *(p for p in extra if p not in known)]
    cfg.set_main_option("version_locations", " ".join(str(p) for p in locations))
    cfg.set_main_option("path_separator", "space")
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    with _migration_lock(url):
        command.upgrade(cfg, "heads")


@contextmanager
def _migration_lock(url: str) -> Iterator[None]:
    """One migrator at a time: services (and replicas) that start together would race on CREATE TABLE.

    PostgreSQL: a session advisory lock. SQLite: an exclusive flock on a file beside the database.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_KEY})
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
        finally:
            engine.dispose()
    elif backend == "sqlite" and parsed.database and parsed.database != ":memory:":
        lock_path = Path(parsed.database).with_name(Path(parsed.database).name + ".migrate.lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with lock_path.open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    else:
        yield


_LOCK_KEY = 0x466C7977  # "Flyw": the advisory lock id of Flywheel's migrations
