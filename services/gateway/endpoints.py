"""Client-side balancing over every address of the model server's name (several replicas, one name).

The configured `host:port` is resolved to ALL its addresses (a Kubernetes headless Service answers
one A record per ready pod) and re-resolved every `refresh_s`; each address keeps its own state
(connection pool, requests in flight, ejection). The algorithm, per attempt:

* `pick`: among addresses not ejected (and not the one the previous attempt just failed on), the
  one with the fewest requests in flight; ties are taken in turn (a rotating start index), so
  sequential traffic is plain round robin.
* `eject`: an address that could not be reached or answered 503 gets no traffic for `eject_s`; the
  caller's retry (modelserver_client.py's retry budget) then picks another.
* every address ejected: pick among all of them anyway: never refuse for lack of a healthy one.
* re-resolution: new addresses join (up to `MAX_ENDPOINTS`, each checked to be an `IP:port`, so
  metric labels stay bounded), vanished ones leave and their idle connections close. A failed or
  empty lookup keeps the current set.

A configured IP literal is one fixed endpoint, never re-resolved: the gateway behaves as before.
Until the first lookup returns, the name itself is the one endpoint (its connection resolves it).
Re-resolution starts lazily from `pick` (a clock comparison per call), so no task has to be owned.
No transport types: the pool is whatever `make_pool(connect_addr)` builds.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, Protocol, TypeVar

from services.gateway.metrics import UPSTREAM_EJECTIONS, UPSTREAM_OUTSTANDING, UPSTREAM_REQUESTS, UPSTREAM_RESENDS

log = logging.getLogger(__name__)

MAX_ENDPOINTS = 64  # most addresses kept (and labelled in metrics) for one name
RESOLVE_TIMEOUT_S = 2.0
UNRESOLVED = "unresolved"  # the metric label of the configured name before its first lookup

# (host, port) → "IP:port" strings ("[v6]:port" for IPv6); raises OSError when the lookup fails.
Resolver = Callable[[str, int], Awaitable[list[str]]]


class Pool(Protocol):
    async def close(self) -> None: ...


P = TypeVar("P", bound=Pool)


def split_addr(addr: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` → (host, port); ValueError when it is not one."""
    host, sep, port = addr.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{addr!r} is not host:port")
    return host, int(port)


def ip_port(addr: str) -> str | None:
    """`addr` in canonical `IP:port` form, or None when it is not an IP address and a port."""
    try:
        host, port = split_addr(addr)
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


async def dns_resolver(host: str, port: int) -> list[str]:
    """Every TCP address of `host` (the event loop's getaddrinfo: a thread, or libuv's pool). IPv4 only
    when there is any: a dual-stack name must not send a share of traffic to a family the model
    server may not listen on (it binds one host); IPv6 when that is all there is."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    v4 = [f"{sa[0]}:{sa[1]}" for family, _, _, _, sa in infos if family == socket.AF_INET]
    return v4 or [f"[{sa[0]}]:{sa[1]}" for family, _, _, _, sa in infos if family == socket.AF_INET6]


def static_resolver(addrs: Iterable[str]) -> Resolver:
    """A resolver that always answers `addrs`: for tests only (FLYWHEEL_GATEWAY_MODELSERVER_TEST_ADDRS),
    since one name with several A records cannot be made on 127.0.0.1 without a DNS server."""
    fixed = list(addrs)

    async def resolve(host: str, port: int) -> list[str]:
        return fixed

    return resolve


class Endpoint(Generic[P]):
    """One address: its pool, requests in flight, ejection deadline, and its metric children."""

    __slots__ = ("_requests", "addr", "ejected_until", "label", "outstanding", "pool")

    def __init__(self, addr: str, pool: P, label: str) -> None:
        self.addr = addr
        self.pool = pool
        self.label = label
        self.outstanding = 0
        self.ejected_until = 0.0
        # Looked up once: `.labels()` per request would cost more than the pick itself. The gauge is
        # read at scrape time, so an attempt pays for one counter increment, not three metric updates.
        self._requests = UPSTREAM_REQUESTS.labels(label)
        UPSTREAM_OUTSTANDING.labels(label).set_function(lambda: self.outstanding)

    def begin(self) -> None:
        self.outstanding += 1
        self._requests.inc()

    def end(self) -> None:
        self.outstanding -= 1


class Endpoints(Generic[P]):
    def __init__(
        self,
        target: str,
        make_pool: Callable[[str], P],
        resolve: Resolver | None = dns_resolver,
        refresh_s: float = 5.0,
        eject_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`target`: the configured host:port; `make_pool(addr)`: a connection pool to one address;
        `resolve`: the lookup (None or an IP-literal target: one fixed endpoint, never re-resolved)."""
        self.target = target
        self._host, self._port = split_addr(target)
        self._make_pool = make_pool
        self._refresh_s = refresh_s
        self._eject_s = eject_s
        self._clock = clock
        literal = ip_port(target)
        self._resolve = None if literal is not None and resolve is dns_resolver else resolve
        self._endpoints: list[Endpoint[P]] = [Endpoint(target, make_pool(target), literal or UNRESOLVED)]
        self._turn = 0
        self._refresh_at = 0.0 if self._resolve is not None else float("inf")
        self._refreshing: asyncio.Task[None] | None = None
        self._retired: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._endpoints)

    def addrs(self) -> list[str]:
        return [e.addr for e in self._endpoints]

    def iter_for_probe(self) -> list[Endpoint[P]]:
        """Every address, not ejected first (a readiness probe tries them until one answers)."""
        now = self._clock()
        if now >= self._refresh_at:
            self._start_refresh(now)
        return sorted(self._endpoints, key=lambda e: e.ejected_until > now)

    def pick(self, avoid: Endpoint[P] | None = None) -> Endpoint[P]:
        """The address for the next attempt (see the module docstring); `avoid`: the one that just failed."""
        now = self._clock()
        if now >= self._refresh_at:
            self._start_refresh(now)
        eps = self._endpoints
        n = len(eps)
        if n == 1:
            return eps[0]
        best: Endpoint[P] | None = None
        best_i = 0
        fallback: Endpoint[P] | None = None
        fallback_i = 0
        start = self._turn % n
        for k in range(n):
            i = (start + k) % n
            e = eps[i]
            if e.ejected_until > now or e is avoid:
                if fallback is None or e.outstanding < fallback.outstanding:
                    fallback, fallback_i = e, i
                continue
            if best is None or e.outstanding < best.outstanding:
                best, best_i = e, i
        if best is None:  # every address ejected: try them anyway, fewest in flight first
            best, best_i = fallback, fallback_i  # type: ignore[assignment]
        self._turn = best_i + 1
        return best  # type: ignore[return-value]

    def eject(self, endpoint: Endpoint[P]) -> None:
        """No traffic to `endpoint` for `eject_s` (unless every address is ejected)."""
        if len(self._endpoints) > 1 and endpoint.ejected_until <= self._clock():
            UPSTREAM_EJECTIONS.labels(endpoint.label).inc()
            log.warning("model server address ejected", extra={"addr": endpoint.addr, "eject_s": self._eject_s})
        endpoint.ejected_until = self._clock() + self._eject_s

    def _start_refresh(self, now: float) -> None:
        self._refresh_at = now + self._refresh_s
        if self._refreshing is None or self._refreshing.done():
            try:
                self._refreshing = asyncio.get_running_loop().create_task(self.refresh())
            except RuntimeError:  # no loop running (a synchronous caller): the next pick in a loop does it
                self._refresh_at = now

    async def refresh(self) -> None:
        """Look the name up once more and adopt its addresses (a failed or empty lookup changes nothing)."""
        assert self._resolve is not None
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                found = await self._resolve(self._host, self._port)
        except (OSError, TimeoutError) as exc:
            log.warning(
                "model server lookup failed; keeping its addresses",
                extra={"target": self.target, "error": str(exc) or type(exc).__name__},
            )
            return
        self.adopt(found)

    def adopt(self, found: Iterable[str]) -> None:
        """Make the set of endpoints `found` (checked IP:port, deduplicated, sorted, at most MAX_ENDPOINTS)."""
        valid: set[str] = set()
        for raw in found:
            addr = ip_port(raw)
            if addr is None:
                log.warning("lookup answered a non IP:port address; ignored", extra={"addr": raw[:100]})
            else:
                valid.add(addr)
        if not valid:
            log.warning("model server lookup found no address; keeping its addresses", extra={"target": self.target})
            return
        # Sorted, so every gateway keeps the same MAX_ENDPOINTS when a name has more.
        wanted = sorted(valid)[:MAX_ENDPOINTS]
        current = {e.addr: e for e in self._endpoints}
        if list(current) == wanted:
            return
        self._endpoints = [current.get(a) or Endpoint(a, self._make_pool(a), a) for a in wanted]
        gone = [e for a, e in current.items() if a not in wanted]
        for e in gone:
            self._retire(e)
        log.info("model server addresses", extra={"target": self.target, "addrs": wanted})

    def _retire(self, endpoint: Endpoint[P]) -> None:
        for metric in (UPSTREAM_REQUESTS, UPSTREAM_OUTSTANDING, UPSTREAM_EJECTIONS, UPSTREAM_RESENDS):
            try:
                metric.remove(endpoint.label)
            except KeyError:  # no sample was ever made for it
                pass
        task = asyncio.get_running_loop().create_task(endpoint.pool.close())
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
        for e in self._endpoints:
            await e.pool.close()
        if self._retired:
            await asyncio.gather(*self._retired, return_exceptions=True)
