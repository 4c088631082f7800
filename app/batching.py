"""Micro-batching: concurrent requests share one model forward.

Requests wait in a bounded queue; a single consumer takes up to ``max_batch`` of them, waiting at
most ``max_wait_s`` for the batch to fill, and runs the batch function in a thread so the event loop
stays free. The batch function answers each item with its result, or with the exception that
fails that item's request alone (an undecodable photo among good ones). A full queue refuses new
work at once (the caller answers 503) rather than letting latency grow without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

log = logging.getLogger(__name__)
In = TypeVar("In")
Out = TypeVar("Out")
In_contra = TypeVar("In_contra", contravariant=True)
Out_co = TypeVar("Out_co", covariant=True)


class Overloaded(RuntimeError):
    """The queue is full."""


@dataclass(frozen=True)
class BatchOptions:
    max_batch: int  # items per batch at most
    max_wait_s: float  # how long a batch waits to fill
    queue_limit: int  # items waiting at most; ``submit`` refuses more

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.queue_limit < 1:
            raise ValueError("max_batch and queue_limit must be positive")


class Batcher(Protocol[In_contra, Out_co]):
    """What the recommender needs of a batcher: MicroBatcher here, or Ray Serve's ``@serve.batch``
    in a Serve replica (app.serve.ServeBatcher)."""

    @property
    def depth(self) -> int: ...  # items waiting

    async def warm_up(self, item: In_contra) -> None: ...

    def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def submit(self, item: In_contra) -> Out_co: ...


# How a recommender makes its batcher: (batch function, options, called with each batch's size).
BatcherFactory = Callable[
    [Callable[[list[In]], Sequence[Out | Exception]], BatchOptions, Callable[[int], None] | None], Batcher[In, Out]
]


class BatchThread(Generic[In, Out]):
    """The batch function, run in one dedicated thread: what every batcher shares (MicroBatcher here,
    app.serve.ServeBatcher on Ray Serve), whoever gathers the batches."""

    def __init__(
        self,
        run_batch: Callable[[list[In]], Sequence[Out | Exception]],
        options: BatchOptions,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.run_batch, self.max_batch, self.max_wait_s = run_batch, options.max_batch, options.max_wait_s
        self.on_batch = on_batch
        # One dedicated thread: torch keeps one OpenMP pool per calling thread, and several pools
        # fighting over few cores cost more than the forward itself.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")

    async def run(self, items: list[In]) -> Sequence[Out | Exception]:
        """The batch function on ``items``, in the batch thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.run_batch, items)

    async def warm_up(self, item: In) -> None:
        """Run one full batch of ``item`` in the batch thread before serving. Its allocator then
        holds the largest batch's working memory from the start: the process's size is known (a
        memory limit too small fails at start, not under load) and stays flat when load later
        fills batches (the soak measured +60 MB at the first busy minute without it)."""
        for result in await self.run([item] * self.max_batch):
            if isinstance(result, Exception):
                raise result

    async def stop(self) -> None:
        self._executor.shutdown(wait=False)


class MicroBatcher(BatchThread[In, Out]):
    def __init__(
        self,
        run_batch: Callable[[list[In]], Sequence[Out | Exception]],
        options: BatchOptions,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(run_batch, options, on_batch)
        self._queue: asyncio.Queue[tuple[In, asyncio.Future[Out]]] = asyncio.Queue(options.queue_limit)
        self._task: asyncio.Task[None] | None = None

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._task = asyncio.create_task(self._consume(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await super().stop()

    async def submit(self, item: In) -> Out:
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((item, future))
        except asyncio.QueueFull:
            raise Overloaded("too many photos waiting for the model") from None
        return await future

    async def _collect(self) -> list[tuple[In, asyncio.Future[Out]]]:
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _consume(self) -> None:
        while True:
            batch = [(item, fut) for item, fut in await self._collect() if not fut.cancelled()]
            if not batch:
                continue
            if self.on_batch:
                self.on_batch(len(batch))
            try:
                results = await self.run([item for item, _ in batch])
            except Exception as exc:  # a failed forward fails its requests, not the consumer
                log.exception("batch of %d failed", len(batch))
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            try:
                for (_, fut), result in zip(batch, results, strict=True):
                    if fut.done():
                        continue
                    if isinstance(result, Exception):
                        fut.set_exception(result)
                    else:
                        fut.set_result(result)
            except Exception as exc:  # e.g. a result per item missing: the consumer must live on
                log.exception("batch of %d answered wrongly", len(batch))
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(RuntimeError(f"the batch was answered wrongly: {exc}"))
