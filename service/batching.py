"""Continuous micro-batching of prompts onto one model session (text-embeddings-inference style).

- An idle model runs a lone prompt at once: no timer is added at low load.
- While a batch runs, arrivals queue; the next batch is formed from the queue, capped by a
  batch size and a padded-token budget, grouping prompts of similar length around the oldest
  one (which is always taken, so nothing starves); prompts whose padding would exceed
  `max_padding_ratio` wait for a closer batch. `max_wait_us` optionally waits for company.
- Tokenization and onnxruntime run in worker threads (both release the GIL), so the event
  loop keeps accepting requests. With several model instances (one onnxruntime session each),
  up to that many batches run at once, one per free instance: on a small CPU two
  single-threaded sessions serve about 1.4x the prompts of one two-threaded session (see
  benchmarks/), because a 60-token prompt is too small to split well across threads.
- A batch formed when nothing else is queued or running may run on `run_alone` instead: an
  extra session with every core's threads, so a lone prompt at low load is not held to one
  core (measured on 2 cores, concurrency 1: mf p50 5.3-5.5 -> 4.6-4.9 ms, mf-fast 2.6-2.7 ->
  2.2 ms; throughput under load unchanged).
- `queued_batches` more batches per instance may be formed ahead and wait in the thread pool,
  so a model thread starts its next batch without an event-loop round trip (the default, 1
  where the batch cap is 1; with larger caps a batch formed early would gather less company).
  Prompts in a formed batch are past the deadline and cancellation checks.
- The queue is bounded: past it, submit fails at once with QueueFullError.
- Prompts whose caller went away (cancelled) or whose deadline passed are dropped before a run,
  when they reach the head of the queue or the window a batch is formed from.
- If a run fails, its prompts are retried one by one, so one bad prompt fails alone.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import structlog

from service.config import BatchingConfig
from service.errors import LmrouteError
from service.metrics import Metrics

log = structlog.get_logger(__name__)


class QueueFullError(LmrouteError):
    """The model's queue is at its bound: answer RESOURCE_EXHAUSTED, retry later."""


class DeadlineExceededError(LmrouteError):
    """The request's deadline passed before its prompt was run."""


class BatcherClosedError(LmrouteError):
    """The service is shutting down and takes no new work."""


@dataclass(eq=False)
class _Pending:
    text: str
    tokens: int
    future: asyncio.Future
    enqueued: float
    deadline: float | None = None  # event-loop time
    batch_size: int = field(default=0)


class Batcher:
    """Queues prompts for one model and runs them in batches; results come back per prompt."""

    def __init__(
        self,
        name: str,
        run: Callable[[list[str]], np.ndarray] | Sequence[Callable[[list[str]], np.ndarray]],
        count_tokens: Callable[[str], int],
        config: BatchingConfig,
        metrics: Metrics | None = None,
        provider: str = "",
        run_alone: Callable[[list[str]], np.ndarray] | None = None,
    ) -> None:
        """`run`: one function (texts -> rows) per model instance; batches run concurrently,
        each on a free instance. `run_alone` (optional): for a batch formed when nothing else
        is queued or running, e.g. a session with every core's threads; later arrivals still
        start at once on the free instances."""
        self.name = name
        self._runners = [run] if callable(run) else list(run)
        if not self._runners:
            raise ValueError("a batcher needs at least one model instance")
        # a batch alone takes one of the instances' threads (they are all idle then), so the
        # others still start arrivals at once; with a single instance nothing would be left
        self._run_alone = run_alone if len(self._runners) > 1 else None
        self._count_tokens = count_tokens
        self._cfg = config
        self._metrics = metrics
        self._provider = provider
        self._queue: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        # no thread of its own for run_alone: one more measured 10-15% fewer req/s under load
        # (more threads contending for the GIL), and a batch runs alone only when all are idle
        self._executor = ThreadPoolExecutor(
            max_workers=len(self._runners), thread_name_prefix=f"batch-{name}"
        )
        # batch slots: each instance runs one batch and has `queued_batches` more formed and
        # waiting in its thread pool, so a model thread starts its next batch the moment it is
        # done instead of waiting for the event loop to form and hand it over
        self._free: asyncio.Queue[int] | None = None
        self._idle_instances: queue.SimpleQueue[int] = queue.SimpleQueue()
        for index in range(len(self._runners)):
            self._idle_instances.put(index)
        self._running: set[asyncio.Task] = set()
        self._task: asyncio.Task | None = None
        self._closed = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.runs = 0  # batches run, for tests and logs
        self.alone_runs = 0  # of which on run_alone

    def start(self) -> None:
        if self._task is None:
            self._free = asyncio.Queue()
            for slot in range(len(self._runners) * (1 + self.queued_batches)):
                self._free.put_nowait(slot)
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.name}")
            if self._metrics is not None:
                self._metrics.max_batch_size.labels(self.name).set(self._cfg.max_batch_size)
                self._metrics.model_instances.labels(self.name).set(len(self._runners))

    @property
    def max_batch_size(self) -> int:
        return self._cfg.max_batch_size

    @property
    def queued_batches(self) -> int:
        """Batches formed ahead per instance (see BatchingConfig.queued_batches)."""
        if self._cfg.queued_batches is not None:
            return self._cfg.queued_batches
        return 1 if self._cfg.max_batch_size == 1 else 0

    @property
    def instances(self) -> int:
        return len(self._runners)

    @property
    def depth(self) -> int:
        return len(self._queue)

    async def submit(self, text: str, deadline: float | None = None) -> tuple[np.ndarray, int]:
        """Queue one prompt; returns (its output row, the size of the batch it ran in)."""
        if self._closed:
            raise BatcherClosedError("the service is shutting down")
        if len(self._queue) >= self._cfg.max_queue:
            raise QueueFullError(f"{self.name}: queue full ({self._cfg.max_queue} prompts waiting)")
        loop = asyncio.get_running_loop()
        item = _Pending(text, self._count_tokens(text), loop.create_future(), loop.time(), deadline)
        self._queue.append(item)
        self._gauge()
        self._idle.clear()
        self._wakeup.set()
        row = await item.future
        return row, item.batch_size

    async def close(self, timeout: float | None = None) -> None:
        """Stop taking work; finish what is queued (within `timeout`), then stop the worker."""
        self._closed = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("batcher_close_timeout", model=self.name, queued=len(self._queue))
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _loop(self) -> None:
        assert self._free is not None
        while True:
            await self._wakeup.wait()
            slot = await self._free.get()  # wait for a free batch slot
            if self._cfg.max_wait_us and len(self._queue) < self._cfg.max_batch_size:
                await asyncio.sleep(self._cfg.max_wait_us / 1e6)
            batch = self._take_batch()
            if batch:
                alone = self._run_alone is not None and not self._running and not self._queue
                task = asyncio.get_running_loop().create_task(self._run_guarded(batch, slot, alone))
                self._running.add(task)
            else:
                self._free.put_nowait(slot)
            if not self._queue:
                self._wakeup.clear()
                self._maybe_idle()

    async def _run_guarded(self, batch: list[_Pending], slot: int, alone: bool = False) -> None:
        try:
            await self._run(batch, alone)
        except Exception as exc:  # noqa: BLE001 - never let one batch stop the worker
            log.error("batch_crashed", model=self.name, size=len(batch), error=repr(exc))
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
        finally:
            assert self._free is not None
            self._running.discard(asyncio.current_task())  # type: ignore[arg-type]
            self._free.put_nowait(slot)
            self._maybe_idle()

    def _maybe_idle(self) -> None:
        if not self._queue and not self._running:
            self._idle.set()

    def _take_batch(self) -> list[_Pending]:
        """The next batch: the oldest live prompt, and company of similar length among the next
        queued ones. Only the queue's head and that window are looked at (a deep queue must
        not cost a full scan per prompt: at a batch cap of 1 that was O(queue) per run)."""
        now = asyncio.get_running_loop().time()
        while self._queue and not _alive(self._queue[0], now):
            self._queue.popleft()
        if not self._queue:
            self._gauge()
            return []
        anchor = self._queue.popleft()
        chosen = [anchor] + (self._company(anchor, now) if self._cfg.max_batch_size > 1 else [])
        self._gauge()
        return chosen

    def _company(self, anchor: _Pending, now: float) -> list[_Pending]:
        """Prompts to run with `anchor`, the closest lengths first, within the batch caps; they
        (and dead prompts met on the way) leave the queue."""
        cap, ratio = self._cfg.max_batch_size, self._cfg.max_padding_ratio
        window, gone = [], set()
        for item in itertools.islice(self._queue, 4 * cap - 1):
            if _alive(item, now):
                window.append(item)
            else:
                gone.add(id(item))
        window.sort(key=lambda item: abs(item.tokens - anchor.tokens))
        chosen: list[_Pending] = []
        shortest = longest = anchor.tokens
        for item in window:
            if len(chosen) + 1 >= cap:
                break
            new_longest, new_shortest = max(longest, item.tokens), min(shortest, item.tokens)
            if new_longest * (len(chosen) + 2) > self._cfg.max_batch_tokens:
                continue
            if new_longest > ratio * new_shortest:  # too much padding: it waits for a closer batch
                continue
            chosen.append(item)
            shortest, longest = new_shortest, new_longest
        gone |= set(map(id, chosen))
        if gone:
            self._queue = deque(item for item in self._queue if id(item) not in gone)
        return chosen

    async def _run(self, batch: list[_Pending], alone: bool = False) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        texts = [item.text for item in batch]
        t0 = time.perf_counter()
        run = self._run_on_idle_instance
        if alone and self._run_alone is not None:
            run = self._run_alone
            self.alone_runs += 1
        try:
            rows = await loop.run_in_executor(self._executor, run, texts)
            _check_rows(rows, len(texts))
        except Exception as exc:  # noqa: BLE001 - isolate the prompt that broke the batch
            log.warning("batch_failed_retrying_singly", model=self.name, size=len(batch), error=str(exc))
            await self._run_singly(batch)
            return
        self._observe(batch, started, time.perf_counter() - t0)
        for item, row in zip(batch, rows, strict=True):
            if not item.future.done():
                item.batch_size = len(batch)
                item.future.set_result(row)

    def _run_on_idle_instance(self, texts: list[str]) -> np.ndarray:
        """In a pool thread: as many threads as instances, so one is always idle here."""
        index = self._idle_instances.get()
        try:
            return self._runners[index](texts)
        finally:
            self._idle_instances.put(index)

    async def _run_singly(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        for item in batch:
            if item.future.done():
                continue
            try:
                rows = await loop.run_in_executor(self._executor, self._run_on_idle_instance, [item.text])
                _check_rows(rows, 1)
            except Exception as exc:  # noqa: BLE001
                item.future.set_exception(exc)
            else:
                item.batch_size = 1
                item.future.set_result(rows[0])

    def _observe(self, batch: list[_Pending], started: float, seconds: float) -> None:
        self.runs += 1
        m = self._metrics
        if m is None:
            return
        m.batch_size.labels(self.name).observe(len(batch))
        m.batch_tokens.labels(self.name).observe(len(batch) * max(item.tokens for item in batch))
        m.inference.labels(self.name, self._provider).observe(seconds)
        for item in batch:
            m.queue_wait.labels(self.name).observe(max(0.0, started - item.enqueued))

    def _gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth.labels(self.name).set(len(self._queue))


def _alive(item: _Pending, now: float) -> bool:
    """False for a prompt whose caller went away, or whose deadline passed (it is told so)."""
    if item.future.done():  # the caller cancelled
        return False
    if item.deadline is not None and now >= item.deadline:
        item.future.set_exception(DeadlineExceededError("deadline passed while queued"))
        return False
    return True


def _check_rows(rows: np.ndarray, expected: int) -> None:
    if len(rows) != expected:
        raise ValueError(f"the model returned {len(rows)} rows for {expected} prompts")


def estimate_tokens(max_tokens: int) -> Callable[[str], int]:
    """A cheap token count for batching decisions (grouping, budget); the run tokenizes exactly.

    About 4 characters a token for English; [CLS] and [SEP] add 2; never above max_tokens.
    """

    def count(text: str) -> int:
        return min(max_tokens, 2 + (len(text) + 3) // 4)

    return count
