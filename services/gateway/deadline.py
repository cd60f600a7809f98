"""A request's deadline: the earliest of the gateway's limit and what the client asked for."""

from __future__ import annotations

import time
from dataclasses import dataclass

from services.gateway.errors import DeadlineExceeded


@dataclass(frozen=True)
class Deadline:
    at: float  # time.monotonic() value

    @classmethod
    def within(cls, limit_s: float, *client_s: float | None) -> Deadline:
        """The earliest of the gateway's limit and the caller's budgets (None: the caller set none). A
        budget already spent (a gRPC call whose deadline passed on the way in) is expired, not ignored."""
        budget = min([limit_s, *(c for c in client_s if c is not None)])
        return cls(time.monotonic() + budget)

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def check(self) -> float:
        left = self.remaining()
        if left <= 0:
            raise DeadlineExceeded("deadline exceeded before the model server answered")
        return left
