"""A request's deadline: the earliest of the gateway's limit and what the client asked for."""

from __future__ import annotations

import time
from dataclasses import dataclass

from services.gateway.errors import DeadlineExceeded

# A deadline shorter than this that runs out is the caller's choice, not the backend's failing: it
# never counts against a circuit breaker or a canary (one key could otherwise open both at will).
MIN_JUDGED_BUDGET_S = 0.1


@dataclass(frozen=True)
class Deadline:
    at: float  # time.monotonic() value
    budget_s: float = float("inf")  # the whole budget it started with

    @classmethod
    def within(cls, limit_s: float, *client_s: float | None) -> Deadline:
        """The earliest of the gateway's limit and the caller's budgets (None: the caller set none). A
        budget already spent (a gRPC call whose deadline passed on the way in) is expired, not ignored."""
        budget = min([limit_s, *(c for c in client_s if c is not None)])
        return cls(time.monotonic() + budget, budget)

    @property
    def judged(self) -> bool:
        """Whether running out of this deadline says something about the backend (see MIN_JUDGED_BUDGET_S)."""
        return self.budget_s >= MIN_JUDGED_BUDGET_S

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def expired(self, message: str) -> DeadlineExceeded:
        return DeadlineExceeded(message, backend_fault=self.judged)

    def check(self) -> float:
        left = self.remaining()
        if left <= 0:
            raise self.expired("deadline exceeded before the model server answered")
        return left
