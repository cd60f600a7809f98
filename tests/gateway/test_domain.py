"""The gateway's domain pieces on their own: keys and routes in real SQLite and PostgreSQL, token
buckets, the circuit breaker, the canary window and the sticky split (clocks injected, no sleeps)."""

from __future__ import annotations

import pytest

from services.gateway.breaker import CircuitBreaker
from services.gateway.errors import CircuitOpen, InvalidInput, Unauthenticated
from services.gateway.keys import KeyStore
from services.gateway.ratelimit import TokenBuckets
from services.gateway.rollback import CanaryWatch, Thresholds
from services.gateway.routing import Route, RouteTable, sticky_unit
from services.gateway.tables import MIGRATIONS
from services.storage import Database, migrate


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_keys_and_routes_in_sql(database_url: str) -> None:
    migrate(database_url, [MIGRATIONS])
    migrate(database_url, [MIGRATIONS])  # idempotent
    db = Database(database_url)
    store = KeyStore(db, cache_s=0)
    key = store.create("svc", ["predict"], rate_per_s=5, burst=7)
    found = store.verify(key)
    assert found.scopes == {"predict"} and found.rate_per_s == 5 and found.burst == 7
    with pytest.raises(Unauthenticated):
        store.verify(key[:-1] + ("x" if key[-1] != "x" else "y"))
    with pytest.raises(ValueError):
        store.create("bad", ["root"])
    assert store.revoke(found.key_id) and not store.revoke(found.key_id)
    with pytest.raises(Unauthenticated, match="revoked"):
        store.verify(key)
    assert [k.revoked for k in store.list()] == [True]

    table = RouteTable(db)
    table.put(Route("digits", production="1", canary="2", canary_weight=0.3, shadow="3"))
    table.update("digits", canary_weight=0.4)
    reloaded = RouteTable(db)
    reloaded.load()
    assert reloaded.get("digits") == Route("digits", "1", "2", 0.4, "3")
    with pytest.raises(InvalidInput):
        table.put(Route("digits", production="x"))
    with pytest.raises(InvalidInput):
        table.put(Route("digits", production="1", canary_weight=0.5))
    db.close()


def test_token_bucket() -> None:
    clock = Clock()
    buckets = TokenBuckets(default_rate=2, default_burst=3, clock=clock)
    assert [buckets.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("k") == pytest.approx(0.5)
    assert buckets.take("other") == 0.0
    clock.now += 0.5
    assert buckets.take("k") == 0.0


def test_circuit_breaker() -> None:
    clock = Clock()
    breaker = CircuitBreaker("b", failures=2, open_s=5, clock=clock)
    breaker.failure()
    breaker.before()
    breaker.failure()
    with pytest.raises(CircuitOpen):
        breaker.before()
    clock.now += 5
    breaker.before()  # the one trial
    with pytest.raises(CircuitOpen):
        breaker.before()
    breaker.failure()  # trial failed: open again
    with pytest.raises(CircuitOpen):
        breaker.before()
    clock.now += 5
    breaker.before()
    breaker.success()
    breaker.before()
    assert not breaker.is_open


def test_canary_window() -> None:
    clock = Clock()
    watch = CanaryWatch(Thresholds(window_s=10, min_requests=5, max_error_rate=0.2, max_p99_ms=100), clock)
    for _ in range(4):
        assert watch.record("m", "2", False, 0.01) is None  # too few to judge
    verdict = watch.record("m", "2", True, 0.01)
    assert verdict is not None and verdict.reason == "error_rate"
    watch.forget("m", "2")
    clock.now += 20
    for _ in range(4):
        assert watch.record("m", "3", True, 0.5) is None
    verdict = watch.record("m", "3", True, 0.5)
    assert verdict is not None and verdict.reason == "p99"
    for _ in range(10):
        assert watch.record("m", "4", True, 0.01) is None


def test_sticky_split_is_stable_and_uniform() -> None:
    assert sticky_unit("digits", "alice") == sticky_unit("digits", "alice")
    units = [sticky_unit("digits", f"user-{i}") for i in range(10000)]
    assert abs(sum(u < 0.3 for u in units) / 10000 - 0.3) < 0.02
    table = RouteTable(None)
    table.put(Route("digits", production="1", canary="2", canary_weight=0.5))
    assert len({table.choose("digits", "", "alice").version for _ in range(50)}) == 1
    assert table.choose("digits", "7", None).version == "7"
    assert table.choose("other", "", None).version == ""
