"""What several processes must agree on: the live bundle version (and its announcement), the
reindex job queue and job states, and a short-lived response cache.

Durable state is the bundle on disk; this is coordination only. ``RedisCoordinator`` shares it
between workers and replicas; ``MemoryCoordinator`` is the single-process equivalent used when no
Redis is configured. Cache calls never fail a request: when Redis is away they miss quietly.

Jobs survive their workers. A worker claims a job with a lease (``FASHION_JOB_STALE_S``) that it
renews every second while the job runs; a stopped worker hands its job back to the head of the
queue; a job whose lease ran out (its worker was killed or lost) is re-queued by whoever notices
first (any worker, or the API reading the job), and failed once it has had
``FASHION_JOB_MAX_ATTEMPTS`` runs. Every write of a running job is fenced by its run (worker and
attempt): a worker that lost its job (lease expired, job re-queued) can no longer write it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError, WatchError

from app.schemas import Job

log = logging.getLogger(__name__)

PREFIX = "fashion:"
VERSION_KEY = PREFIX + "bundle:version"
VERSION_CHANNEL = PREFIX + "bundle:announce"
JOB_QUEUE = PREFIX + "jobs:queue"  # ids: new ones pushed left, claimed from the right, re-queued to the right
JOB_RUNNING = PREFIX + "jobs:running"  # ids of the claimed jobs, each with a lease key
JOB_KEY = PREFIX + "job:"
LEASE_SUFFIX = ":lease"  # JOB_KEY + id + LEASE_SUFFIX: the worker holding the job, expiring unless renewed
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
    async def claim_job(self, worker: str, timeout_s: float, lease_s: float) -> Job | None: ...
    async def renew_job(self, job: Job, lease_s: float) -> bool: ...
    async def finish_job(self, job: Job) -> bool: ...
    async def hand_back_job(self, job: Job, why: str) -> bool: ...
    async def recover_jobs(self, max_attempts: int, restarted: str | None = None) -> list[Job]: ...
    async def save_job(self, job: Job) -> None: ...
    async def get_job(self, job_id: str) -> Job | None: ...
    async def settle_job(self, job_id: str, max_attempts: int) -> Job | None: ...
    async def cache_get(self, key: str) -> bytes | None: ...
    async def cache_set(self, key: str, value: bytes, ttl_s: int) -> None: ...
    async def close(self) -> None: ...


def lost_reason(job: Job, restarted: str | None = None) -> str:
    """Why a job's run ended without its worker: it restarted, or its lease ran out."""
    if restarted is not None:
        return f"worker {restarted} restarted while running the job (killed)"
    return f"worker {job.worker or '?'} stopped renewing the job's lease (killed or lost)"


def _owns(stored: Job | None, job: Job, holder: str | None) -> bool:
    """Whether ``job``'s run may still write it: the stored job is this run's (same worker and
    attempt), and its lease is held by that worker or lapsed with nobody having acted on it yet."""
    if stored is None:
        return True  # the store lost it (Redis restarted without persistence): this run writes it again
    if stored.worker != job.worker or stored.attempts != job.attempts:
        return False
    if holder is not None:
        return holder == job.worker
    return stored.state == "running"


class MemoryCoordinator:
    """In-process equivalent for a single process (the embedded default)."""

    def __init__(self) -> None:
        self._version: str | None = None
        self._subscribers: list[asyncio.Queue[str]] = []
        self._queue: collections.deque[str] = collections.deque()  # left: newest; right: next to run
        self._queued = asyncio.Event()
        self._leases: dict[str, tuple[str, float]] = {}  # running job id: (worker, monotonic expiry)
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
        self._queue.appendleft(job.id)
        self._queued.set()

    def _push_next(self, job_id: str) -> None:
        self._queue.append(job_id)
        self._queued.set()

    async def claim_job(self, worker: str, timeout_s: float, lease_s: float) -> Job | None:
        """The next queued job, marked running by ``worker`` under a lease (one event loop: atomic)."""
        deadline = time.monotonic() + timeout_s
        while True:
            while self._queue:
                job_id = self._queue.pop()
                job = self._jobs.get(job_id)
                if job is None or job.state != "queued":
                    continue  # finished meanwhile (a duplicate entry): nothing to run
                job.state, job.worker, job.updated = "running", worker, time.time()
                job.attempts += 1
                self._leases[job_id] = (worker, time.monotonic() + lease_s)
                return job.model_copy(deep=True)
            self._queued.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queued.wait(), remaining)

    def _holder(self, job_id: str) -> str | None:
        lease = self._leases.get(job_id)
        if lease is None or lease[1] < time.monotonic():
            return None
        return lease[0]

    async def renew_job(self, job: Job, lease_s: float) -> bool:
        if not _owns(self._jobs.get(job.id), job, self._holder(job.id)):
            return False
        job.updated = time.time()
        self._jobs[job.id] = job.model_copy(deep=True)
        self._leases[job.id] = (job.worker or "", time.monotonic() + lease_s)
        return True

    async def finish_job(self, job: Job) -> bool:
        if not _owns(self._jobs.get(job.id), job, self._holder(job.id)):
            return False
        self._jobs[job.id] = job.model_copy(deep=True)
        self._leases.pop(job.id, None)
        return True

    async def hand_back_job(self, job: Job, why: str) -> bool:
        if not _owns(self._jobs.get(job.id), job, self._holder(job.id)):
            return False
        job.hand_back(why)
        self._jobs[job.id] = job.model_copy(deep=True)
        self._leases.pop(job.id, None)
        self._push_next(job.id)
        return True

    def _recover(self, job_id: str, max_attempts: int, restarted: str | None) -> Job | None:
        holder = self._holder(job_id)
        if holder is not None and holder != restarted:
            return None  # its worker is alive
        job = self._jobs.get(job_id)
        self._leases.pop(job_id, None)
        if job is None or job.state in ("succeeded", "failed"):
            return None
        job.requeue_lost(lost_reason(job, restarted if holder is not None else None), max_attempts)
        if job.state == "queued":
            self._push_next(job_id)
        return job.model_copy(deep=True)

    async def recover_jobs(self, max_attempts: int, restarted: str | None = None) -> list[Job]:
        """Running jobs whose lease ran out (or held by ``restarted``, a worker that started again):
        re-queued, or failed after ``max_attempts`` runs."""
        recovered = [self._recover(job_id, max_attempts, restarted) for job_id in list(self._leases)]
        return [job for job in recovered if job is not None]

    async def save_job(self, job: Job) -> None:
        self._jobs[job.id] = job.model_copy(deep=True)  # a snapshot, as Redis keeps one

    async def get_job(self, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        return job.model_copy(deep=True) if job else None

    async def settle_job(self, job_id: str, max_attempts: int) -> Job | None:
        """The job, re-queued (or failed) first if it is running and its lease ran out."""
        job = self._jobs.get(job_id)
        if job is not None and job.state == "running" and self._holder(job_id) is None:
            self._recover(job_id, max_attempts, None)
        return await self.get_job(job_id)

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


# Take the next queued job id and lease it to a worker, in one step: KEYS queue, running set;
# ARGV job key prefix, worker, lease (ms).
CLAIM_SCRIPT = f"""
local id = redis.call('RPOP', KEYS[1])
if not id then return false end
redis.call('SADD', KEYS[2], id)
redis.call('SET', ARGV[1] .. id .. '{LEASE_SUFFIX}', ARGV[2], 'PX', ARGV[3])
return id
"""


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisCoordinator:
    """Shared coordination through Redis (redis-py asyncio)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.redis = aioredis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0, health_check_interval=5)
        self._claim = self.redis.register_script(CLAIM_SCRIPT)

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

    async def claim_job(self, worker: str, timeout_s: float, lease_s: float) -> Job | None:
        """The next queued job, moved to the running set under ``worker``'s lease in one step (a
        worker killed right after still leaves it leased, so it is found again), then marked running."""
        # Wait for a job without taking it: BLMOVE (Redis 6.2 and later) from the list's right end to
        # its right end moves nothing, and returns as soon as the list holds one.
        if await self._call(self.redis.blmove(JOB_QUEUE, JOB_QUEUE, max(1, int(timeout_s)), "RIGHT", "RIGHT")) is None:
            return None
        while True:
            popped = await self._call(self._claim(keys=[JOB_QUEUE, JOB_RUNNING], args=[JOB_KEY, worker, _ms(lease_s)]))
            if popped is None:
                return None  # another worker took it
            job_id = str(_text(popped))
            job = await self.get_job(job_id)
            if job is None or job.state != "queued":  # expired, or finished meanwhile (a duplicate entry)
                await self._forget(job_id)
                continue
            job.state, job.worker, job.updated = "running", worker, time.time()
            job.attempts += 1
            await self._call(self.redis.set(JOB_KEY + job_id, job.model_dump_json(), ex=JOB_TTL_S))
            return job

    async def _forget(self, job_id: str) -> None:
        """Drop a claimed id that has nothing to run."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.srem(JOB_RUNNING, job_id)
            pipe.delete(JOB_KEY + job_id + LEASE_SUFFIX)
            await self._call(pipe.execute())

    async def _fenced(self, job: Job, write: Callable[[Any], None]) -> bool:
        """Run ``write`` (given the transaction) only while ``job``'s run owns the job; False when
        it no longer does. Compare-and-set on the job and its lease."""
        key, lease = JOB_KEY + job.id, JOB_KEY + job.id + LEASE_SUFFIX
        for _ in range(5):
            try:
                async with self.redis.pipeline(transaction=True) as pipe:
                    await pipe.watch(key, lease)
                    value, holder = await pipe.get(key), await pipe.get(lease)
                    stored = Job.model_validate_json(value) if value else None
                    if not _owns(stored, job, _text(holder)):
                        return False
                    pipe.multi()
                    write(pipe)
                    await pipe.execute()
                    return True
            except WatchError:
                continue  # written meanwhile: look again
            except (RedisError, OSError) as exc:
                raise CoordinationUnavailable(f"redis unavailable: {exc}") from exc
        return False

    async def renew_job(self, job: Job, lease_s: float) -> bool:
        """Save the running job (its progress) and renew its lease, while this run owns it."""
        job.updated = time.time()

        def write(pipe: Any) -> None:
            pipe.set(JOB_KEY + job.id, job.model_dump_json(), ex=JOB_TTL_S)
            pipe.set(JOB_KEY + job.id + LEASE_SUFFIX, job.worker or "", px=_ms(lease_s))
            pipe.sadd(JOB_RUNNING, job.id)

        return await self._fenced(job, write)

    async def finish_job(self, job: Job) -> bool:
        """Record the job's final state and release it, while this run owns it."""

        def write(pipe: Any) -> None:
            pipe.set(JOB_KEY + job.id, job.model_dump_json(), ex=JOB_TTL_S)
            pipe.srem(JOB_RUNNING, job.id)
            pipe.delete(JOB_KEY + job.id + LEASE_SUFFIX)

        return await self._fenced(job, write)

    async def hand_back_job(self, job: Job, why: str) -> bool:
        """Put the job back at the head of the queue (its worker is stopping), while this run owns it."""
        handed = job.model_copy(deep=True)
        handed.hand_back(why)

        def write(pipe: Any) -> None:
            pipe.set(JOB_KEY + job.id, handed.model_dump_json(), ex=JOB_TTL_S)
            pipe.srem(JOB_RUNNING, job.id)
            pipe.delete(JOB_KEY + job.id + LEASE_SUFFIX)
            pipe.rpush(JOB_QUEUE, job.id)

        if not await self._fenced(job, write):
            return False
        job.hand_back(why)  # the caller's copy, as stored
        return True

    async def _recover(self, job_id: str, max_attempts: int, restarted: str | None) -> Job | None:
        """Re-queue (or fail) the job when its lease ran out or its worker restarted; compare-and-set:
        a worker renewing its lease meanwhile (so it is alive) wins."""
        key, lease = JOB_KEY + job_id, JOB_KEY + job_id + LEASE_SUFFIX
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                await pipe.watch(key, lease)
                holder = _text(await pipe.get(lease))
                if holder is not None and holder != restarted:
                    return None  # its worker is alive
                value = await pipe.get(key)
                job = Job.model_validate_json(value) if value else None
                pipe.multi()
                pipe.srem(JOB_RUNNING, job_id)
                pipe.delete(lease)
                if job is not None and job.state not in ("succeeded", "failed"):
                    job.requeue_lost(lost_reason(job, restarted if holder is not None else None), max_attempts)
                    pipe.set(key, job.model_dump_json(), ex=JOB_TTL_S)
                    if job.state == "queued":
                        pipe.rpush(JOB_QUEUE, job_id)
                else:
                    job = None
                await pipe.execute()
                return job
        except WatchError:
            return None  # someone acted on it meanwhile
        except (RedisError, OSError) as exc:
            raise CoordinationUnavailable(f"redis unavailable: {exc}") from exc

    async def recover_jobs(self, max_attempts: int, restarted: str | None = None) -> list[Job]:
        """Running jobs whose lease ran out (or held by ``restarted``, a worker that started again):
        re-queued, or failed after ``max_attempts`` runs."""
        running = await self._call(self.redis.smembers(JOB_RUNNING))
        recovered = [await self._recover(str(_text(job_id)), max_attempts, restarted) for job_id in running]
        return [job for job in recovered if job is not None]

    async def save_job(self, job: Job) -> None:
        await self._call(self.redis.set(JOB_KEY + job.id, job.model_dump_json(), ex=JOB_TTL_S))

    async def get_job(self, job_id: str) -> Job | None:
        value = await self._call(self.redis.get(JOB_KEY + job_id))
        return Job.model_validate_json(value) if value else None

    async def settle_job(self, job_id: str, max_attempts: int) -> Job | None:
        """The job, re-queued (or failed) first if it is running and its lease ran out."""
        job = await self.get_job(job_id)
        if (
            job is not None
            and job.state == "running"
            and not await self._call(self.redis.exists(JOB_KEY + job_id + LEASE_SUFFIX))
        ):
            await self._recover(job_id, max_attempts, None)
            job = await self.get_job(job_id)
        return job

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
