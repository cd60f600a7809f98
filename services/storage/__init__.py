"""SQL metadata (SQLAlchemy + Alembic) and the content-addressed object store (fsspec).

The names are imported on first use (PEP 562), not with the package: the model server imports
`services.storage.model_store` and `services.storage.s3` only, and its image has no SQLAlchemy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.storage.db import Database, migrate
    from services.storage.objects import ObjectStore

__all__ = ["Database", "ObjectStore", "migrate"]

_WHERE = {
    "Database": "services.storage.db",
    "migrate": "services.storage.db",
    "ObjectStore": "services.storage.objects",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
