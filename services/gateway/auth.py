"""Who is calling and may they: key → scope → rate limit. Transport adapters pass the presented key in."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from services.gateway.errors import PermissionDenied, RateLimited, Unauthenticated
from services.gateway.keys import KeyStore
from services.gateway.metrics import AUTH_FAILURES
from services.gateway.ratelimit import TokenBuckets


@dataclass(frozen=True)
class Caller:
    key_id: str  # "" when keys are not required and none was presented


ANONYMOUS = Caller("")


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

    async def admit(self, key: str | None, scope: str) -> Caller:
        """Authenticate, check the scope, take a token; raise the matching GatewayError otherwise."""
        if key is None:
            if scope == "predict" and not self._require_key:
                return ANONYMOUS
            AUTH_FAILURES.labels("missing").inc()
            raise Unauthenticated(f"an API key with scope '{scope}' is required (Authorization: Bearer <key>)")
        try:
            found = self._keys.cached(key)
            if found is None:
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

    async def admit_headers(self, headers: Mapping[str, str], scope: str) -> str:
        """`admit` for a request's lower-case headers (HTTP) or metadata (gRPC); the caller's key id."""
        key = presented_key(headers.get("authorization"), headers.get("x-api-key"))
        return (await self.admit(key, scope)).key_id
