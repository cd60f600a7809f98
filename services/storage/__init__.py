"""SQL metadata (SQLAlchemy + Alembic) and the content-addressed object store (fsspec)."""

from services.storage.db import Database, migrate
from services.storage.objects import ObjectStore

__all__ = ["Database", "ObjectStore", "migrate"]
