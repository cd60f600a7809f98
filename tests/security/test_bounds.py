"""State a caller's strings create is bounded (finding 7), on the transport-free pieces themselves: the
gateway's circuit breakers (one per backend name, and a name holds the caller's model name) and the
model names that may become metric labels. tests/security/test_findings.py checks the labels end to end."""

from __future__ import annotations

from services.gateway.breaker import Breakers
from services.gateway.dataplane import KnownModels


def test_breakers_are_bounded_and_keep_the_open_ones() -> None:
    breakers = Breakers(failures=1, open_s=60, max_breakers=10)
    failing = breakers.get("ms/real/1")
    failing.failure()
    assert failing.is_open
    for i in range(1000):
        breakers.get(f"ms/made-up-{i}/default")
    assert len(breakers) == 10
    assert breakers.get("ms/real/1") is failing and failing.is_open  # an open breaker was never evicted


def test_known_models_are_bounded() -> None:
    known = KnownModels(limit=3)
    for name in ("a", "b", "c", "d", "e"):
        known.add(name)
    assert "a" in known and "c" in known and "d" not in known
