"""The adaptive batcher's parts, called directly: EDF queue, cost model, AIMD, the wait rule, buckets.

No timing assertions: time is passed in as numbers, and the async Batcher runs a plain numpy
function as its backend.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from services.modelserver.batching import (
    Aimd,
    ArrivalRate,
    Batcher,
    BatcherConfig,
    CostModel,
    EdfQueue,
    Pending,
    bucket_key,
    decide,
)
from services.modelserver.errors import DeadlineExceeded, Overloaded


def pending(deadline: float, rows: int = 1, key: object = "k", enqueued: float = 0.0) -> Pending:
    return Pending(deadline=deadline, rows=rows, key=key, inputs={}, enqueued=enqueued)


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


def test_expire_removes_only_past_deadlines() -> None:
    q = EdfQueue()
    late, ok = pending(1.0), pending(10.0)
    q.push(late)
    q.push(ok)
    assert q.expire(now=5.0) == [late]
    assert q.head() is ok


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
            outs = await asyncio.gather(*(batcher.submit({"x": x}, 1, "k", far) for x in xs))
            for x, out in zip(xs, outs, strict=True):
                np.testing.assert_array_equal(out["y"], x @ weights)
            assert max(batch_sizes) <= 8 and sum(batch_sizes) == 20
            with pytest.raises(DeadlineExceeded):
                await batcher.submit({"x": xs[0]}, 1, "k", time.monotonic() - 1)
            tiny = Batcher(BatcherConfig(max_batch_rows=8, instances=1, queue_bound=1), run, pool)
            # Not started: nothing drains the queue, so the second request finds it full.
            first = asyncio.ensure_future(tiny.submit({"x": xs[0]}, 1, "k", far))
            await asyncio.sleep(0)
            with pytest.raises(Overloaded) as err:
                await tiny.submit({"x": xs[1]}, 1, "k", far)
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
            outs = await asyncio.gather(*(batcher.submit({"x": x}, 1, "k", far) for x in xs))
            assert [o["y"][0, 0] for o in outs] == [0, 2, 4, 6, 8]
            assert batch_sizes == [5]
            assert batcher.stats.inline == (1 if inline_below_s else 0)
            # close() answers what is still queued before it returns.
            late = [asyncio.ensure_future(batcher.submit({"x": x}, 1, "k", far)) for x in xs[:3]]
            await asyncio.sleep(0)
            await batcher.close()
            assert all(f.done() and f.result()["y"].shape == (1, 2) for f in late)

    asyncio.run(scenario())
