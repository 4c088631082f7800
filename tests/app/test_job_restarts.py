"""Jobs survive their workers: a stopped worker hands its job back (or finishes it within its grace
period), a vanished one's job is re-queued when its lease runs out and failed after the maximum
attempts; the Redis coordinator and the in-process one alike."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import yaml

from app import jobs
from app.coordination import Coordinator, MemoryCoordinator, RedisCoordinator
from app.schemas import Job, JobKind
from app.settings import Settings
from indexer.bundle import BundleStore
from tests.app.live import KEY, ROOT, Processes, bundle_version, service_env, wait_job, wait_until
from tests.conftest import RedisServer
from tests.helpers import make_catalogue

LEASE_S = 0.3


@pytest.fixture(params=["memory", "redis"])
def open_coordinator(request: pytest.FixtureRequest) -> Callable[[], Awaitable[Coordinator]]:
    """Makes the coordinator under test inside the test's event loop."""
    if request.param == "memory":

        async def memory() -> Coordinator:
            return MemoryCoordinator()

        return memory
    server: RedisServer = request.getfixturevalue("redis_server")

    async def redis() -> Coordinator:
        return RedisCoordinator(server.url)

    return redis


def run(scenario: Callable[[Coordinator], Awaitable[None]], opener: Callable[[], Awaitable[Coordinator]]) -> None:
    async def main() -> None:
        coordinator = await opener()
        try:
            await scenario(coordinator)
        finally:
            await coordinator.close()

    asyncio.run(main())


def test_a_lost_job_is_requeued_then_failed_after_the_maximum_attempts(
    open_coordinator: Callable[[], Awaitable[Coordinator]],
) -> None:
    async def scenario(coordinator: Coordinator) -> None:
        await coordinator.enqueue(Job.new(JobKind.REINDEX, {}))
        first = await coordinator.claim_job("w1", timeout_s=1, lease_s=LEASE_S)
        assert first is not None and (first.state, first.attempts, first.worker) == ("running", 1, "w1")
        assert await coordinator.renew_job(first, LEASE_S)
        assert await coordinator.recover_jobs(max_attempts=2) == []  # its lease holds: left alone
        await asyncio.sleep(LEASE_S + 0.2)  # w1 is killed: its lease runs out

        [requeued] = await coordinator.recover_jobs(max_attempts=2)
        assert requeued.state == "queued" and "w1 stopped renewing" in requeued.requeued[-1]
        assert "attempt 2 of 2" in requeued.requeued[-1]
        assert not await coordinator.renew_job(first, LEASE_S)  # the lost run can no longer write it
        second = await coordinator.claim_job("w2", timeout_s=1, lease_s=LEASE_S)
        assert second is not None and second.id == first.id and second.attempts == 2
        first.state = "succeeded"
        assert not await coordinator.finish_job(first)
        await asyncio.sleep(LEASE_S + 0.2)  # w2 is killed too

        [failed] = await coordinator.recover_jobs(max_attempts=2)
        stored = await coordinator.get_job(first.id)
        assert stored is not None and stored == failed and stored.state == "failed"
        assert "w2 stopped renewing" in (stored.error or "") and "failed after 2 attempts" in (stored.error or "")
        assert "FASHION_JOB_MAX_ATTEMPTS=2" in (stored.error or "")
        assert await coordinator.claim_job("w3", timeout_s=0.1, lease_s=LEASE_S) is None  # not queued again
        assert await coordinator.recover_jobs(max_attempts=2) == []

    run(scenario, open_coordinator)


def test_a_restarted_worker_requeues_its_own_jobs_at_once_and_a_live_worker_keeps_its_job(
    open_coordinator: Callable[[], Awaitable[Coordinator]],
) -> None:
    async def scenario(coordinator: Coordinator) -> None:
        await coordinator.enqueue(Job.new(JobKind.REINDEX, {}))
        job = await coordinator.claim_job("host:1", timeout_s=1, lease_s=60)
        await coordinator.enqueue(Job.new(JobKind.ADD, {}))
        other = await coordinator.claim_job("host:3", timeout_s=1, lease_s=LEASE_S)
        assert job is not None and other is not None
        await asyncio.sleep(LEASE_S + 0.2)  # host:3 is lost
        [lost] = await coordinator.recover_jobs(max_attempts=3, restarted="host:2")  # host:1 holds its job
        assert lost.id == other.id and "host:3 stopped renewing" in lost.requeued[-1]  # not host:2's restart
        [requeued] = await coordinator.recover_jobs(max_attempts=3, restarted="host:1")  # host:1 started again
        assert requeued.state == "queued" and "host:1 restarted" in requeued.requeued[-1]
        again = await coordinator.claim_job("host:1", timeout_s=1, lease_s=60)
        assert again is not None and again.id == job.id and again.attempts == 2
        again.state, again.version = "succeeded", "v1"
        assert await coordinator.finish_job(again)
        assert await coordinator.recover_jobs(max_attempts=3, restarted="host:1") == []  # finished: not running
        stored = await coordinator.get_job(job.id)
        assert stored is not None and (stored.state, stored.version) == ("succeeded", "v1")

    run(scenario, open_coordinator)


def test_a_handed_back_job_runs_next_and_its_run_does_not_count(
    open_coordinator: Callable[[], Awaitable[Coordinator]],
) -> None:
    async def scenario(coordinator: Coordinator) -> None:
        first, second = Job.new(JobKind.REINDEX, {}), Job.new(JobKind.ADD, {})
        await coordinator.enqueue(first)
        await coordinator.enqueue(second)
        taken = await coordinator.claim_job("w1", timeout_s=1, lease_s=60)
        assert taken is not None and taken.id == first.id  # first in, first out
        assert await coordinator.hand_back_job(taken, "worker w1 was stopped before the job finished")
        assert (taken.state, taken.attempts) == ("queued", 0)
        assert not await coordinator.renew_job(taken, 60)  # handed back: no longer this run's
        await coordinator.enqueue(Job.new(JobKind.DELETE, {}))
        again = await coordinator.claim_job("w2", timeout_s=1, lease_s=60)
        assert again is not None and again.id == first.id and again.attempts == 1  # ahead of the others
        assert again.requeued == ["worker w1 was stopped before the job finished"]
        assert await coordinator.recover_jobs(max_attempts=1) == []  # w2's lease holds

    run(scenario, open_coordinator)


def test_reading_a_job_settles_it_when_its_lease_ran_out(
    open_coordinator: Callable[[], Awaitable[Coordinator]],
) -> None:
    async def scenario(coordinator: Coordinator) -> None:
        await coordinator.enqueue(Job.new(JobKind.REINDEX, {}))
        job = await coordinator.claim_job("w1", timeout_s=1, lease_s=LEASE_S)
        assert job is not None
        live = await coordinator.settle_job(job.id, max_attempts=3)
        assert live is not None and live.state == "running"
        await asyncio.sleep(LEASE_S + 0.2)
        settled = await coordinator.settle_job(job.id, max_attempts=3)
        assert settled is not None and settled.state == "queued" and len(settled.requeued) == 1
        assert await coordinator.settle_job("no-such-job", max_attempts=3) is None

    run(scenario, open_coordinator)


# The worker loop, with fake jobs in place of the indexer: each reports its progress item by item.


def fake_job(items: int, every_s: float, published: list[str]) -> Callable[..., str]:
    def execute(job: Job, settings: Settings, report: Callable[[int, int], None]) -> str:
        for done in range(1, items + 1):
            time.sleep(every_s)
            report(done, items)
        published.append(job.id)  # what a bundle build does after its last item
        return f"v-{job.id[:6]}"

    return execute


@asynccontextmanager
async def worker(coordinator: Coordinator, settings: Settings) -> AsyncIterator[asyncio.Event]:
    """A worker loop running beside the test; the event stops it, as SIGTERM does."""
    stop = asyncio.Event()
    loop = asyncio.create_task(jobs.worker_loop(coordinator, settings, stop))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(loop, 30)


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_a_stopped_worker_finishes_a_job_that_ends_within_its_grace_period(monkeypatch: pytest.MonkeyPatch) -> None:
    published: list[str] = []
    monkeypatch.setattr(jobs, "execute_job", fake_job(items=10, every_s=0.15, published=published))
    settings = Settings(worker_stop_grace_s=30)  # 25 s to finish: plenty

    async def scenario() -> None:
        coordinator = MemoryCoordinator()
        job = Job.new(JobKind.REINDEX, {})
        await coordinator.enqueue(job)
        async with worker(coordinator, settings) as stop:
            await wait_for(lambda: _progress(coordinator, job.id, 1))
            stop.set()  # SIGTERM, with the job a tenth done
        stored = await coordinator.get_job(job.id)
        assert stored is not None and stored.state == "succeeded" and stored.requeued == [], stored
        assert published == [job.id]

    asyncio.run(scenario())


def test_a_stopped_worker_hands_a_long_job_back_and_publishes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    published: list[str] = []
    monkeypatch.setattr(jobs, "execute_job", fake_job(items=600, every_s=0.05, published=published))  # 30 s
    settings = Settings(worker_stop_grace_s=6)  # 1 s to finish, then handed back

    async def scenario() -> None:
        coordinator = MemoryCoordinator()
        job = Job.new(JobKind.REINDEX, {})
        await coordinator.enqueue(job)
        started = time.monotonic()
        async with worker(coordinator, settings) as stop:
            await wait_for(lambda: _progress(coordinator, job.id, 1))
            stop.set()
        assert time.monotonic() - started < 15
        stored = await coordinator.get_job(job.id)
        assert stored is not None and (stored.state, stored.attempts) == ("queued", 0), stored
        assert "was stopped before the job finished" in stored.requeued[0]
        await wait_for(lambda: _no_job_thread(), timeout=5)  # its thread stopped at its next report
        assert published == []

        # The next worker takes it and runs it to the end.
        monkeypatch.setattr(jobs, "execute_job", fake_job(items=3, every_s=0.01, published=published))
        async with worker(coordinator, settings):
            await wait_for(lambda: _state(coordinator, job.id, "succeeded"))
        stored = await coordinator.get_job(job.id)
        assert stored is not None and stored.attempts == 1 and published == [job.id]

    asyncio.run(scenario())


def test_a_cancelled_worker_hands_its_job_back_once_its_thread_has_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    # The embedded worker is cancelled when the API shuts down (Ctrl-C): the process exits right after,
    # and a job thread still inside torch then aborts it, so the loop waits for the thread's next report.
    published: list[str] = []
    monkeypatch.setattr(jobs, "execute_job", fake_job(items=600, every_s=2.0, published=published))

    async def scenario() -> None:
        coordinator = MemoryCoordinator()
        job = Job.new(JobKind.REINDEX, {})
        await coordinator.enqueue(job)
        loop = asyncio.create_task(jobs.worker_loop(coordinator, Settings(), asyncio.Event()))
        await wait_for(lambda: _progress(coordinator, job.id, 1))
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        # stopped at its next report (up to 2 s away) before the loop returned; its last lines after
        # it settled the job's future take a moment
        await wait_for(lambda: _no_job_thread(), timeout=0.5)
        stored = await coordinator.get_job(job.id)
        assert stored is not None and stored.state == "queued", stored
        assert "shut down before the job finished" in stored.requeued[0]
        assert published == []

    asyncio.run(scenario())


async def _progress(coordinator: Coordinator, job_id: str, done: int) -> bool:
    job = await coordinator.get_job(job_id)
    return job is not None and job.progress.get("done", 0) >= done


async def _state(coordinator: Coordinator, job_id: str, state: str) -> bool:
    job = await coordinator.get_job(job_id)
    return job is not None and job.state == state


async def _no_job_thread() -> bool:
    return not jobs.job_thread_running()


# Real processes against a real redis-server.


def test_a_worker_stopped_mid_reindex_hands_its_job_to_the_next_worker_and_it_succeeds(
    tmp_path: Path, tiny_checkpoint: Path, bundles_dir: Path, redis_server: RedisServer, processes: Processes
) -> None:
    env = service_env(tiny_checkpoint, bundles_dir, redis_server.url)
    api = processes.api(env, tmp_path / "api.log")
    # No grace: the job is handed back at once (a compose stop_grace_period of 5 s or less).
    first = processes.start(["-m", "app.worker"], {**env, "FASHION_WORKER_STOP_GRACE_S": "0"}, tmp_path / "w1.log")
    before = bundle_version(api)
    catalogue = make_catalogue(tmp_path / "big", count=300, prefix="k")
    job_id = httpx.post(api + "/admin/reindex", headers=KEY, json={"catalogue": str(catalogue)}).json()["job_id"]
    wait_until(lambda: _job(api, job_id)["state"] == "running", "the worker to start the job", 60)

    first.send_signal(signal.SIGTERM)  # as `docker compose restart worker` does
    assert first.wait(20) == 0, (tmp_path / "w1.log").read_text()[-3000:]
    job = _job(api, job_id)
    assert (job["state"], job["attempts"]) == ("queued", 0), job
    assert "was stopped before the job finished" in job["requeued"][0]

    processes.start(["-m", "app.worker"], env, tmp_path / "w2.log")
    job = wait_job(api, job_id, timeout=180)
    assert job["state"] == "succeeded" and job["attempts"] == 1, job
    wait_until(lambda: bundle_version(api) == job["version"], "the new bundle to be served", 30)
    assert BundleStore(bundles_dir).versions() == sorted([before, job["version"]]), "one bundle published"


def _job(api: str, job_id: str) -> dict:  # type: ignore[type-arg]
    return httpx.get(f"{api}/admin/jobs/{job_id}", headers=KEY, timeout=5).json()  # type: ignore[no-any-return]


def test_compose_gives_the_worker_the_grace_period_it_works_to() -> None:
    """One variable sets both: Docker's wait between SIGTERM and SIGKILL, and the worker's own."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    default = Settings.model_fields["worker_stop_grace_s"].default
    for name in ("worker", "worker-gpu"):
        service = compose["services"][name]
        period = re.fullmatch(r"\$\{FASHION_WORKER_STOP_GRACE_S:-(\d+)\}s", service["stop_grace_period"])
        own = re.fullmatch(
            r"\$\{FASHION_WORKER_STOP_GRACE_S:-(\d+)\}", service["environment"]["FASHION_WORKER_STOP_GRACE_S"]
        )
        assert period and own, service
        assert float(period.group(1)) == float(own.group(1)) == default
