"""The adaptive batcher: earliest-deadline-first, sized by an online cost model, waiting only while it pays.

One `Batcher` per loaded model version. Requests carry an absolute deadline: a *hard* one when the
client gave one (its gRPC deadline, its `timeout` parameter, `X-Flywheel-Timeout-Ms`), else a *soft*
one, the model's SLO. A hard deadline that passes while queued answers `DeadlineExceeded` then,
before any compute (a timer on the earliest one: a stalled backend does not hold the answer
back). A soft deadline only orders the queue and sizes batches: a request without a client
deadline is never dropped for being late. The pieces, each testable on its own:

* `EdfQueue`: one heap per shape bucket (requests batch only with equal non-batch shapes),
  ordered by (deadline, arrival), so FIFO among equal deadlines; hard deadlines also sit in a
  heap of their own, so the expired ones are found without walking past late soft ones.
* `CostModel`: batch latency ≈ a·n + b, least squares over the most recent batches (seeded by
  the warm-up runs), so the batch size can be chosen such that the request with the earliest
  deadline (the head) still finishes in time: n ≤ (deadline − now − b) / a. Once a soft head
  has already missed its SLO there is no deadline left to keep: batches grow to the size limit
  and nobody waits, so the server catches up.
* `Aimd`: Clipper's guard. A batch in which a hard deadline was missed, or which alone took
  longer than the SLO, halves the size limit; any other batch raises it by one, up to
  `max_batch_size`. Soft deadlines made late by queueing do not shrink batches: that would
  lower throughput exactly when the queue needs it most.
* `decide`: dispatch now, or wait. It waits only when one more request is expected before the
  head's slack runs out and the delay that waiting imposes on the n requests already queued,
  n·(waited + expected gap), is below what one more request would otherwise cost on its own,
  the per-batch overhead b (BentoML's rule). With an empty queue there is nothing to decide, and
  a lone request on an idle backend with no steady arrivals goes at once.

A full queue (`queue_bound` requests) answers `Overloaded` with a retry hint: the queued rows
over the measured drain rate (`Throughput`), bounded. No transport types here: the adapters map
these errors.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol

from services.modelserver.errors import DeadlineExceeded, InferenceFailed, Overloaded, ShuttingDown

BucketKey = Hashable
MIN_WAIT_S = 50e-6  # never spin: a wait is at least this long
# Bounds of the retry hint of a full queue: a client should not hammer a full server, nor be told
# to stay away for longer than a queue of this size plausibly takes to drain.
RETRY_MIN_S = 0.001
RETRY_MAX_S = 30.0
Inputs = dict[str, Any]  # input name -> array with a leading batch axis (or the full tensor, unbatched)
Outcome = Inputs | InferenceFailed
RunBatch = Callable[[int, Sequence[Inputs]], list[Outcome]]  # (instance index, batch) -> one outcome each


# -- the cost model -----------------------------------------------------------------------------
class CostModel:
    """Online fit of batch latency ≈ a·n + b (seconds) over the last `window` batches."""

    def __init__(self, window: int = 64, a: float = 1e-4, b: float = 1e-3) -> None:
        self._obs: deque[tuple[int, float]] = deque(maxlen=window)
        self.a = a
        self.b = b
        # Running sums over the window (n, Σx, Σy, Σx², Σxy): a fit per batch costs O(1), not O(window).
        self._sums = [0.0, 0.0, 0.0, 0.0]
        self._since_exact = 0

    def observe(self, rows: int, seconds: float) -> None:
        sums = self._sums
        if len(self._obs) == self._obs.maxlen:
            x0, y0 = self._obs[0]
            sums[0] -= x0
            sums[1] -= y0
            sums[2] -= x0 * x0
            sums[3] -= x0 * y0
        x = float(rows)
        self._obs.append((rows, seconds))
        sums[0] += x
        sums[1] += seconds
        sums[2] += x * x
        sums[3] += x * seconds
        self._since_exact += 1
        if self._since_exact >= 4 * (self._obs.maxlen or 64):  # shed floating-point drift now and then
            self._resum()
        self._fit()

    def _resum(self) -> None:
        self._since_exact = 0
        self._sums = [
            sum(float(r) for r, _ in self._obs),
            sum(s for _, s in self._obs),
            sum(float(r) * r for r, _ in self._obs),
            sum(r * s for r, s in self._obs),
        ]

    def _fit(self) -> None:
        n = len(self._obs)
        if n == 0:
            return
        sx, sy, sxx, sxy = self._sums
        mx, my = sx / n, sy / n
        var = sxx - n * mx * mx  # Σ(x - mx)²
        if var > 1e-9 * max(1.0, sxx):
            a = (sxy - n * mx * my) / var  # Σ(x - mx)(y - my) / Σ(x - mx)²
            self.a = max(a, 1e-7)
        # With one batch size only the slope is unknown: keep the last slope, refit the intercept.
        self.b = max(my - self.a * mx, 0.0)

    def predict(self, rows: int) -> float:
        return self.a * rows + self.b

    def max_rows_within(self, budget_s: float) -> int:
        """The largest n with a·n + b ≤ budget (0 when even one row does not fit)."""
        if budget_s <= self.b:
            return 0
        return math.floor((budget_s - self.b) / self.a)

    @property
    def observations(self) -> int:
        return len(self._obs)


class Aimd:
    """Additive increase, multiplicative decrease of the batch-size limit on misses (see the module doc)."""

    def __init__(self, cap: int, decrease: float = 0.5) -> None:
        self.cap = max(cap, 1)
        self.limit = float(self.cap)
        self._decrease = decrease

    def on_batch(self, missed: bool) -> None:
        if missed:
            self.limit = max(1.0, self.limit * self._decrease)
        else:
            self.limit = min(float(self.cap), self.limit + 1.0)


# -- the queue ----------------------------------------------------------------------------------
@dataclass(eq=False)
class Pending:
    """One queued request."""

    deadline: float  # time.monotonic() seconds: the client's (hard) or the model's SLO (soft)
    rows: int
    key: BucketKey
    inputs: Inputs
    enqueued: float
    future: asyncio.Future | None = None
    hard: bool = False  # a client deadline: past it, the request is not computed
    seq: int = 0
    queued: bool = False  # still waiting in an EdfQueue (heap entries of others are skipped lazily)

    def abandoned(self) -> bool:
        return self.future is not None and self.future.done()


class EdfQueue:
    """Per-bucket heaps ordered by (deadline, arrival); the head is the earliest deadline overall.

    A request leaves the queue by `pop_batch`, `expire` or `discard`; the heaps drop its entries
    lazily (a heap cannot remove from the middle), and the counts change at once."""

    def __init__(self) -> None:
        self._buckets: dict[BucketKey, list[tuple[float, int, Pending]]] = {}
        self._hard: list[tuple[float, int, Pending]] = []  # hard deadlines only, across buckets
        self._hard_queued = 0
        self._seq = itertools.count()
        self._count = 0
        self._total_rows = 0
        self._counts: dict[BucketKey, int] = {}
        self._rows: dict[BucketKey, int] = {}

    def __len__(self) -> int:
        return self._count

    @property
    def total_rows(self) -> int:
        return self._total_rows

    def push(self, p: Pending) -> None:
        p.seq = next(self._seq)
        p.queued = True
        entry = (p.deadline, p.seq, p)
        heapq.heappush(self._buckets.setdefault(p.key, []), entry)
        if p.hard:
            heapq.heappush(self._hard, entry)
            self._hard_queued += 1
            # Entries of hard requests that left by pop_batch stay until their deadline: compact
            # now and then, so long deadlines under a high rate cannot grow the heap without bound.
            if len(self._hard) > 2 * self._hard_queued + 64:
                self._hard = [e for e in self._hard if e[2].queued]
                heapq.heapify(self._hard)
        self._count += 1
        self._total_rows += p.rows
        self._counts[p.key] = self._counts.get(p.key, 0) + 1
        self._rows[p.key] = self._rows.get(p.key, 0) + p.rows

    def _remove(self, p: Pending) -> None:
        """Count `p` out of the queue (its heap entries are skipped from now on)."""
        p.queued = False
        self._count -= 1
        self._total_rows -= p.rows
        if p.hard:
            self._hard_queued -= 1
        self._counts[p.key] -= 1
        self._rows[p.key] -= p.rows
        if not self._counts[p.key]:
            del self._counts[p.key]
            del self._rows[p.key]

    def _top(self, key: BucketKey) -> Pending | None:
        """The first request of a bucket still queued (dropping stale entries above it)."""
        heap = self._buckets.get(key)
        while heap and not heap[0][2].queued:
            heapq.heappop(heap)
        if not heap:
            self._buckets.pop(key, None)
            return None
        return heap[0][2]

    def head(self) -> Pending | None:
        best: Pending | None = None
        for key in list(self._buckets):
            p = self._top(key)
            if p is not None and (best is None or (p.deadline, p.seq) < (best.deadline, best.seq)):
                best = p
        return best

    def rows(self, key: BucketKey) -> int:
        return self._rows.get(key, 0)

    def count(self, key: BucketKey) -> int:
        return self._counts.get(key, 0)

    def oldest_enqueued(self, key: BucketKey) -> float:
        return min(p.enqueued for _, _, p in self._buckets.get(key, ()) if p.queued)

    def discard(self, p: Pending) -> None:
        """Take `p` out if it is still queued (its caller went away)."""
        if p.queued:
            self._remove(p)

    def pop_batch(self, key: BucketKey, max_rows: int) -> list[Pending]:
        """Requests of one bucket in EDF order up to max_rows (the first is taken whatever its size)."""
        batch: list[Pending] = []
        rows = 0
        while (nxt := self._top(key)) is not None:
            if batch and rows + nxt.rows > max_rows:
                break
            heapq.heappop(self._buckets[key])
            self._remove(nxt)
            if nxt.abandoned():
                continue
            batch.append(nxt)
            rows += nxt.rows
        return batch

    def next_hard_deadline(self) -> float | None:
        """The earliest client deadline still queued (None: none is)."""
        hard = self._hard
        while hard and not hard[0][2].queued:
            heapq.heappop(hard)
        return hard[0][0] if hard else None

    def expire(self, now: float) -> list[Pending]:
        """Remove and return every request whose hard deadline has passed; soft ones stay, however late."""
        out: list[Pending] = []
        hard = self._hard
        while hard and hard[0][0] <= now:
            p = heapq.heappop(hard)[2]
            if p.queued:
                self._remove(p)
                if not p.abandoned():
                    out.append(p)
        return out

    def drain(self) -> list[Pending]:
        out = [p for heap in self._buckets.values() for _, _, p in heap if p.queued]
        for p in out:
            self._remove(p)
        self._buckets.clear()
        self._hard.clear()
        return out


# -- the decision -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    dispatch: bool
    key: BucketKey = None
    max_rows: int = 0
    wait_s: float = 0.0


def decide(
    now: float,
    queue: EdfQueue,
    cost: CostModel,
    limit: float,
    max_rows: int,
    mean_gap_s: float | None,
    adaptive: bool = True,
) -> Decision:
    """Dispatch the head's bucket now (with how many rows), or wait `wait_s` for more arrivals."""
    head = queue.head()
    if head is None:
        return Decision(False, wait_s=math.inf)
    if not adaptive or max_rows <= 0:
        return Decision(True, head.key, head.rows)  # one request per execution
    budget = head.deadline - now
    if budget <= 0 and not head.hard:
        # The head already missed its SLO: no deadline left to size for. Go now, as large as allowed,
        # so the queue drains at the best throughput rather than one late request at a time.
        return Decision(True, head.key, max(head.rows, min(int(limit), max_rows)))
    target = max(head.rows, min(cost.max_rows_within(budget), int(limit), max_rows))
    queued = queue.rows(head.key)
    if queued >= target or mean_gap_s is None:
        return Decision(True, head.key, target)
    slack = budget - cost.predict(queued + 1)
    waited = now - queue.oldest_enqueued(head.key)
    n = queue.count(head.key)
    if mean_gap_s < slack and n * (waited + mean_gap_s) < cost.b:
        return Decision(False, head.key, target, wait_s=max(mean_gap_s, MIN_WAIT_S))
    return Decision(True, head.key, target)


class ArrivalRate:
    """EWMA of the gap between arrivals; None until there are two arrivals, or after a long silence."""

    def __init__(self, alpha: float = 0.1) -> None:
        self._alpha = alpha
        self._last: float | None = None
        self.mean_gap_s: float | None = None

    def arrive(self, now: float) -> None:
        if self._last is not None:
            gap = now - self._last
            self.mean_gap_s = (
                gap if self.mean_gap_s is None else (1 - self._alpha) * self.mean_gap_s + self._alpha * gap
            )
        self._last = now

    def expected_gap(self, now: float) -> float | None:
        if self.mean_gap_s is None or self._last is None:
            return None
        # Silence longer than a few mean gaps: arrivals have stopped, do not wait for them.
        if now - self._last > 4 * self.mean_gap_s:
            return None
        return self.mean_gap_s


class Throughput:
    """Rows per second the instances get through, from the busy time of the last `window` batches.

    Busy time, not wall time: idle gaps between batches say nothing about how fast a queue
    drains. A batch still running counts with its elapsed time and no rows yet, so a stalled
    backend lowers the rate instead of leaving the last good figure in place."""

    def __init__(self, window: int = 32) -> None:
        self._done: deque[tuple[int, float]] = deque(maxlen=window)
        self._rows = 0
        self._busy_s = 0.0

    def observe(self, rows: int, seconds: float) -> None:
        if len(self._done) == self._done.maxlen:
            old_rows, old_s = self._done[0]
            self._rows -= old_rows
            self._busy_s -= old_s
        self._done.append((rows, seconds))
        self._rows += rows
        self._busy_s += seconds

    def rows_per_s(self, running_s: float, instances: int) -> float | None:
        """None until a batch has finished."""
        busy = self._busy_s + running_s
        if not self._done or busy <= 0:
            return None
        return self._rows / busy * max(instances, 1)


def retry_hint(queued_rows: int, rows_per_s: float | None, fallback_s: float) -> float:
    """Seconds until the queued rows have drained at the measured rate (the cost model's guess before any
    measurement), within [RETRY_MIN_S, RETRY_MAX_S]."""
    estimate = queued_rows / rows_per_s if rows_per_s else fallback_s
    return min(RETRY_MAX_S, max(RETRY_MIN_S, estimate))


# -- the batcher --------------------------------------------------------------------------------
class BatchObserver(Protocol):
    """Told of each batch and refusal. Queue depth, cost model and limit are read when scraped (`Batcher.depth`,
    `.cost`, `.aimd`), not pushed per request."""

    def shed(self) -> None: ...
    def expired(self) -> None: ...
    def batch(
        self, rows: int, compute_s: float, queue_s: Sequence[float], late: int, a: float, b: float, limit: float
    ) -> None:
        """`late`: requests of the batch answered after their soft deadline (the SLO), still answered."""


@dataclass
class BatcherConfig:
    max_batch_rows: int  # config.pbtxt max_batch_size; 0 = the model does not batch
    instances: int = 1
    queue_bound: int = 1024
    adaptive: bool = True
    slo_s: float = 0.1  # the model's SLO: a batch alone longer than this halves the AIMD limit
    name: str = "model"  # how refusals name the model version
    # A batch the cost model expects to finish sooner than this runs on the event loop's own thread:
    # handing it to an executor thread and back costs more than such a batch (0 = always hand over).
    inline_below_s: float = 0.001


@dataclass
class _Stats:
    executions: int = 0
    requests: int = 0
    inline: int = 0


class Batcher:
    """Queues requests of one model version and runs them in batches on its instances.

    No scheduler task: `submit` and each finished batch schedule one `_pump` for the loop's next
    turn (so everything that arrived in this turn is there to batch), and a wait is a
    `call_later` that any new arrival cancels by pumping again.
    """

    def __init__(
        self,
        config: BatcherConfig,
        run: RunBatch,
        executor: Executor,
        cost: CostModel | None = None,
        observer: BatchObserver | None = None,
    ) -> None:
        self.config = config
        self.cost = cost or CostModel()
        self.aimd = Aimd(config.max_batch_rows or 1)
        self._run = run
        self._executor = executor
        self._observer = observer
        self._queue = EdfQueue()
        self._arrivals = ArrivalRate()
        self.throughput = Throughput()
        self._running: dict[int, float] = {}  # instance -> start of its batch
        self._free = list(range(config.instances))
        self._inflight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pump_handle: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._expiry: asyncio.TimerHandle | None = None  # the earliest queued client deadline
        self._expiry_at = 0.0
        self._drained: asyncio.Future | None = None
        self._closing = False
        self.stats = _Stats()

    # -- public ---------------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._kick()

    @property
    def depth(self) -> int:
        return len(self._queue)

    async def submit(self, inputs: Inputs, rows: int, key: BucketKey, deadline: float, *, hard: bool) -> Inputs:
        """Queue one request; return its outputs, or raise the domain error that answers it.

        `hard`: the deadline is the client's (past it, the request is not computed); else it is the
        model's SLO, which orders the queue and sizes batches but never fails the request."""
        if self._closing:
            raise ShuttingDown("model version is being unloaded")
        now = time.monotonic()
        if hard and deadline <= now:
            self._note_expired()
            raise DeadlineExceeded("deadline passed before the request was queued")
        if len(self._queue) >= self.config.queue_bound:
            if self._observer:
                self._observer.shed()
            retry = self.retry_after_s(now)
            raise Overloaded(
                f"{self.config.name}: queue full ({self.config.queue_bound} requests waiting, "
                f"FLYWHEEL_MODELSERVER_QUEUE_BOUND); retry after {math.ceil(retry * 1000)} ms, "
                "or send fewer requests at once",
                retry_after_s=retry,
            )
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        pending = Pending(deadline, rows, key, inputs, now, future, hard)
        self._queue.push(pending)
        self._arrivals.arrive(now)
        self._kick()
        try:
            return await future
        except asyncio.CancelledError:
            self._queue.discard(pending)  # the caller went away: its place in the queue is free again
            raise

    def retry_after_s(self, now: float) -> float:
        """When a refused client may find room: the queued rows over the measured drain rate, bounded."""
        running = sum(now - start for start in self._running.values())
        rate = self.throughput.rows_per_s(running, self.config.instances)
        return retry_hint(self._queue.total_rows, rate, self._drain_estimate())

    async def close(self) -> None:
        """Stop taking requests, finish every queued and in-flight one, then stop."""
        self._closing = True
        if self._loop is None:
            return
        self._drained = self._loop.create_future()
        self._kick()
        self._check_drained()
        await self._drained

    # -- internals ------------------------------------------------------------------------
    def _drain_estimate(self) -> float:
        """The cost model's guess, before any batch has been measured."""
        rows = max(self.config.max_batch_rows, 1)
        batches = math.ceil(self._queue.total_rows / rows / max(self.config.instances, 1))
        return batches * self.cost.predict(rows)

    def _note_expired(self) -> None:
        if self._observer:
            self._observer.expired()

    def _kick(self) -> None:
        """Pump on the loop's next turn (once, however many arrivals ask for it)."""
        if self._loop is not None and self._pump_handle is None:
            self._pump_handle = self._loop.call_soon(self._pump)

    def _check_drained(self) -> None:
        if self._drained is not None and not self._drained.done() and not len(self._queue) and not self._inflight:
            self._drained.set_result(None)

    def _pump(self) -> None:
        """Dispatch batches while an instance is free and the rule says go; else arm the wait timer."""
        self._pump_handle = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._expire(time.monotonic())  # also while every instance is busy: a 504 should not wait for one
        while self._free and len(self._queue):
            now = time.monotonic()
            self._expire(now)
            if not len(self._queue):
                break
            gap = None if self._closing else self._arrivals.expected_gap(now)
            d = decide(
                now, self._queue, self.cost, self.aimd.limit, self.config.max_batch_rows, gap, self.config.adaptive
            )
            if not d.dispatch:
                assert self._loop is not None
                self._timer = self._loop.call_later(d.wait_s, self._kick)
                break
            batch = self._queue.pop_batch(d.key, d.max_rows)
            if batch:
                self._dispatch(self._free.pop(), batch)
        self._arm_expiry()
        self._check_drained()

    def _expire(self, now: float) -> None:
        for p in self._queue.expire(now):
            self._note_expired()
            if p.future is not None and not p.future.done():
                p.future.set_exception(DeadlineExceeded("deadline passed while queued; not computed"))

    def _arm_expiry(self) -> None:
        """Pump again when the earliest queued client deadline passes, so that request is answered then,
        not when an instance next frees up (a stalled backend would hold its 504 back)."""
        at = self._queue.next_hard_deadline()
        if at is None:
            if self._expiry is not None:
                self._expiry.cancel()
                self._expiry = None
            return
        if self._expiry is not None:
            if self._expiry_at <= at:
                return  # armed already, for this deadline or an earlier one (that pump re-arms)
            self._expiry.cancel()
        assert self._loop is not None
        self._expiry_at = at
        self._expiry = self._loop.call_later(max(at - time.monotonic(), 0.0), self._on_expiry)

    def _on_expiry(self) -> None:
        self._expiry = None
        self._kick()

    def _dispatch(self, instance: int, batch: list[Pending]) -> None:
        self._inflight += 1
        inputs = [p.inputs for p in batch]
        rows = sum(p.rows for p in batch)
        start = time.monotonic()
        self._running[instance] = start
        if self.cost.predict(rows) < self.config.inline_below_s:
            self.stats.inline += 1
            try:
                outcomes: list[Outcome] = self._run(instance, inputs)
            except Exception as exc:  # noqa: BLE001 - a backend crash fails this batch's requests, not the server
                outcomes = [InferenceFailed(f"{type(exc).__name__}: {exc}") for _ in batch]
            self._finish(instance, batch, rows, start, outcomes)
            return
        assert self._loop is not None
        future = self._loop.run_in_executor(self._executor, self._run, instance, inputs)
        future.add_done_callback(functools.partial(self._finished, instance, batch, rows, start))

    def _finished(self, instance: int, batch: list[Pending], rows: int, start: float, future: asyncio.Future) -> None:
        exc = future.exception()
        if exc is None:
            outcomes = future.result()
        else:
            outcomes = [InferenceFailed(f"{type(exc).__name__}: {exc}") for _ in batch]
        self._finish(instance, batch, rows, start, outcomes)
        self._kick()

    def _finish(self, instance: int, batch: list[Pending], rows: int, start: float, outcomes: list[Outcome]) -> None:
        end = time.monotonic()
        self._free.append(instance)
        self._running.pop(instance, None)
        self._inflight -= 1
        compute_s = end - start
        self.cost.observe(rows, compute_s)
        self.throughput.observe(rows, compute_s)
        hard_late = soft_late = 0
        for p in batch:
            if end > p.deadline:
                if p.hard:
                    hard_late += 1
                else:
                    soft_late += 1
        # Only a miss that smaller batches could have avoided shrinks them: a client's deadline, or a
        # batch that alone outlasted the SLO. Soft deadlines late from queueing need bigger batches.
        self.aimd.on_batch(missed=hard_late > 0 or compute_s > self.config.slo_s)
        self.stats.executions += 1
        self.stats.requests += len(batch)
        if self._observer:
            self._observer.batch(
                rows,
                compute_s,
                [start - p.enqueued for p in batch],
                soft_late,
                self.cost.a,
                self.cost.b,
                self.aimd.limit,
            )
        for p, outcome in zip(batch, outcomes, strict=True):
            if p.future is None or p.future.done():
                continue
            if isinstance(outcome, Exception):
                p.future.set_exception(outcome)
            else:
                p.future.set_result(outcome)


def bucket_key(inputs: Inputs, batched: bool) -> BucketKey:
    """Requests batch together only when every input has the same non-batch shape."""
    return tuple((name, tuple(a.shape[1:] if batched else a.shape)) for name, a in sorted(inputs.items()))


@dataclass
class Seeds:
    """Warm-up timings that seed a new version's cost model."""

    points: list[tuple[int, float]] = field(default_factory=list)

    def into(self, cost: CostModel) -> CostModel:
        for rows, seconds in self.points:
            cost.observe(rows, seconds)
        return cost
