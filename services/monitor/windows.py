"""Sliding windows of one model version's predictions, by count and by (event) time.

* count window: the last `size` predictions, evaluated every `step` new ones;
* time window: the predictions of the last `span_s` seconds of event time, evaluated each time
  event time passes another `step_s` (event time, not wall time, so a replay gives the same windows).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    kind: str  # "count" or "time"
    features: np.ndarray  # (n, d)
    predicted: list[str]
    end_time: float
    last_event_id: str


class VersionWindows:
    def __init__(self, size: int, step: int, span_s: float, step_s: float, time_max: int) -> None:
        self.size, self.step, self.span_s, self.step_s = size, step, span_s, step_s
        cap = max(size, time_max)
        self._rows: deque[np.ndarray] = deque(maxlen=cap)
        self._labels: deque[str] = deque(maxlen=cap)
        self._times: deque[float] = deque(maxlen=cap)
        self._time_max = time_max
        self._since_count = 0
        self._next_time: float | None = None
        self._pending_time = False
        self.last_event_id = ""

    def add(self, row: np.ndarray, predicted: str, event_time: float, event_id: str) -> None:
        self._rows.append(row)
        self._labels.append(predicted)
        self._times.append(event_time)
        self._since_count += 1
        self.last_event_id = event_id
        if self._next_time is None:
            self._next_time = event_time + self.step_s
        elif event_time >= self._next_time:
            self._pending_time = True
            while self._next_time <= event_time:
                self._next_time += self.step_s

    def __len__(self) -> int:
        return len(self._rows)

    def due(self) -> list[str]:
        """The window kinds due for evaluation now."""
        kinds = []
        if self._since_count >= self.step:
            kinds.append("count")
        if self._pending_time:
            kinds.append("time")
        return kinds

    def take(self, kind: str, dim: int | None = None) -> Window:
        """The window of that kind (only rows of `dim` features, when given); marks it evaluated."""
        end = self._times[-1] if self._times else 0.0
        if kind == "count":
            self._since_count = 0
            k = min(self.size, len(self._rows))
            rows = list(self._rows)[-k:]
            labels = list(self._labels)[-k:]
        else:
            self._pending_time = False
            start = end - self.span_s
            keep = np.fromiter(self._times, dtype=np.float64, count=len(self._times)) > start
            all_rows, all_labels = list(self._rows), list(self._labels)
            idx = np.nonzero(keep)[0][-self._time_max :]
            rows = [all_rows[i] for i in idx]
            labels = [all_labels[i] for i in idx]
        if dim is not None:
            kept = [i for i, r in enumerate(rows) if len(r) == dim]
            rows, labels = [rows[i] for i in kept], [labels[i] for i in kept]
        feats = np.stack(rows) if rows else np.zeros((0, dim or 0))
        return Window(kind, feats, labels, end, self.last_event_id)
