"""The adaptive batcher: earliest-deadline-first, sized by an online cost model, waiting only while it pays.

One `Batcher` per loaded model version. Requests carry an absolute deadline (the client's gRPC
deadline, its `timeout` parameter, or the model's SLO). The pieces, each testable on its own:

* `EdfQueue`: one heap per shape bucket (requests batch only with equal non-batch shapes),
  ordered by (deadline, arrival), so FIFO among equal deadlines.
* `CostModel`: batch latency ≈ a·n + b, least squares over the most recent batches (seeded by
  the warm-up runs), so the batch size can be chosen such that the request with the earliest
  deadline (the head) still finishes in time: n ≤ (deadline − now − b) / a.
* `Aimd`: Clipper's guard. A batch in which someone missed its deadline halves the size limit;
  a batch that met every deadline raises it by one, up to `max_batch_size`.
* `decide`: dispatch now, or wait. It waits only when one more request is expected before the
  head's slack runs out and the delay that waiting imposes on the n requests already queued,
  n·(waited + expected gap), is below what one more request would otherwise cost on its own,
  the per-batch overhead b (BentoML's rule). With an empty queue there is nothing to decide, and
  a lone request on an idle backend with no steady arrivals goes at once.

Expired requests are answered `DeadlineExceeded` before any compute; a full queue answers
`Overloaded` with a retry hint. No transport types here: the adapters map these errors.
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
    """Additive increase, multiplicative decrease of the batch-size limit on deadline misses."""

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

    deadline: float  # time.monotonic() seconds
    rows: int
    key: BucketKey
    inputs: Inputs
    enqueued: float
    future: asyncio.Future | None = None
    seq: int = 0

    def abandoned(self) -> bool:
        return self.future is not None and self.future.done()


class EdfQueue:
    """Per-bucket heaps ordered by (deadline, arrival); the head is the earliest deadline overall."""

    def __init__(self) -> None:
        self._buckets: dict[BucketKey, list[tuple[float, int, Pending]]] = {}
        self._seq = itertools.count()
        self._count = 0
        self._rows: dict[BucketKey, int] = {}

    def __len__(self) -> int:
        return self._count

    def push(self, p: Pending) -> None:
        p.seq = next(self._seq)
        heapq.heappush(self._buckets.setdefault(p.key, []), (p.deadline, p.seq, p))
        self._count += 1
        self._rows[p.key] = self._rows.get(p.key, 0) + p.rows

    def head(self) -> Pending | None:
        best: tuple[float, int, Pending] | None = None
        for heap in self._buckets.values():
            if heap and (best is None or heap[0][:2] < best[:2]):
                best = heap[0]
        return best[2] if best else None

    def rows(self, key: BucketKey) -> int:
        return self._rows.get(key, 0)

    def count(self, key: BucketKey) -> int:
        return len(self._buckets.get(key, ()))

    def oldest_enqueued(self, key: BucketKey) -> float:
        return min(p.enqueued for _, _, p in self._buckets.get(key, ()))

    def _pop(self, key: BucketKey) -> Pending:
        heap = self._buckets[key]
        p = heapq.heappop(heap)[2]
        if not heap:
            del self._buckets[key]
        self._count -= 1
        self._rows[key] -= p.rows
        if not self._rows[key]:
            del self._rows[key]
        return p

    def pop_batch(self, key: BucketKey, max_rows: int) -> list[Pending]:
        """Requests of one bucket in EDF order up to max_rows (the first is taken whatever its size)."""
        batch: list[Pending] = []
        rows = 0
        heap = self._buckets.get(key)
        while heap:
            nxt = heap[0][2]
            if batch and rows + nxt.rows > max_rows:
                break
            self._pop(key)
            if nxt.abandoned():
                heap = self._buckets.get(key)
                continue
            batch.append(nxt)
            rows += nxt.rows
            heap = self._buckets.get(key)
        return batch

    def expire(self, now: float) -> list[Pending]:
        """Remove and return every request whose deadline has passed (and drop abandoned ones)."""
        out: list[Pending] = []
        for key in list(self._buckets):
            heap = self._buckets.get(key)
            while heap and (heap[0][0] <= now or heap[0][2].abandoned()):
                p = self._pop(key)
                if not p.abandoned():
                    out.append(p)
                heap = self._buckets.get(key)
        # Abandoned requests deeper in a heap are skipped by pop_batch.
        return out

    def drain(self) -> list[Pending]:
        out: list[Pending] = []
        for key in list(self._buckets):
            while key in self._buckets:
                out.append(self._pop(key))
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


# -- the batcher --------------------------------------------------------------------------------
class BatchObserver(Protocol):
    """Told of each batch and refusal. Queue depth, cost model and limit are read when scraped (`Batcher.depth`,
    `.cost`, `.aimd`), not pushed per request."""

    def shed(self) -> None: ...
    def expired(self) -> None: ...
    def batch(
        self, rows: int, compute_s: float, queue_s: Sequence[float], a: float, b: float, limit: float
    ) -> None: ...


@dataclass
class BatcherConfig:
    max_batch_rows: int  # config.pbtxt max_batch_size; 0 = the model does not batch
    instances: int = 1
    queue_bound: int = 256
    adaptive: bool = True
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
        self._free = list(range(config.instances))
        self._inflight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pump_handle: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None
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

    async def submit(self, inputs: Inputs, rows: int, key: BucketKey, deadline: float) -> Inputs:
        """Queue one request; return its outputs, or raise the domain error that answers it."""
        if self._closing:
            raise ShuttingDown("model version is being unloaded")
        now = time.monotonic()
        if deadline <= now:
            self._note_expired()
            raise DeadlineExceeded("deadline passed before the request was queued")
        if len(self._queue) >= self.config.queue_bound:
            if self._observer:
                self._observer.shed()
            raise Overloaded(
                f"queue full ({self.config.queue_bound} requests waiting)", retry_after_s=self._drain_estimate()
            )
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.push(Pending(deadline, rows, key, inputs, now, future))
        self._arrivals.arrive(now)
        self._kick()
        return await future

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
        rows = max(self.config.max_batch_rows, 1)
        batches = math.ceil(len(self._queue) / rows / max(self.config.instances, 1))
        return max(0.001, batches * self.cost.predict(rows))

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
        while self._free and len(self._queue):
            now = time.monotonic()
            for p in self._queue.expire(now):
                self._note_expired()
                if p.future is not None and not p.future.done():
                    p.future.set_exception(DeadlineExceeded("deadline passed while queued; not computed"))
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
        self._check_drained()

    def _dispatch(self, instance: int, batch: list[Pending]) -> None:
        self._inflight += 1
        inputs = [p.inputs for p in batch]
        rows = sum(p.rows for p in batch)
        start = time.monotonic()
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
        self._inflight -= 1
        self.cost.observe(rows, end - start)
        self.aimd.on_batch(missed=any(end > p.deadline for p in batch))
        self.stats.executions += 1
        self.stats.requests += len(batch)
        if self._observer:
            self._observer.batch(
                rows, end - start, [start - p.enqueued for p in batch], self.cost.a, self.cost.b, self.aimd.limit
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
