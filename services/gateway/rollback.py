"""Canary health: outcomes of a canary version over a time window, judged against thresholds.

Only the gateway's view counts: backend failures (runtime errors, unreachable, deadline) are
errors; a client's bad request is not the canary's fault and is not recorded.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    window_s: float
    min_requests: int
    max_error_rate: float
    max_p99_ms: float


@dataclass(frozen=True)
class Verdict:
    model: str
    version: str
    reason: str  # "error_rate" or "p99"
    detail: str


class CanaryWatch:
    def __init__(self, thresholds: Thresholds, clock: Callable[[], float] = time.monotonic) -> None:
        self._t = thresholds
        self._clock = clock
        self._windows: dict[tuple[str, str], deque[tuple[float, bool, float]]] = {}
        self._lock = threading.Lock()

    def forget(self, model: str, version: str) -> None:
        with self._lock:
            self._windows.pop((model, version), None)

    def record(self, model: str, version: str, ok: bool, latency_s: float) -> Verdict | None:
        """Record one canary outcome; return a Verdict when the canary must be rolled back."""
        now = self._clock()
        with self._lock:
            window = self._windows.setdefault((model, version), deque())
            window.append((now, ok, latency_s))
            while window and window[0][0] < now - self._t.window_s:
                window.popleft()
            if len(window) < self._t.min_requests:
                return None
            n = len(window)
            errors = sum(1 for _, good, _ in window if not good)
            latencies = sorted(lat for _, _, lat in window)
        rate = errors / n
        if rate > self._t.max_error_rate:
            return Verdict(model, version, "error_rate", f"{errors}/{n} failed (limit {self._t.max_error_rate:.0%})")
        p99_ms = latencies[min(n - 1, int(0.99 * n))] * 1000
        if p99_ms > self._t.max_p99_ms:
            return Verdict(model, version, "p99", f"p99 {p99_ms:.1f} ms over {self._t.max_p99_ms:.1f} ms")
        return None
