"""When a lasting drift becomes a TrainRequest: at most one per model per cooldown, within a budget."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class RetrainPolicy:
    cooldown_s: float
    budget: int
    budget_period_s: float
    clock: Callable[[], float] = time.time
    _last: dict[str, float] = field(default_factory=dict)
    _sent: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def seed(self, model: str, sent_at: list[float]) -> None:
        """Remember requests sent before a restart (read back from flywheel.train.requests)."""
        with self._lock:
            sent = self._sent.setdefault(model, deque())
            for t in sorted(sent_at):
                sent.append(t)
                self._last[model] = max(self._last.get(model, t), t)

    def decide(self, model: str) -> str:
        """ "sent" (and records it), "cooldown" or "budget"."""
        now = self.clock()
        with self._lock:
            last = self._last.get(model)
            if last is not None and now - last < self.cooldown_s:
                return "cooldown"
            sent = self._sent.setdefault(model, deque())
            while sent and now - sent[0] >= self.budget_period_s:
                sent.popleft()
            if len(sent) >= self.budget:
                return "budget"
            sent.append(now)
            self._last[model] = now
            return "sent"
