"""A circuit breaker per backend: closed → open after N consecutive failures → one trial → closed."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
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
    """One breaker per backend (model-server address + model + version), made on first use.

    A backend's name holds a caller's model name, so there are at most `max_breakers`: past that,
    the least recently used closed breaker (no state worth keeping) is forgotten, with its gauge.
    """

    def __init__(self, failures: int, open_s: float, max_breakers: int = 1024) -> None:
        self._failures = failures
        self._open_s = open_s
        self._max = max_breakers
        self._breakers: OrderedDict[str, CircuitBreaker] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str) -> CircuitBreaker:
        with self._lock:
            b = self._breakers.get(name)
            if b is not None:
                self._breakers.move_to_end(name)
                return b
            if len(self._breakers) >= self._max:
                self._forget_one()
            b = self._breakers[name] = CircuitBreaker(name, self._failures, self._open_s)
            return b

    def __len__(self) -> int:
        return len(self._breakers)

    def _forget_one(self) -> None:
        victim = next((n for n, b in self._breakers.items() if not b.is_open), None)
        if victim is None:  # every one is open: the oldest goes (its backend gets a fresh trial)
            victim = next(iter(self._breakers))
        del self._breakers[victim]
        CIRCUIT_OPEN.remove(victim)
