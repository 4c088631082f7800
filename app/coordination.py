"""What several processes must agree on: the live bundle version (and its announcement), the
reindex job queue and job states, and a short-lived response cache.

Durable state is the bundle on disk; this is coordination only. ``RedisCoordinator`` shares it
between workers and replicas; ``MemoryCoordinator`` is the single-process equivalent used when no
Redis is configured. Cache calls never fail a request: when Redis is away they miss quietly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError, WatchError

from app.schemas import Job

log = logging.getLogger(__name__)

PREFIX = "fashion:"
VERSION_KEY = PREFIX + "bundle:version"
VERSION_CHANNEL = PREFIX + "bundle:announce"
JOB_QUEUE = PREFIX + "jobs:queue"
JOB_KEY = PREFIX + "job:"
CACHE_KEY = PREFIX + "cache:"
JOB_TTL_S = 7 * 24 * 3600


class CoordinationUnavailable(RuntimeError):
    """Redis cannot be reached; admin work waits for it."""


class Coordinator(Protocol):
    async def ping(self) -> bool: ...
    async def get_version(self) -> str | None: ...
    async def announce(self, version: str) -> None: ...
    def announcements(self) -> AsyncIterator[str]: ...
    async def enqueue(self, job: Job) -> None: ...
    async def next_job(self, timeout_s: float) -> Job | None: ...
    async def save_job(self, job: Job) -> None: ...
    async def get_job(self, job_id: str) -> Job | None: ...
    async def settle_stale_job(self, job_id: str, stale_s: float) -> Job | None: ...
    async def cache_get(self, key: str) -> bytes | None: ...
    async def cache_set(self, key: str, value: bytes, ttl_s: int) -> None: ...
    async def close(self) -> None: ...


class MemoryCoordinator:
    """In-process equivalent for a single process (the embedded default)."""

    def __init__(self) -> None:
        self._version: str | None = None
        self._subscribers: list[asyncio.Queue[str]] = []
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._jobs: dict[str, Job] = {}
        self._cache: dict[str, tuple[float, bytes]] = {}

    async def ping(self) -> bool:
        return True

    async def get_version(self) -> str | None:
        return self._version

    async def announce(self, version: str) -> None:
        self._version = version
        for queue in self._subscribers:
            queue.put_nowait(version)

    async def announcements(self) -> AsyncIterator[str]:
        queue: asyncio.Queue[str] = asyncio.Queue()
        self._subscribers.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.remove(queue)

    async def enqueue(self, job: Job) -> None:
        await self.save_job(job)
        self._queue.put_nowait(job)

    async def next_job(self, timeout_s: float) -> Job | None:
        try:
            return await asyncio.wait_for(self._queue.get(), timeout_s)
        except TimeoutError:
            return None

    async def save_job(self, job: Job) -> None:
        self._jobs[job.id] = job.model_copy()  # a snapshot, as Redis keeps one

    async def get_job(self, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        return job.model_copy() if job else None

    async def settle_stale_job(self, job_id: str, stale_s: float) -> Job | None:
        """The job, marked failed first if its worker stopped reporting (one event loop: atomic)."""
        job = self._jobs.get(job_id)
        if job is not None and job.fail_if_silent(stale_s):
            self._jobs[job_id] = job
        return job.model_copy() if job else None

    async def cache_get(self, key: str) -> bytes | None:
        entry = self._cache.get(key)
        if entry is None or entry[0] < time.monotonic():
            self._cache.pop(key, None)
            return None
        return entry[1]

    async def cache_set(self, key: str, value: bytes, ttl_s: int) -> None:
        if len(self._cache) > 10_000:  # bounded: drop the expired, then the oldest
            now = time.monotonic()
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now} or {}
            while len(self._cache) > 10_000:
                self._cache.pop(next(iter(self._cache)))
        self._cache[key] = (time.monotonic() + ttl_s, value)

    async def close(self) -> None:
        pass


class RedisCoordinator:
    """Shared coordination through Redis (redis-py asyncio)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.redis = aioredis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0, health_check_interval=5)

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except (RedisError, OSError) as exc:
            raise CoordinationUnavailable(f"redis unavailable: {exc}") from exc

    async def get_version(self) -> str | None:
        value = await self._call(self.redis.get(VERSION_KEY))
        return value.decode() if value else None

    async def announce(self, version: str) -> None:
        await self._call(self.redis.set(VERSION_KEY, version))
        await self._call(self.redis.publish(VERSION_CHANNEL, version))

    async def announcements(self) -> AsyncIterator[str]:
        """New versions as they are announced; reconnects by itself after an outage."""
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(VERSION_CHANNEL)
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        yield message["data"].decode()
            except (RedisError, OSError) as exc:
                log.warning("announcement channel lost (%s); retrying", exc)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()

    async def enqueue(self, job: Job) -> None:
        await self.save_job(job)
        await self._call(self.redis.lpush(JOB_QUEUE, job.id))

    async def next_job(self, timeout_s: float) -> Job | None:
        popped = await self._call(self.redis.brpop([JOB_QUEUE], timeout=max(1, int(timeout_s))))
        if popped is None:
            return None
        return await self.get_job(popped[1].decode())

    async def save_job(self, job: Job) -> None:
        await self._call(self.redis.set(JOB_KEY + job.id, job.model_dump_json(), ex=JOB_TTL_S))

    async def get_job(self, job_id: str) -> Job | None:
        value = await self._call(self.redis.get(JOB_KEY + job_id))
        return Job.model_validate_json(value) if value else None

    async def settle_stale_job(self, job_id: str, stale_s: float) -> Job | None:
        """The job, marked failed first if its worker stopped reporting. Compare-and-set: when the
        worker saves it meanwhile (so it is alive), that save wins and is returned."""
        key = JOB_KEY + job_id
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                await pipe.watch(key)
                value = await pipe.get(key)
                job = Job.model_validate_json(value) if value else None
                if job is not None and job.fail_if_silent(stale_s):
                    pipe.multi()
                    pipe.set(key, job.model_dump_json(), ex=JOB_TTL_S)
                    await pipe.execute()
                return job
        except WatchError:
            return await self.get_job(job_id)
        except (RedisError, OSError) as exc:
            raise CoordinationUnavailable(f"redis unavailable: {exc}") from exc

    async def cache_get(self, key: str) -> bytes | None:
        try:
            value = await self.redis.get(CACHE_KEY + key)
        except (RedisError, OSError):
            return None
        return value.encode() if isinstance(value, str) else value

    async def cache_set(self, key: str, value: bytes, ttl_s: int) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.redis.set(CACHE_KEY + key, value, ex=ttl_s)

    async def close(self) -> None:
        await self.redis.aclose()


def make_coordinator(redis_url: str | None) -> Coordinator:
    return RedisCoordinator(redis_url) if redis_url else MemoryCoordinator()
