"""Per-key token buckets: `rate` tokens a second up to `burst`; an empty bucket says when to retry."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass
class _Bucket:
    rate: float
    burst: float
    tokens: float
    at: float


class TokenBuckets:
    def __init__(self, default_rate: float, default_burst: int, clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        self._default = (default_rate, float(default_burst))
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def take(self, key_id: str, rate: float | None = None, burst: int | None = None) -> float:
        """Take one token; return 0.0 when allowed, else the seconds until a token is there."""
        r = rate or self._default[0]
        b = float(burst) if burst else self._default[1]
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key_id)
            if bucket is None or bucket.rate != r or bucket.burst != b:
                bucket = self._buckets[key_id] = _Bucket(r, b, b, now)
            bucket.tokens = min(bucket.burst, bucket.tokens + (now - bucket.at) * bucket.rate)
            bucket.at = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / bucket.rate
