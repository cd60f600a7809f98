"""When a lasting drift becomes a TrainRequest.

* **Per model version cooldown.** After a TrainRequest for drift in version v, further alerts
  about v wait `cooldown_s`. A new version has its own cooldown, so promoting a retrained model
  restarts the clock: a drift of the new version is never swallowed by an older alert.
* **Escalation.** Inside the cooldown, an alert whose drift is at least `escalation` times larger
  (share of the window's tests that drifted), and at least `escalation_gain` larger in absolute
  terms, than the one that caused the last request is sent anyway: a small, stale alert cannot
  lock out the real shift that follows it, and one drifted test becoming two is not a new shift.
* **Budget.** At most `budget` requests per model per `budget_period_s`, whatever else happens.

Every suppressed request is counted and remembered (`status()`, served by the monitor's
`GET /v1/retraining`), with the reason.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

SENT, ESCALATED, COOLDOWN, BUDGET = "sent", "escalated", "cooldown", "budget"
OUTCOMES = (SENT, ESCALATED, COOLDOWN, BUDGET)


@dataclass
class VersionRetraining:
    """What the policy knows about one model version, as `GET /v1/retraining` shows it."""

    model: str
    version: str
    last_sent_at: float | None = None
    last_sent_share: float = 0.0
    sent: int = 0
    suppressed: dict[str, int] = field(default_factory=dict)
    last_suppressed_at: float | None = None
    last_suppressed_reason: str = ""


@dataclass(frozen=True)
class Decision:
    outcome: str  # one of OUTCOMES
    reason: str

    @property
    def send(self) -> bool:
        return self.outcome in (SENT, ESCALATED)


@dataclass
class RetrainPolicy:
    cooldown_s: float
    budget: int
    budget_period_s: float
    escalation: float = 2.0
    escalation_gain: float = 0.1
    clock: Callable[[], float] = time.time
    _versions: dict[tuple[str, str], VersionRetraining] = field(default_factory=dict)
    _sent: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def seed(self, model: str, version: str, sent_at: float, drifted_share: float) -> None:
        """Remember a request sent before a restart (read back from flywheel.train.requests)."""
        with self._lock:
            self._sent.setdefault(model, deque()).append(sent_at)
            state = self._state(model, version)
            state.sent += 1
            if state.last_sent_at is None or sent_at >= state.last_sent_at:
                state.last_sent_at, state.last_sent_share = sent_at, drifted_share
            self._sent[model] = deque(sorted(self._sent[model]))

    def decide(self, model: str, version: str, drifted_share: float) -> Decision:
        """Whether an alert about `version` (with this drifted share) becomes a TrainRequest; records it."""
        now = self.clock()
        with self._lock:
            state = self._state(model, version)
            outcome, reason = SENT, "no request for this version yet"
            if state.last_sent_at is not None:
                age = now - state.last_sent_at
                reason = f"last request for v{version} {age:.0f} s ago"
                if age < self.cooldown_s:
                    grown = drifted_share >= max(
                        self.escalation * state.last_sent_share, state.last_sent_share + self.escalation_gain
                    )
                    if grown:
                        outcome = ESCALATED
                        reason += (
                            f", inside the {self.cooldown_s:.0f} s cooldown, but the drift grew from "
                            f"{state.last_sent_share:.0%} to {drifted_share:.0%} of the tests"
                        )
                    else:
                        outcome = COOLDOWN
                        reason += (
                            f", inside the {self.cooldown_s:.0f} s cooldown; {drifted_share:.0%} of the tests "
                            f"drifted, not {self.escalation:g}× (and {self.escalation_gain:.0%} more than) the "
                            f"{state.last_sent_share:.0%} that caused it"
                        )
            if outcome != COOLDOWN:
                sent = self._sent.setdefault(model, deque())
                while sent and now - sent[0] >= self.budget_period_s:
                    sent.popleft()
                if len(sent) >= self.budget:
                    outcome = BUDGET
                    reason = f"{len(sent)} requests for {model} in the last {self.budget_period_s:.0f} s (budget)"
            if outcome in (SENT, ESCALATED):
                self._sent.setdefault(model, deque()).append(now)
                state.sent += 1
                state.last_sent_at, state.last_sent_share = now, drifted_share
            else:
                state.suppressed[outcome] = state.suppressed.get(outcome, 0) + 1
                state.last_suppressed_at, state.last_suppressed_reason = now, reason
            return Decision(outcome, reason)

    def status(self) -> list[VersionRetraining]:
        with self._lock:
            return [
                VersionRetraining(**{**s.__dict__, "suppressed": dict(s.suppressed)})
                for _, s in sorted(self._versions.items())
            ]

    def _state(self, model: str, version: str) -> VersionRetraining:
        key = (model, version)
        state = self._versions.get(key)
        if state is None:
            state = self._versions[key] = VersionRetraining(model, version)
        return state
