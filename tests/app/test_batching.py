"""The micro-batcher itself, with a real consumer: photos waiting together share one forward,
a full queue refuses at once, and a failed forward fails only its own requests."""

from __future__ import annotations

import asyncio
import threading

import pytest

from app.batching import BatchOptions, MicroBatcher, Overloaded


class GatedForward:
    """Doubles its inputs, but only once the test opens the gate: callers pile up meanwhile."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started = threading.Event()
        self.batches: list[list[int]] = []

    def __call__(self, items: list[int]) -> list[int]:
        self.started.set()
        self.gate.wait(10)
        self.batches.append(items)
        if any(i < 0 for i in items):
            raise ValueError("negative input")
        return [2 * i for i in items]


async def _wait_for(event: threading.Event) -> None:
    for _ in range(500):
        if event.is_set():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the forward never started")


def test_waiting_photos_share_a_batch_and_a_full_queue_refuses() -> None:
    async def scenario() -> None:
        forward = GatedForward()
        batcher: MicroBatcher[int, int] = MicroBatcher(
            forward, BatchOptions(max_batch=4, max_wait_s=0.0, queue_limit=5)
        )
        batcher.start()
        try:
            first = asyncio.create_task(batcher.submit(0))
            await _wait_for(forward.started)  # the consumer holds item 0 in the forward
            waiting = [asyncio.create_task(batcher.submit(i)) for i in range(1, 6)]
            await asyncio.sleep(0.05)
            assert batcher.depth == 5
            with pytest.raises(Overloaded):
                await batcher.submit(99)
            forward.gate.set()
            assert await first == 0
            assert await asyncio.gather(*waiting) == [2, 4, 6, 8, 10]
        finally:
            await batcher.stop()
        # the five that waited went in batches of at most max_batch, in order
        assert forward.batches == [[0], [1, 2, 3, 4], [5]]

    asyncio.run(scenario())


def test_a_failed_forward_fails_its_batch_and_the_batcher_carries_on() -> None:
    async def scenario() -> None:
        forward = GatedForward()
        forward.gate.set()
        batcher: MicroBatcher[int, int] = MicroBatcher(
            forward, BatchOptions(max_batch=8, max_wait_s=0.0, queue_limit=8)
        )
        batcher.start()
        try:
            with pytest.raises(ValueError, match="negative"):
                await batcher.submit(-1)
            assert await batcher.submit(3) == 6
        finally:
            await batcher.stop()

    asyncio.run(scenario())


def test_an_item_answered_with_an_exception_fails_alone() -> None:
    """One bad photo in a batch fails its own request; the others in the batch get their answers."""

    async def scenario() -> None:
        forward = GatedForward()

        def per_item(items: list[int]) -> list[int | Exception]:
            forward([abs(i) for i in items])  # held at the gate, as a forward would be
            return [ValueError(f"bad item {i}") if i < 0 else 2 * i for i in items]

        options = BatchOptions(max_batch=8, max_wait_s=0.0, queue_limit=8)
        batcher: MicroBatcher[int, int] = MicroBatcher(per_item, options)
        batcher.start()
        try:
            first = asyncio.create_task(batcher.submit(0))
            await _wait_for(forward.started)  # the next three wait, and go in one batch
            rest = [asyncio.create_task(batcher.submit(i)) for i in (1, -2, 3)]
            await asyncio.sleep(0.05)
            forward.gate.set()
            assert await first == 0
            results = await asyncio.gather(*rest, return_exceptions=True)
        finally:
            await batcher.stop()
        assert forward.batches == [[0], [1, 2, 3]]
        assert results[0] == 2 and results[2] == 6
        assert isinstance(results[1], ValueError) and "bad item -2" in str(results[1])

    asyncio.run(scenario())


def test_a_batch_answered_wrongly_fails_its_requests_and_the_batcher_carries_on() -> None:
    async def scenario() -> None:
        def short(items: list[int]) -> list[int]:
            return [] if items == [-1] else items  # one result missing for the first batch

        batcher: MicroBatcher[int, int] = MicroBatcher(short, BatchOptions(max_batch=8, max_wait_s=0.0, queue_limit=8))
        batcher.start()
        try:
            with pytest.raises(RuntimeError, match="answered wrongly"):
                await batcher.submit(-1)
            assert await asyncio.wait_for(batcher.submit(5), 5) == 5
        finally:
            await batcher.stop()

    asyncio.run(scenario())


def test_warm_up_runs_one_full_batch_in_the_batch_thread() -> None:
    """The largest batch's memory is taken at start, by the thread whose allocator serves forwards."""

    async def scenario() -> None:
        threads: list[str] = []
        sizes: list[int] = []

        def forward(items: list[int]) -> list[int]:
            threads.append(threading.current_thread().name)
            sizes.append(len(items))
            return items

        batcher: MicroBatcher[int, int] = MicroBatcher(
            forward,
            BatchOptions(max_batch=6, max_wait_s=0.0, queue_limit=8),
            on_batch=lambda n: threads.append(f"on_batch {n}"),
        )
        await batcher.warm_up(7)
        batcher.start()
        try:
            assert await batcher.submit(1) == 1
        finally:
            await batcher.stop()
        assert sizes == [6, 1]
        assert threads[0].startswith("inference") and threads[2] == threads[0]
        assert threads[1] == "on_batch 1"  # the warm-up is not counted as served traffic

    asyncio.run(scenario())


def test_options_must_be_positive() -> None:
    with pytest.raises(ValueError):
        BatchOptions(max_batch=0, max_wait_s=0.0, queue_limit=1)
