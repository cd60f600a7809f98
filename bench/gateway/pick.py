"""`make bench-gateway-pick`: what the replica picker (services/gateway/endpoints.py) adds to each attempt.

Times, in this process, `pick()` alone and one attempt's whole bookkeeping (`pick()` + `begin()` +
`end()`: the Prometheus counter and gauge included) with 1 address (an IP literal: today's case)
and with 3 and 64 addresses (a name with that many replicas), nothing in flight. Best of `--rounds`
rounds of `--n` calls each (the minimum is the cost; the rest is other load on the box). Writes
bench/results/gateway-pick.json.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from bench import report
from services.gateway.endpoints import Endpoints, static_resolver


class _NoPool:
    async def close(self) -> None:
        return None


async def _endpoints(n: int) -> Endpoints[_NoPool]:
    if n == 1:
        return Endpoints("127.0.0.1:8000", lambda _: _NoPool())
    addrs = [f"10.0.{i // 250}.{i % 250 + 1}:8000" for i in range(n)]
    eps: Endpoints[_NoPool] = Endpoints("modelserver:8000", lambda _: _NoPool(), static_resolver(addrs))
    await eps.refresh()
    assert len(eps) == n
    return eps


def _best_us(fn: object, n: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn(n)  # type: ignore[operator]
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e6


async def _measure(n: int, rounds: int) -> list[dict[str, object]]:
    rows = []
    for size in (1, 3, 64):
        eps = await _endpoints(size)

        def pick_only(k: int, eps: Endpoints[_NoPool] = eps) -> None:
            for _ in range(k):
                eps.pick()

        def attempt(k: int, eps: Endpoints[_NoPool] = eps) -> None:
            for _ in range(k):
                e = eps.pick()
                e.begin()
                e.end()

        rows.append(
            {
                "addresses": size,
                "pick_us": round(_best_us(pick_only, n, rounds), 3),
                "pick_begin_end_us": round(_best_us(attempt, n, rounds), 3),
            }
        )
        await eps.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("bench/results/gateway-pick.json"))
    args = parser.parse_args()
    rows = asyncio.run(_measure(args.n, args.rounds))
    for row in rows:
        print(row)
    report.write_json(args.out, {**report.stamp(), "n": args.n, "rounds": args.rounds, "rows": rows})


if __name__ == "__main__":
    main()
