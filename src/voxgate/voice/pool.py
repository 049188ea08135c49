"""One pool of worker threads for speech models, shared by every call on a worker, by priority.

Speech models release the GIL (CTranslate2, onnxruntime), so threads give real parallelism;
the pool is sized to the cores and each model runs single-threaded inside it, which keeps a
burst of calls from oversubscribing the CPU. Work that a caller is waiting for right now (the
final transcript, the first words of a reply) jumps ahead of speculative or later work.

Jobs queued through one :class:`Batch` (several calls' utterances for the recogniser) are taken
together: a worker that starts one also takes the others of that batch still waiting, up to its
size, and runs them in one model call. Only jobs that would otherwise wait are joined, so a pool
with a free worker runs them side by side as before; a saturated pool decodes more per core-second.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741
R = TypeVar("R")

# The caller is waiting, and this short job is all that stands between them and the reply's first
# words: the first TTS chunk (tens of ms) goes before the final decodes (hundreds) queued with it.
# Shortest first cuts every caller's mean wait; a decode waits at most a few short syntheses more.
FIRST_AUDIO = -1
URGENT = 0  # the caller is waiting: final ASR
SPECULATIVE = 1  # may be thrown away: ASR during a pause
BACKGROUND = 2  # later TTS chunks, warm-ups


@dataclass(order=True)
class _Job:
    priority: int
    seq: int
    fn: Callable[..., Any] = field(compare=False)
    args: tuple[Any, ...] = field(compare=False)
    future: asyncio.Future[Any] = field(compare=False)
    loop: asyncio.AbstractEventLoop = field(compare=False)
    queued_at: float = field(compare=False, default_factory=time.perf_counter)
    batch: Batch[Any, Any] | None = field(compare=False, default=None)


class Batch(Generic[I, R]):
    """Jobs that one model call can run together: `fn` takes a list of items (one per job, at most
    `size`) and returns their results in the same order; an exception it raises goes to every job."""

    def __init__(self, fn: Callable[[list[I]], Sequence[R]], size: int) -> None:
        self.fn = fn
        self.size = max(1, size)
        self.runs = 0  # model calls (failed ones too), counted by the pool
        self.jobs = 0  # jobs they ran


class Ticket:
    """A handle on one queued job, so its caller can raise its priority while it waits."""

    __slots__ = ("job",)

    def __init__(self) -> None:
        self.job: _Job | None = None


class SpeechPool:
    """`workers` threads take any job by priority; `urgent_workers` more take only URGENT (or FIRST_AUDIO) jobs,
    so a caller waiting for an answer is never stuck behind a long synthesis already running."""

    def __init__(self, workers: int | None = None, name: str = "voxgate-speech", urgent_workers: int = 1):
        self.workers = workers or max(1, os.cpu_count() or 1)
        self.urgent_workers = urgent_workers
        self._heap: list[_Job] = []
        self._cv = threading.Condition()
        self._seq = itertools.count()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, args=(False,), name=f"{name}-{i}", daemon=True)
            for i in range(self.workers)
        ] + [
            threading.Thread(target=self._work, args=(True,), name=f"{name}-urgent-{i}", daemon=True)
            for i in range(urgent_workers)
        ]
        for t in self._threads:
            t.start()
        self.busy = 0
        self.completed = 0
        self.wait_ms_total = 0.0

    async def run(self, priority: int, fn: Callable[..., T], *args: Any, ticket: Ticket | None = None) -> T:
        """Run `fn(*args)` on a worker at `priority` (lower runs first); `ticket` lets the caller promote it."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue(_Job(priority, next(self._seq), fn, args, fut, loop), ticket)
        return await fut

    async def run_batched(self, priority: int, batch: Batch[I, R], item: I, ticket: Ticket | None = None) -> R:
        """Run `item` through `batch` at `priority`, together with other items of the same batch that
        are waiting when a worker takes it (see :class:`Batch`)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[R] = loop.create_future()
        self._queue(_Job(priority, next(self._seq), batch.fn, (item,), fut, loop, batch=batch), ticket)
        return await fut

    def _queue(self, job: _Job, ticket: Ticket | None) -> None:
        with self._cv:
            if self._closed:
                raise RuntimeError("speech pool is closed")
            heapq.heappush(self._heap, job)
            if ticket is not None:
                ticket.job = job
            self._cv.notify_all()  # an urgent-only worker may be the one that can take it

    def promote(self, ticket: Ticket, priority: int = URGENT) -> bool:
        """Raise a job that is still queued to `priority`; False if it already started (or never queued)."""
        with self._cv:
            job = ticket.job
            if job is None or job.priority <= priority:
                return False
            for i, queued in enumerate(self._heap):
                if queued is job:
                    self._heap[i] = replace(job, priority=priority)
                    ticket.job = self._heap[i]
                    heapq.heapify(self._heap)
                    self._cv.notify_all()
                    return True
            return False

    def has_room(self) -> bool:
        """Nothing is waiting and a general worker is free."""
        with self._cv:
            return not self._heap and self.busy < self.workers

    def queued(self) -> int:
        """How many jobs are waiting."""
        with self._cv:
            return len(self._heap)

    def _work(self, urgent_only: bool) -> None:
        while True:
            with self._cv:
                while not self._closed and (not self._heap or (urgent_only and self._heap[0].priority > URGENT)):
                    self._cv.wait()
                if self._closed and not self._heap:
                    return
                if urgent_only and self._heap[0].priority > URGENT:
                    return
                job = heapq.heappop(self._heap)
                jobs = [job] if job.batch is None else self._join(job, URGENT if urgent_only else SPECULATIVE)
                self.busy += 1
            jobs = [j for j in jobs if not j.future.cancelled()]
            if not jobs:
                with self._cv:
                    self.busy -= 1
                continue
            started = time.perf_counter()
            results: list[Any] | None = None
            failure: BaseException | None = None
            try:
                results = [job.fn(*job.args)] if job.batch is None else self._run_batch(job.batch, jobs)
            except BaseException as exc:  # delivered to the awaiting coroutines
                failure = exc
            # counted before anyone hears back, so a caller that got its answer sees it counted
            with self._cv:  # the counters are shared by every worker thread
                self.busy -= 1
                self.completed += len(jobs)
                self.wait_ms_total += sum((started - j.queued_at) * 1000 for j in jobs)
                if job.batch is not None:
                    job.batch.runs += 1
                    job.batch.jobs += len(jobs)
            if results is not None:
                for j, result in zip(jobs, results, strict=True):
                    _deliver(j, _set_result, result)
            else:
                for j in jobs:
                    _deliver(j, _set_exception, failure)

    def _join(self, first: _Job, worst: int) -> list[_Job]:
        """`first` and the queued jobs of its batch at `worst` priority or better, best first, up to the
        batch's size; those joined leave the queue (the lock is held)."""
        batch = first.batch
        assert batch is not None  # nosec B101: only batch jobs are joined
        mates = sorted(j for j in self._heap if j.batch is batch and j.priority <= worst)[: batch.size - 1]
        if mates:
            taken = {id(j) for j in mates}
            self._heap = [j for j in self._heap if id(j) not in taken]
            heapq.heapify(self._heap)
        return [first, *mates]

    @staticmethod
    def _run_batch(batch: Batch[Any, Any], jobs: list[_Job]) -> list[Any]:
        results = list(batch.fn([j.args[0] for j in jobs]))
        if len(results) != len(jobs):
            raise RuntimeError(f"a batch of {len(jobs)} returned {len(results)} results")
        return results

    def close(self) -> None:
        """Stop: work not started is dropped (its awaiters see it cancelled), the jobs running now
        finish, and the threads end — none may outlive the pool, or the interpreter would stop
        under a native model still running in it."""
        with self._cv:
            self._closed = True
            dropped, self._heap = self._heap, []
            self._cv.notify_all()
        for job in dropped:
            _deliver(job, _cancel, None)
        for t in self._threads:
            t.join(timeout=30)


def _deliver(job: _Job, setter: Callable[[asyncio.Future[Any], Any], None], value: Any) -> None:
    """Hand a result to the job's event loop; one that has closed meanwhile has nobody waiting,
    and must not take the worker thread down with it."""
    try:
        job.loop.call_soon_threadsafe(setter, job.future, value)
    except RuntimeError:
        if not job.loop.is_closed():
            raise


def _cancel(fut: asyncio.Future[Any], _value: Any) -> None:
    fut.cancel()


def _set_result(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
