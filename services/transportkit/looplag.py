"""How far behind its event loop a service is, so overload the queues cannot see is refused early.

Over HTTP/1.1 past a server's capacity the backlog is not in any queue the server keeps: it is in
socket buffers and in ready callbacks the loop has not reached. Every request is still read, parsed and
queued in its turn, so nothing is shed and the wait grows as long as the overload lasts (measured on the
model server at 6000/s of CNN JSON on one core: batcher queue 36 deep, nothing shed, perf_analyzer's
answers ever later). A probe on the loop every `interval_s` measures how late it ran; a loop late at
`sustain` probes in a row is behind, and a service refuses new work then, before parsing it. A single
stall (a collection, a slow batch) makes one late probe, not a streak, so it refuses nothing.
"""

from __future__ import annotations

import asyncio

from prometheus_client import Gauge

LOOP_LAG = Gauge("flywheel_event_loop_lag_seconds", "How late the last probe of the event loop ran")


class LoopLag:
    """`behind` once the loop has run more than `limit_s` late at `sustain` probes in a row; limit 0 = never."""

    def __init__(self, limit_s: float, interval_s: float = 0.01, sustain: int = 3) -> None:
        self.limit_s = limit_s
        self.interval_s = interval_s
        self.sustain = sustain
        self.lag_s = 0.0
        self._streak = 0
        self._due = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None

    @property
    def behind(self) -> bool:
        return self._streak >= self.sustain

    def start(self) -> None:
        """Probe the running loop until `stop` (no probe at all when the limit is 0)."""
        if self.limit_s <= 0 or self._handle is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._schedule(self._loop.time())

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self, now: float) -> None:
        assert self._loop is not None
        self._due = now + self.interval_s
        self._handle = self._loop.call_at(self._due, self._probe)

    def _probe(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        self.lag_s = max(0.0, now - self._due)
        self._streak = self._streak + 1 if self.lag_s > self.limit_s else 0
        LOOP_LAG.set(self.lag_s)
        self._schedule(now)
