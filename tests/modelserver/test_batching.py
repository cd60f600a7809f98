"""The adaptive batcher's parts, called directly: EDF queue, cost model, AIMD, the wait rule, buckets.

No timing assertions: time is passed in as numbers, and the async Batcher runs a plain numpy
function as its backend.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from services.modelserver.batching import (
    RETRY_MAX_S,
    RETRY_MIN_S,
    Aimd,
    ArrivalRate,
    Batcher,
    BatcherConfig,
    CostModel,
    EdfQueue,
    Pending,
    Throughput,
    bucket_key,
    decide,
    retry_hint,
)
from services.modelserver.errors import DeadlineExceeded, Overloaded


def pending(deadline: float, rows: int = 1, key: object = "k", enqueued: float = 0.0, hard: bool = False) -> Pending:
    return Pending(deadline=deadline, rows=rows, key=key, inputs={}, enqueued=enqueued, hard=hard)


def test_edf_order_with_fifo_among_equal_deadlines() -> None:
    q = EdfQueue()
    a, b, c, d = pending(5.0), pending(3.0), pending(5.0), pending(1.0)
    for p in (a, b, c, d):
        q.push(p)
    assert q.head() is d
    assert q.pop_batch("k", 10) == [d, b, a, c]  # a before c: same deadline, a arrived first
    assert len(q) == 0 and q.head() is None


def test_pop_batch_respects_rows_and_always_takes_the_head() -> None:
    q = EdfQueue()
    big, small1, small2 = pending(1.0, rows=8), pending(2.0, rows=3), pending(3.0, rows=3)
    for p in (big, small1, small2):
        q.push(p)
    assert q.pop_batch("k", 4) == [big]  # over the cap, but the head goes alone rather than never
    assert q.pop_batch("k", 4) == [small1]
    assert q.rows("k") == 3


def test_buckets_batch_only_equal_shapes() -> None:
    short = {"x": np.zeros((2, 8), np.float32)}
    long = {"x": np.zeros((1, 16), np.float32)}
    assert bucket_key(short, batched=True) == bucket_key({"x": np.zeros((5, 8), np.float32)}, batched=True)
    assert bucket_key(short, batched=True) != bucket_key(long, batched=True)
    q = EdfQueue()
    p1 = pending(1.0, key=bucket_key(short, True))
    p2 = pending(2.0, key=bucket_key(long, True))
    p3 = pending(3.0, key=bucket_key(short, True))
    for p in (p1, p2, p3):
        q.push(p)
    assert q.pop_batch(q.head().key, 64) == [p1, p3]
    assert q.pop_batch(q.head().key, 64) == [p2]


def test_expire_removes_only_past_hard_deadlines_even_behind_late_soft_ones() -> None:
    q = EdfQueue()
    soft_late = pending(0.5, rows=2)  # the SLO passed: late, but never dropped
    expired, ok = pending(1.0, hard=True), pending(10.0, hard=True)
    for p in (soft_late, expired, ok):
        q.push(p)
    assert q.expire(now=5.0) == [expired]  # found behind the late soft head
    assert len(q) == 2 and q.rows("k") == 3 and q.total_rows == 3
    assert q.head() is soft_late
    assert q.pop_batch("k", 64) == [soft_late, ok]
    assert q.expire(now=100.0) == []  # ok left in a batch: its stale hard entry expires nothing
    assert len(q) == 0 and q.head() is None


def test_discard_frees_the_place_at_once_and_stale_entries_stay_bounded() -> None:
    q = EdfQueue()
    a, b = pending(1.0, rows=3, hard=True), pending(2.0, rows=1)
    q.push(a)
    q.push(b)
    q.discard(a)
    assert len(q) == 1 and q.rows("k") == 1 and q.count("k") == 1 and q.head() is b
    q.discard(a)  # twice is harmless
    assert len(q) == 1
    assert q.pop_batch("k", 64) == [b]
    # Hard requests that leave by pop_batch long before their deadline: the hard heap is compacted.
    for _ in range(1000):
        q.push(pending(1e9, hard=True))
        q.pop_batch("k", 64)
    assert len(q) == 0 and len(q._hard) <= 64 + 2


def test_cost_model_recovers_a_line_and_sizes_the_batch() -> None:
    cost = CostModel()
    for n in (1, 8, 16, 32, 64) * 3:
        cost.observe(n, 0.0002 * n + 0.003)
    assert cost.a == pytest.approx(0.0002, rel=1e-6)
    assert cost.b == pytest.approx(0.003, rel=1e-6)
    exact = CostModel(a=2**-12, b=2**-8)  # binary fractions: no rounding in the arithmetic
    assert exact.max_rows_within(2**-8 + 40 * 2**-12) == 40
    assert exact.max_rows_within(2**-9) == 0
    # One batch size only: the slope is kept, the intercept follows the observations.
    flat = CostModel(a=0.001, b=0.0)
    for _ in range(5):
        flat.observe(4, 0.010)
    assert flat.a == 0.001 and flat.b == pytest.approx(0.006)


def test_a_late_soft_head_stops_the_wait_and_takes_a_full_batch() -> None:
    cost = CostModel(a=2**-10, b=2 * 2**-10)
    q = EdfQueue()
    for _ in range(100):
        q.push(pending(deadline=1.0, enqueued=0.0))
    # Before the SLO passes the batch is sized for the head's deadline: a*n + b <= 1 - 0.99.
    assert decide(0.99, q, cost, limit=64, max_rows=64, mean_gap_s=None).max_rows == 8
    # Past it, nothing is left to size for: go at once, as large as the AIMD limit and max_batch_size allow,
    # even while more arrivals are expected.
    late = decide(1.5, q, cost, limit=64, max_rows=64, mean_gap_s=0.0001)
    assert late.dispatch and late.max_rows == 64
    assert decide(1.5, q, cost, limit=20, max_rows=64, mean_gap_s=0.0001).max_rows == 20
    # A hard head past its deadline is not sized up (the pump expires it before deciding).
    hard = EdfQueue()
    hard.push(pending(deadline=1.0, hard=True))
    for _ in range(10):
        hard.push(pending(deadline=5.0))
    assert decide(1.5, hard, cost, limit=64, max_rows=64, mean_gap_s=None).max_rows == 1


def test_aimd_halves_on_a_miss_and_grows_by_one() -> None:
    aimd = Aimd(cap=64)
    aimd.on_batch(missed=True)
    assert aimd.limit == 32
    aimd.on_batch(missed=True)
    assert aimd.limit == 16
    aimd.on_batch(missed=False)
    assert aimd.limit == 17
    for _ in range(100):
        aimd.on_batch(missed=False)
    assert aimd.limit == 64
    for _ in range(20):
        aimd.on_batch(missed=True)
    assert aimd.limit == 1


def test_no_wait_when_idle_and_no_arrivals_expected() -> None:
    q = EdfQueue()
    q.push(pending(deadline=1.0, enqueued=0.0))
    cost = CostModel(a=0.0001, b=0.005)
    d = decide(0.0, q, cost, limit=64, max_rows=64, mean_gap_s=None)
    assert d.dispatch and d.max_rows >= 1
    assert not decide(0.0, EdfQueue(), cost, limit=64, max_rows=64, mean_gap_s=0.001).dispatch  # nothing queued


def test_waits_only_while_waiting_pays() -> None:
    cost = CostModel(a=0.0001, b=0.005)  # a large fixed overhead per batch: batching pays
    q = EdfQueue()
    q.push(pending(deadline=1.0, enqueued=0.0))
    wait = decide(0.0, q, cost, limit=64, max_rows=64, mean_gap_s=0.0005)
    assert not wait.dispatch and wait.wait_s == pytest.approx(0.0005)
    # Arrivals too sparse: one request's expected delay exceeds the overhead saved.
    assert decide(0.0, q, cost, limit=64, max_rows=64, mean_gap_s=0.01).dispatch
    # Already waited long enough.
    assert decide(0.0049, q, cost, limit=64, max_rows=64, mean_gap_s=0.0005).dispatch
    # The head's deadline leaves no slack for another request.
    tight = EdfQueue()
    tight.push(pending(deadline=0.0052, enqueued=0.0))
    assert decide(0.0, tight, cost, limit=64, max_rows=64, mean_gap_s=0.0005).dispatch
    # Batching off: always one request at a time, at once.
    off = decide(0.0, q, cost, limit=64, max_rows=64, mean_gap_s=0.0005, adaptive=False)
    assert off.dispatch and off.max_rows == 1


def test_batch_size_keeps_the_earliest_deadline_and_the_caps() -> None:
    cost = CostModel(a=2**-10, b=2 * 2**-10)
    q = EdfQueue()
    for _ in range(100):
        q.push(pending(deadline=12 * 2**-10, enqueued=0.0))
    assert decide(0.0, q, cost, limit=64, max_rows=64, mean_gap_s=None).max_rows == 10  # a*10 + b == deadline
    assert decide(0.0, q, cost, limit=4, max_rows=64, mean_gap_s=None).max_rows == 4  # AIMD limit
    relaxed = EdfQueue()
    for _ in range(100):
        relaxed.push(pending(deadline=10.0, enqueued=0.0))
    assert decide(0.0, relaxed, cost, limit=64, max_rows=16, mean_gap_s=None).max_rows == 16  # max_batch_size


def test_arrival_rate_forgets_after_silence() -> None:
    rate = ArrivalRate()
    for t in (0.0, 0.001, 0.002, 0.003):
        rate.arrive(t)
    assert rate.expected_gap(0.0035) == pytest.approx(0.001)
    assert rate.expected_gap(1.0) is None


def test_batcher_answers_each_request_and_refuses_expired_and_overflow() -> None:
    weights = np.arange(4 * 2, dtype=np.float32).reshape(4, 2)
    batch_sizes: list[int] = []

    def run(instance: int, batch: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        stacked = np.concatenate([b["x"] for b in batch])
        batch_sizes.append(len(stacked))
        out = stacked @ weights
        sizes = np.cumsum([0, *[len(b["x"]) for b in batch]])
        return [{"y": out[sizes[i] : sizes[i + 1]]} for i in range(len(batch))]

    async def scenario() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher(BatcherConfig(max_batch_rows=8, instances=1, queue_bound=50), run, pool)
            batcher.start()
            xs = [np.full((1, 4), i, np.float32) for i in range(20)]
            far = time.monotonic() + 60
            outs = await asyncio.gather(*(batcher.submit({"x": x}, 1, "k", far, hard=True) for x in xs))
            for x, out in zip(xs, outs, strict=True):
                np.testing.assert_array_equal(out["y"], x @ weights)
            assert max(batch_sizes) <= 8 and sum(batch_sizes) == 20
            with pytest.raises(DeadlineExceeded):
                await batcher.submit({"x": xs[0]}, 1, "k", time.monotonic() - 1, hard=True)
            tiny = Batcher(BatcherConfig(max_batch_rows=8, instances=1, queue_bound=1), run, pool)
            # Not started: nothing drains the queue, so the second request finds it full.
            first = asyncio.ensure_future(tiny.submit({"x": xs[0]}, 1, "k", far, hard=True))
            await asyncio.sleep(0)
            with pytest.raises(Overloaded) as err:
                await tiny.submit({"x": xs[1]}, 1, "k", far, hard=True)
            assert err.value.retry_after_s > 0
            tiny.start()
            assert (await first)["y"].shape == (1, 2)
            await tiny.close()
            await batcher.close()

    asyncio.run(scenario())


def test_cost_model_running_sums_match_a_full_refit_after_the_window_slides() -> None:
    rng = np.random.default_rng(3)
    cost = CostModel(window=8)
    sizes = rng.integers(1, 33, 50)
    noise = rng.random(50) * 1e-5
    points = [(int(n), float(2e-5 * n + 1e-4 + e)) for n, e in zip(sizes, noise, strict=True)]
    for n, s in points:
        cost.observe(n, s)
    xs, ys = zip(*points[-8:], strict=True)
    a, b = np.polyfit(np.array(xs, float), np.array(ys), 1)
    assert a > 0 and b > 0
    assert cost.a == pytest.approx(a, rel=1e-6)
    assert cost.b == pytest.approx(b, rel=1e-6)


@pytest.mark.parametrize("inline_below_s", [0.0, 10.0], ids=["executor", "inline"])
def test_batch_forms_from_everything_queued_in_one_turn_and_close_drains(inline_below_s: float) -> None:
    """Requests submitted in the same event-loop turn go out as one batch, on a runtime thread or inline."""
    batch_sizes: list[int] = []

    def run(instance: int, batch: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        batch_sizes.append(len(batch))
        return [{"y": b["x"] * 2} for b in batch]

    async def scenario() -> None:
        with ThreadPoolExecutor(1) as pool:
            config = BatcherConfig(max_batch_rows=8, instances=1, inline_below_s=inline_below_s)
            batcher = Batcher(config, run, pool, cost=CostModel(a=1e-5, b=1e-4))
            batcher.start()
            far = time.monotonic() + 60
            xs = [np.full((1, 2), i, np.float32) for i in range(5)]
            outs = await asyncio.gather(*(batcher.submit({"x": x}, 1, "k", far, hard=True) for x in xs))
            assert [o["y"][0, 0] for o in outs] == [0, 2, 4, 6, 8]
            assert batch_sizes == [5]
            assert batcher.stats.inline == (1 if inline_below_s else 0)
            # close() answers what is still queued before it returns.
            late = [asyncio.ensure_future(batcher.submit({"x": x}, 1, "k", far, hard=True)) for x in xs[:3]]
            await asyncio.sleep(0)
            await batcher.close()
            assert all(f.done() and f.result()["y"].shape == (1, 2) for f in late)

    asyncio.run(scenario())


class StalledBackend:
    """A backend whose compute blocks until released: a stall as long as the test wants, no timing involved."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.batch_sizes: list[int] = []

    def __call__(self, instance: int, batch: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        self.batch_sizes.append(len(batch))
        assert self.release.wait(60), "the test never released the backend"
        return [{"y": b["x"] * 2} for b in batch]


async def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "condition not met within 30 s"
        await asyncio.sleep(0.001)


def test_without_a_client_deadline_a_stall_delays_but_never_fails_and_a_client_deadline_stays_hard() -> None:
    backend = StalledBackend()

    async def scenario() -> None:
        with ThreadPoolExecutor(1) as pool:
            config = BatcherConfig(max_batch_rows=64, instances=1, slo_s=60.0, inline_below_s=0.0)
            batcher = Batcher(config, backend, pool, cost=CostModel(a=1e-5, b=1e-4))
            batcher.start()
            x = {"x": np.ones((1, 2), np.float32)}
            first = asyncio.ensure_future(batcher.submit(x, 1, "k", time.monotonic() + 60, hard=False))
            await _until(lambda: backend.batch_sizes == [1])  # the instance is now stuck on it
            # Soft deadlines already missed (the SLO is long gone by the time they are queued) ...
            soft = [
                asyncio.ensure_future(batcher.submit(x, 1, "k", time.monotonic() - 1, hard=False)) for _ in range(20)
            ]
            # ... and a client deadline that passes during the stall.
            hard_deadline = time.monotonic() + 0.01
            hard = asyncio.ensure_future(batcher.submit(x, 1, "k", hard_deadline, hard=True))
            # Answered when its deadline passes, while the backend is still stuck (not when it frees up).
            with pytest.raises(DeadlineExceeded, match="not computed"):
                await asyncio.wait_for(hard, 30)
            assert time.monotonic() > hard_deadline and not backend.release.is_set() and batcher.depth == 20
            limit = batcher.aimd.limit
            backend.release.set()
            await first
            outs = await asyncio.gather(*soft)
            assert all(o["y"][0, 0] == 2 for o in outs)  # every late request without a deadline answered
            assert backend.batch_sizes == [1, 20]  # the late head took a full batch, not one at a time
            assert batcher.aimd.limit >= limit  # late soft deadlines do not shrink batches
            await batcher.close()

    asyncio.run(scenario())


def test_aimd_halves_on_a_hard_miss_or_a_batch_longer_than_the_slo_only() -> None:
    async def run_one(slo_s: float, deadline_s: float, hard: bool) -> float:
        backend = StalledBackend()
        with ThreadPoolExecutor(1) as pool:
            config = BatcherConfig(max_batch_rows=64, instances=1, slo_s=slo_s, inline_below_s=0.0)
            batcher = Batcher(config, backend, pool, cost=CostModel(a=1e-5, b=1e-4))
            batcher.start()
            deadline = time.monotonic() + deadline_s
            call = asyncio.ensure_future(
                batcher.submit({"x": np.ones((1, 2), np.float32)}, 1, "k", deadline, hard=hard)
            )
            await _until(lambda: backend.batch_sizes == [1] and time.monotonic() > deadline)
            backend.release.set()
            await call  # dispatched before its deadline: computed and answered, however late
            await batcher.close()
            return batcher.aimd.limit

    async def scenario() -> None:
        assert await run_one(slo_s=60.0, deadline_s=0.005, hard=True) == 32  # a client's deadline missed
        assert await run_one(slo_s=0.005, deadline_s=0.005, hard=False) == 32  # the batch alone outlasted the SLO
        assert await run_one(slo_s=60.0, deadline_s=0.005, hard=False) == 64  # only a late soft deadline

    asyncio.run(scenario())


def test_throughput_and_retry_hint() -> None:
    t = Throughput(window=4)
    assert t.rows_per_s(0.0, instances=1) is None
    assert retry_hint(100, None, fallback_s=0.25) == 0.25  # nothing measured yet: the cost model's guess
    for _ in range(10):
        t.observe(64, 0.1)
    assert t.rows_per_s(0.0, instances=1) == pytest.approx(640)
    assert t.rows_per_s(0.0, instances=2) == pytest.approx(1280)
    assert retry_hint(640, 1280.0, fallback_s=9.0) == pytest.approx(0.5)
    # A stalled batch counts with its elapsed time: the rate falls instead of going stale.
    assert t.rows_per_s(0.4, instances=1) == pytest.approx(256 / 0.8)
    # Bounded both ways.
    assert retry_hint(10**9, 1.0, fallback_s=0.0) == RETRY_MAX_S
    assert retry_hint(0, 1000.0, fallback_s=0.0) == RETRY_MIN_S
    # Only the last `window` batches count.
    for _ in range(4):
        t.observe(10, 0.1)
    assert t.rows_per_s(0.0, instances=1) == pytest.approx(100)


def test_full_queue_names_the_model_and_hints_from_the_drain_rate_and_a_cancelled_caller_frees_its_place() -> None:
    backend = StalledBackend()

    async def scenario() -> None:
        with ThreadPoolExecutor(1) as pool:
            config = BatcherConfig(
                max_batch_rows=4, instances=1, queue_bound=3, inline_below_s=0.0, name="model 'm' v1"
            )
            batcher = Batcher(config, backend, pool, cost=CostModel(a=1e-5, b=1e-4))
            for _ in range(5):
                batcher.throughput.observe(4, 0.5)  # measured: 8 rows/s
            batcher.start()
            x = {"x": np.ones((2, 2), np.float32)}
            far = time.monotonic() + 60
            stuck = asyncio.ensure_future(batcher.submit(x, 2, "k", far, hard=False))
            await _until(lambda: backend.batch_sizes == [1])
            queued = [asyncio.ensure_future(batcher.submit(x, 2, "k", far, hard=False)) for _ in range(3)]
            await _until(lambda: batcher.depth == 3)
            with pytest.raises(Overloaded) as err:
                await batcher.submit(x, 2, "k", far, hard=False)
            # 6 rows queued at under 8 rows/s (the stalled batch lowers the rate): more than 0.75 s, bounded.
            assert 0.75 < err.value.retry_after_s <= RETRY_MAX_S
            assert "model 'm' v1: queue full (3 requests waiting" in err.value.message
            assert "QUEUE_BOUND" in err.value.message
            # A caller that goes away leaves the queue at once: the next one gets its place.
            queued[0].cancel()
            with pytest.raises(asyncio.CancelledError):
                await queued[0]
            assert batcher.depth == 2
            replacement = asyncio.ensure_future(batcher.submit(x, 2, "k", far, hard=False))
            await _until(lambda: batcher.depth == 3)
            backend.release.set()
            assert len(await asyncio.gather(stuck, *queued[1:], replacement)) == 4
            await batcher.close()

    asyncio.run(scenario())
