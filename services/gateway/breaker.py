"""A circuit breaker per backend: closed → open after N consecutive failures → one trial → closed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from services.gateway.errors import CircuitOpen
from services.gateway.metrics import CIRCUIT_OPEN


class CircuitBreaker:
    def __init__(self, name: str, failures: int, open_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._threshold = failures
        self._open_s = open_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = False
        self._lock = threading.Lock()

    def before(self) -> None:
        """Raise CircuitOpen while open; after the cool-down let exactly one trial call through."""
        with self._lock:
            if self._opened_at is None:
                return
            if self._clock() - self._opened_at < self._open_s or self._trial:
                raise CircuitOpen(f"backend {self.name} is failing; circuit open, retry later")
            self._trial = True

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._trial = False
            if self._opened_at is not None:
                self._opened_at = None
                CIRCUIT_OPEN.labels(self.name).set(0)

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._trial or (self._opened_at is None and self._failures >= self._threshold):
                self._opened_at = self._clock()
                CIRCUIT_OPEN.labels(self.name).set(1)
            self._trial = False

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._opened_at is not None


class Breakers:
    """One breaker per backend (model-server address + model + version), made on first use."""

    def __init__(self, failures: int, open_s: float) -> None:
        self._failures = failures
        self._open_s = open_s
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> CircuitBreaker:
        with self._lock:
            b = self._breakers.get(name)
            if b is None:
                b = self._breakers[name] = CircuitBreaker(name, self._failures, self._open_s)
            return b
