"""The replica picker (services/gateway/endpoints.py) on its own: least outstanding, round-robin ties,
ejection and return, the all-ejected fallback, and re-resolution adding and removing addresses.

The resolver is a fake function injected into `Endpoints`: one name with several A records cannot
be made on 127.0.0.1 without running a DNS server. The pools are fakes that only record `close`
(no connection is opened here); tests/gateway/test_replicas.py runs the real thing end to end.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from prometheus_client import REGISTRY

from services.gateway.endpoints import MAX_ENDPOINTS, Endpoints, dns_resolver, ip_port

A, B, C = "10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"


class FakePool:
    def __init__(self, addr: str) -> None:
        self.addr = addr
        self.closed = False

    async def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeDns:
    """A resolver answering whatever `answer` holds (or raising it, when it is an exception)."""

    def __init__(self, answer: list[str] | OSError) -> None:
        self.answer = answer
        self.calls = 0

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls += 1
        assert (host, port) == ("modelserver.ns.svc", 8000)
        if isinstance(self.answer, OSError):
            raise self.answer
        return list(self.answer)


async def _endpoints(answer: list[str], clock: Clock) -> tuple[Endpoints[FakePool], FakeDns]:
    dns = FakeDns(answer)
    eps: Endpoints[FakePool] = Endpoints("modelserver.ns.svc:8000", FakePool, dns, refresh_s=5, eject_s=10, clock=clock)
    await eps.refresh()
    return eps, dns


def test_least_outstanding_then_round_robin_ties() -> None:
    async def scenario() -> None:
        eps, _ = await _endpoints([C, A, B], Clock())
        assert eps.addrs() == [A, B, C]
        # Nothing in flight: every pick is a tie, taken in turn.
        assert [eps.pick().addr for _ in range(6)] == [A, B, C, A, B, C]
        # Requests in flight: the address with the fewest wins, whoever's turn it is.
        a, b, c = eps.pick(), eps.pick(), eps.pick()
        a.begin(), a.begin(), b.begin()
        assert {eps.pick().addr for _ in range(5)} == {C}
        c.begin()  # B and C tie at 1, A has 2: B and C alternate
        assert Counter(eps.pick().addr for _ in range(6)) == {B: 3, C: 3}
        a.end(), a.end(), b.end(), c.end()
        assert [e.outstanding for e in (a, b, c)] == [0, 0, 0]
        # `avoid` (the address the previous attempt failed on) is passed over while another is healthy.
        assert all(eps.pick(avoid=a).addr != A for _ in range(4))

    asyncio.run(scenario())


def test_ejection_lasts_eject_s_and_every_ejected_still_answers() -> None:
    async def scenario() -> None:
        clock = Clock()
        eps, _ = await _endpoints([A, B, C], clock)
        a = next(e for e in (eps.pick() for _ in range(3)) if e.addr == A)
        eps.eject(a)
        assert A not in {eps.pick().addr for _ in range(9)}
        clock.now += 9.9
        assert A not in {eps.pick().addr for _ in range(9)}
        clock.now += 0.2  # 10 s later it is back in rotation
        assert {eps.pick().addr for _ in range(3)} == {A, B, C}

        # Every address ejected: picks still answer, spread by outstanding count and turn.
        for e in list(eps._endpoints):
            eps.eject(e)
        picked = [eps.pick() for _ in range(3)]
        assert {e.addr for e in picked} == {A, B, C}
        picked[0].begin()
        assert eps.pick().addr != picked[0].addr

    asyncio.run(scenario())


def test_re_resolution_adds_and_removes_addresses() -> None:
    async def scenario() -> None:
        clock = Clock()
        eps, dns = await _endpoints([A, B], clock)
        a = eps.pick()
        a_pool = a.pool
        a.begin()  # state is kept per address across a refresh
        dns.answer = [B, C]
        clock.now += 5.0
        eps.pick()  # due: this pick starts a lookup in the background
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert dns.calls == 2 and eps.addrs() == [B, C]
        await asyncio.sleep(0)
        assert a_pool.closed  # the address that left has its pool closed
        assert {eps.pick().addr for _ in range(4)} == {B, C}
        # Not due yet: no lookup.
        eps.pick()
        await asyncio.sleep(0)
        assert dns.calls == 2

        # A failed lookup, an empty one, or one with junk keeps what is known; junk never becomes an address.
        for answer in (OSError("SERVFAIL"), [], ["not-an-ip:80", "10.0.0.9"]):
            dns.answer = answer
            await eps.refresh()
            assert eps.addrs() == [B, C]
        # At most MAX_ENDPOINTS addresses (each one is a metric label).
        dns.answer = [f"10.1.{i // 250}.{i % 250}:8000" for i in range(MAX_ENDPOINTS + 10)]
        await eps.refresh()
        assert len(eps) == MAX_ENDPOINTS
        await eps.close()

    asyncio.run(scenario())


def test_an_ip_literal_is_one_fixed_endpoint_and_a_name_starts_as_itself() -> None:
    async def scenario() -> None:
        fixed: Endpoints[FakePool] = Endpoints("127.0.0.1:8000", FakePool, dns_resolver)
        assert [fixed.pick().addr for _ in range(3)] == ["127.0.0.1:8000"] * 3
        assert fixed._refreshing is None  # never looked up

        dns = FakeDns([A, B])
        named: Endpoints[FakePool] = Endpoints("modelserver.ns.svc:8000", FakePool, dns)
        first = named.pick()  # before the first lookup answers, the name itself (its connect resolves it)
        assert first.addr == "modelserver.ns.svc:8000" and first.pool.addr == "modelserver.ns.svc:8000"
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert named.addrs() == [A, B] and dns.calls == 1

    asyncio.run(scenario())


def test_per_address_metrics_count_requests_and_outstanding() -> None:
    async def scenario() -> None:
        eps, dns = await _endpoints([A, B], Clock())
        e = eps.pick()
        assert e.addr == A
        requests = "flywheel_gateway_upstream_requests_total"
        before = REGISTRY.get_sample_value(requests, {"addr": e.addr}) or 0.0
        e.begin()
        assert REGISTRY.get_sample_value("flywheel_gateway_upstream_outstanding", {"addr": e.addr}) == 1
        e.end()
        assert REGISTRY.get_sample_value(requests, {"addr": e.addr}) == before + 1
        assert REGISTRY.get_sample_value("flywheel_gateway_upstream_outstanding", {"addr": e.addr}) == 0
        # An address that leaves takes its series with it (labels stay bounded by what the lookup returns).
        dns.answer = [B]
        await eps.refresh()
        assert REGISTRY.get_sample_value(requests, {"addr": A}) is None

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("10.0.0.1:80", "10.0.0.1:80"),
        ("[::1]:80", "[::1]:80"),
        ("host:80", None),
        ("10.0.0.1", None),
        ("1.2.3.4:0", None),
    ],
)
def test_only_ip_port_is_an_address(raw: str, canonical: str | None) -> None:
    assert ip_port(raw) == canonical


def test_the_dns_resolver_answers_every_ipv4_address_of_a_name() -> None:
    """A real lookup (localhost, from the hosts file): IP:port strings, IPv4 preferred."""
    found = asyncio.run(dns_resolver("localhost", 8000))
    assert "127.0.0.1:8000" in found and all(ip_port(a) == a and not a.startswith("[") for a in found)
