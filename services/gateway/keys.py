"""API keys: created once and shown once, stored only as a SHA-256 hash, looked up by their public id.

A key reads `fwk_<key_id>_<secret>`: the id is public (logs, PredictionLog.key_id), the secret is
32 random bytes. Because the secret is high-entropy, one SHA-256 is a sufficient hash (no
password stretching needed), and comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update

from services.gateway.errors import Unauthenticated
from services.gateway.metrics import KEY_LOOKUPS
from services.gateway.tables import api_keys
from services.storage import Database

SCOPES = ("predict", "admin")
PREFIX = "fwk"


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    scopes: frozenset[str]
    rate_per_s: float | None
    burst: int | None
    created_at: datetime | None
    revoked: bool


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def split_key(key: str) -> str:
    """The key id of a presented key; Unauthenticated when it is not shaped like one of ours."""
    parts = key.split("_")
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
        raise Unauthenticated("malformed API key")
    return parts[1]


class KeyStore:
    def __init__(self, db: Database, cache_s: float = 2.0) -> None:
        self._db = db
        self._cache_s = cache_s
        self._cache: dict[str, tuple[float, str, ApiKey] | None] = {}
        self._cache_at: dict[str, float] = {}
        self._verified: dict[str, str] = {}  # key id → the presented key that last matched its hash
        self._lock = threading.Lock()
        self._ids: frozenset[str] = frozenset()  # every key id in the table, as of the last refresh_ids()

    # -- administration (CLI) ---------------------------------------------------------------
    def create(self, name: str, scopes: list[str], rate_per_s: float | None = None, burst: int | None = None) -> str:
        """Create a key and return it; this is the only time the secret exists in clear."""
        bad = [s for s in scopes if s not in SCOPES]
        if bad or not scopes:
            raise ValueError(f"unknown scopes {bad}; choose from {', '.join(SCOPES)}")
        key_id = secrets.token_hex(6)
        key = f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32).replace('_', '-')}"
        with self._db.session() as s:
            s.execute(
                api_keys.insert().values(
                    key_id=key_id,
                    name=name,
                    key_hash=hash_key(key),
                    scopes=",".join(sorted(set(scopes))),
                    rate_per_s=rate_per_s,
                    burst=burst,
                )
            )
        return key

    def ensure(self, key: str, name: str, scopes: list[str]) -> bool:
        """Register a key made elsewhere (a Kubernetes Secret); True when it was new. Idempotent.

        ValueError when the key is malformed or its id is taken by a different key.
        """
        try:
            key_id = split_key(key)
        except Unauthenticated as exc:
            raise ValueError(f"{exc}: expected fwk_<id>_<secret>") from None
        if len(key.split("_")[2]) < 16:
            raise ValueError(f"key {key_id}: the secret part must be at least 16 characters")
        with self._db.session() as s:
            row = s.execute(select(api_keys).where(api_keys.c.key_id == key_id)).first()
            if row is not None:
                if not hmac.compare_digest(row.key_hash, hash_key(key)):
                    raise ValueError(f"key id {key_id} already belongs to a different key")
                return False
            s.execute(
                api_keys.insert().values(
                    key_id=key_id, name=name, key_hash=hash_key(key), scopes=",".join(sorted(set(scopes)))
                )
            )
        return True

    def revoke_others(self, name: str, keep: set[str]) -> list[str]:
        """Revoke every live key called `name` whose id is not in `keep`; return the ids revoked. How a
        bootstrap key taken out of the settings stops working (bootstrap keys are made by `ensure`)."""
        gone = [k.key_id for k in self.list() if k.name == name and not k.revoked and k.key_id not in keep]
        for key_id in gone:
            self.revoke(key_id)
        return gone

    def list(self) -> list[ApiKey]:
        with self._db.session() as s:
            rows = s.execute(select(api_keys).order_by(api_keys.c.created_at)).all()
        return [_row_key(r) for r in rows]

    def revoke(self, key_id: str) -> bool:
        with self._db.session() as s:
            result = s.execute(
                update(api_keys)
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
        with self._lock:
            self._cache.pop(key_id, None)
        return bool(result.rowcount)

    # -- verification (hot path) ------------------------------------------------------------
    def refresh_ids(self) -> None:
        """Read every key id (one query, however many callers wait on it): an id not among them is refused
        without a query of its own, so made-up key ids cost the database nothing (auth.Guard paces this)."""
        KEY_LOOKUPS.labels("ids").inc()
        with self._db.session() as s:
            ids = frozenset(s.execute(select(api_keys.c.key_id)).scalars())
        self._ids = ids

    def has_id(self, key_id: str) -> bool:
        return key_id in self._ids

    def cached(self, key: str) -> ApiKey | None:
        """The key if a recent lookup is cached; None means: call `verify` (it hits the database)."""
        key_id = split_key(key)
        with self._lock:
            entry = self._cache.get(key_id)
        if entry is None or time.monotonic() - entry[0] > self._cache_s:
            return None
        if entry[2].revoked is False and hmac.compare_digest(self._verified.get(key_id, ""), key):
            return entry[2]  # this exact key matched the hash already: no sha256 per request
        found = _check(key, entry[1], entry[2])
        self._verified[key_id] = key
        return found

    def verify(self, key: str) -> ApiKey:
        key_id = split_key(key)
        KEY_LOOKUPS.labels("key").inc()
        with self._db.session() as s:
            row = s.execute(select(api_keys).where(api_keys.c.key_id == key_id)).first()
        if row is None:
            raise Unauthenticated("unknown API key")
        found = _row_key(row)
        with self._lock:
            self._cache[key_id] = (time.monotonic(), row.key_hash, found)
        return _check(key, row.key_hash, found)


def _check(key: str, key_hash: str, found: ApiKey) -> ApiKey:
    if not hmac.compare_digest(hash_key(key), key_hash):
        raise Unauthenticated("wrong API key")
    if found.revoked:
        raise Unauthenticated("API key revoked")
    return found


def _row_key(row: object) -> ApiKey:
    return ApiKey(
        key_id=row.key_id,  # type: ignore[attr-defined]
        name=row.name,  # type: ignore[attr-defined]
        scopes=frozenset(s for s in row.scopes.split(",") if s),  # type: ignore[attr-defined]
        rate_per_s=row.rate_per_s,  # type: ignore[attr-defined]
        burst=row.burst,  # type: ignore[attr-defined]
        created_at=row.created_at,  # type: ignore[attr-defined]
        revoked=row.revoked_at is not None,  # type: ignore[attr-defined]
    )
