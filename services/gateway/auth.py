"""Who is calling and may they: key → scope → rate limit. Transport adapters pass the presented key in."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass

from services.gateway.errors import PermissionDenied, RateLimited, Unauthenticated
from services.gateway.keys import KeyStore, split_key
from services.gateway.metrics import AUTH_FAILURES
from services.gateway.ratelimit import TokenBuckets


@dataclass(frozen=True)
class Caller:
    key_id: str  # "" when keys are not required and none was presented


ANONYMOUS = Caller("")
# The key id an anonymous caller's token bucket is filed under (real ids are hex: no clash).
ANONYMOUS_BUCKET = "-anonymous"
# Unknown key ids: at most one read of the key table per this many seconds, whatever the callers send.
ID_REFRESH_S = 0.25


class _IdRefresh:
    """One read of every key id, shared by every request that waits for it; it starts no sooner than
    ID_REFRESH_S after the previous one, and after every waiter arrived (so a key made just before it
    was presented is found)."""

    def __init__(self, keys: KeyStore, after: _IdRefresh | None, last_query: float) -> None:
        self.started_query: float | None = None
        self.task = asyncio.ensure_future(self._run(keys, after, last_query))

    async def _run(self, keys: KeyStore, after: _IdRefresh | None, last_query: float) -> None:
        if after is not None:
            await asyncio.wait([after.task])
            last_query = after.started_query or last_query
        wait = last_query + ID_REFRESH_S - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self.started_query = time.monotonic()
        await asyncio.to_thread(keys.refresh_ids)


def presented_key(authorization: str | None, api_key_header: str | None) -> str | None:
    """`Authorization: Bearer <key>` or `X-API-Key: <key>` (gRPC metadata uses the same names)."""
    if api_key_header:
        return api_key_header.strip()
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        raise Unauthenticated("Authorization must be 'Bearer <API key>'")
    return None


class Guard:
    def __init__(self, keys: KeyStore, buckets: TokenBuckets, require_key: bool) -> None:
        self._keys = keys
        self._buckets = buckets
        self._require_key = require_key
        self._refresh: _IdRefresh | None = None
        self._last_query = float("-inf")

    async def admit(self, key: str | None, scope: str) -> Caller:
        """Authenticate, check the scope, take a token; raise the matching GatewayError otherwise."""
        if key is None:
            if scope == "predict" and not self._require_key:
                wait = self._buckets.take(ANONYMOUS_BUCKET)  # anonymous callers share one bucket
                if wait > 0:
                    AUTH_FAILURES.labels("rate").inc()
                    raise RateLimited(f"rate limit of anonymous callers exceeded; retry in {wait:.3f}s", wait)
                return ANONYMOUS
            AUTH_FAILURES.labels("missing").inc()
            raise Unauthenticated(f"an API key with scope '{scope}' is required (Authorization: Bearer <key>)")
        try:
            found = self._keys.cached(key)
            if found is None:
                if not await self._id_exists(split_key(key)):
                    raise Unauthenticated("unknown API key")
                found = await asyncio.to_thread(self._keys.verify, key)
        except Unauthenticated:
            AUTH_FAILURES.labels("invalid").inc()
            raise
        if scope not in found.scopes:
            AUTH_FAILURES.labels("scope").inc()
            raise PermissionDenied(f"API key {found.key_id} lacks scope '{scope}'")
        wait = self._buckets.take(found.key_id, found.rate_per_s, found.burst)
        if wait > 0:
            AUTH_FAILURES.labels("rate").inc()
            raise RateLimited(f"rate limit of API key {found.key_id} exceeded; retry in {wait:.3f}s", wait)
        return Caller(found.key_id)

    async def _id_exists(self, key_id: str) -> bool:
        """Whether the key table holds `key_id`, reading it again (paced, shared) when it did not before."""
        if self._keys.has_id(key_id):
            return True
        pending = self._refresh
        if pending is None or pending.task.done() or pending.started_query is not None:
            # No read that starts after this request: queue one (after the one running, if any).
            running = pending if pending is not None and not pending.task.done() else None
            if pending is not None and pending.started_query is not None:
                self._last_query = pending.started_query
            pending = self._refresh = _IdRefresh(self._keys, running, self._last_query)
        await asyncio.shield(pending.task)
        return self._keys.has_id(key_id)

    async def admit_headers(self, headers: Mapping[str, str], scope: str) -> str:
        """`admit` for a request's lower-case headers (HTTP) or metadata (gRPC); the caller's key id."""
        key = presented_key(headers.get("authorization"), headers.get("x-api-key"))
        return (await self.admit(key, scope)).key_id
