"""SIGTERM/SIGINT → a stop event the service's loops watch, so in-flight work finishes."""

from __future__ import annotations

import signal
import threading
from types import FrameType


class StopSignal:
    """Set on the first SIGTERM or SIGINT; a second signal exits at once."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def install(self) -> StopSignal:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.event.is_set():
            raise SystemExit(128 + signum)
        self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self.event.wait(timeout)
