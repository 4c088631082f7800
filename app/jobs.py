"""Admin jobs (reindex, complete a first slice, add items, delete items) and the worker loop that runs them.

Jobs are queued through the coordinator; a worker (a separate ``python -m app.worker`` process, or a
task inside the API in the embedded default) takes one at a time and runs the indexer in a thread,
saving progress as it goes. On success it announces the new bundle version; every API process then
swaps to it. The bundle pointer on disk is the truth, so an announcement lost while Redis is away
is caught up by the API's pointer poll.

Jobs survive restarts. A worker holds its job under a lease that it renews every second
(``FASHION_JOB_STALE_S`` long). Stopped (SIGTERM), it takes no new job and gives the running one
``FASHION_WORKER_STOP_GRACE_S`` less ``HANDBACK_MARGIN_S`` to finish; past that, it stops the job's
thread at its next progress report (nothing is published) and hands the job back to the head of the
queue, which does not count as an attempt. A worker that vanished (kill -9, a lost machine) lets
its lease run out: the next worker to look (or the API, when the job is read) re-queues the job, or
fails it with the reason after ``FASHION_JOB_MAX_ATTEMPTS`` runs. A worker restarted under the same
name (a container keeps its hostname and PID 1) re-queues the jobs it held at once. A re-run
starts its build from scratch: embeddings are not kept between runs (a bundle is published whole
or not at all).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import assert_never

from app.coordination import CoordinationUnavailable, Coordinator
from app.paths import confine, first_outside
from app.reindex import reindex_source
from app.schemas import SKIPPED_LISTED, Job, JobKind
from app.settings import Settings
from app.uploads import UploadStore
from indexer.build import add_items, build_bundle, complete_bundle, delete_items
from indexer.bundle import BundleError, BundleStore
from indexer.catalogue import CatalogueItem, load_catalogue
from indexer.errors import IndexerError

log = logging.getLogger(__name__)
FINAL_SAVE_RETRY_S = 600.0  # how long a worker keeps trying to record a finished job while Redis is away
HEARTBEAT_S = 1.0  # a running job's lease is renewed (and its progress saved) this often
RECOVER_EVERY_S = 5.0  # an idle worker looks for jobs whose worker vanished this often
HANDBACK_MARGIN_S = 5.0  # a stopped worker hands its job back this long before its grace period ends
JOB_THREAD = "job-"  # the name of a job's thread starts with this


class JobInterrupted(Exception):
    """Raised in a job's thread at its next progress report, once its run is given up."""


def worker_name() -> str:
    """This worker's name in job leases: host and process id. A container keeps both across a
    restart (its hostname, PID 1), so a restarted worker knows that the jobs it held were lost."""
    return f"{socket.gethostname()}:{os.getpid()}"


class JobRun:
    """A job's progress as its thread reports it, and the one safe way to stop that thread: at its
    next progress report, while it is still embedding (before anything is published)."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.progress: dict[str, int] = {}
        self._lock = threading.Lock()
        self._interrupted = False

    def report(self, done: int, total: int) -> None:
        with self._lock:
            if self._interrupted:
                raise JobInterrupted(f"job {self.job.id} was given up at item {done} of {total}")
            self.progress.update(done=done, total=total)

    def interrupt(self) -> bool:
        """Make the thread stop at its next report; False when it has none left to make (a delete,
        or past its last item: indexing or publishing), so it must be left to finish."""
        with self._lock:
            total = self.progress.get("total")
            if self.job.kind is JobKind.DELETE or (total is not None and self.progress.get("done", 0) >= total):
                return False
            self._interrupted = True
            return True


def execute_job(job: Job, settings: Settings, report: Callable[[int, int], None]) -> str | None:
    """Run one job to completion (blocking); returns the published bundle version (None: a
    completion that found the catalogue whole publishes nothing). ``report(done, total)`` follows
    the embedding, item by item; an exception it raises stops the job there."""
    store = BundleStore(settings.bundles_dir)
    # Only a completion places products by the configured map (when its slice is indexed anew); a
    # reindex reads its own (reindex_source), an add places items as its bundle was built.
    options = settings.index_options(with_category_map=job.kind is JobKind.COMPLETE)
    params = job.params
    uploads = UploadStore(settings.uploads_dir)  # items added by upload join every full index
    roots = settings.allowed_roots()
    if job.kind is JobKind.REINDEX:
        source = reindex_source(params, settings)  # the request's, the configured or the live bundle's own
        roots += source.trusted
        outside = first_outside([source.catalogue, source.metadata], roots)
        if outside:
            raise IndexerError(f"{outside} is outside the catalogue roots")
        catalogue = confine(uploads.added_to(load_catalogue(source.catalogue, source.metadata)), roots)
        options = dataclasses.replace(options, category_map=source.category_map)
        version = build_bundle(
            store, settings.checkpoint, catalogue, options, report, min_items=_min_items(store, job, settings)
        )
        return _with_skipped(job, store, version)
    if job.kind is JobKind.COMPLETE:
        catalogue = uploads.added_to(load_catalogue(params["catalogue"], params.get("metadata")))
        slice_of = (str(params["catalogue"]), params.get("metadata"))  # as the slice's manifest recorded them
        completed = complete_bundle(
            store, settings.checkpoint, catalogue, options=options, progress=report, queued_for=slice_of
        )
        return None if completed is None else _with_skipped(job, store, completed)
    if job.kind is JobKind.ADD:
        items = [CatalogueItem(i["id"], Path(i["path"]), i.get("metadata", {})) for i in params["items"]]
        outside = first_outside([item.path for item in items], roots)
        if outside:
            raise IndexerError(f"{outside} is outside the catalogue roots")
        return _with_skipped(job, store, add_items(store, settings.checkpoint, items, options, report))
    if job.kind is JobKind.DELETE:
        try:
            return delete_items(store, params["ids"])
        finally:
            # The uploads among the ids the live bundle no longer holds go too, else the next
            # reindex brings them back: also when a re-run finds them gone (its first run published),
            # not when the job is refused (an unknown id: the bundle still holds them). An id
            # uploaded again since the delete was asked for is kept.
            held = set(store.open().keys_by_id) if store.current_version() else set()
            uploads.remove([i for i in params["ids"] if i not in held], saved_before=job.created)
    assert_never(job.kind)


def _min_items(store: BundleStore, job: Job, settings: Settings) -> int:
    """How many items a reindex must yield: a share of the live bundle's, unless the request forces
    it (or no readable bundle is live: then the reindex is its repair)."""
    if job.params.get("force"):
        return 1
    try:
        live_items = int(store.manifest()["items"])
    except (BundleError, KeyError, ValueError):
        return 1
    return max(1, math.ceil(settings.reindex_min_fraction * live_items))


def _in_thread(fn: Callable[[], str | None], name: str) -> asyncio.Future[str | None]:
    """Run ``fn`` in a daemon thread: a worker that gave its job up may exit without waiting for it
    (asyncio.to_thread's pool would hold the process until the thread ends)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[str | None] = loop.create_future()
    future.add_done_callback(lambda f: f.cancelled() or f.exception())  # an abandoned one logs nothing

    def settle(result: str | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            outcome: tuple[str | None, BaseException | None] = (fn(), None)
        except Exception as exc:  # the job's failure, or its interruption
            outcome = (None, exc)
        with contextlib.suppress(RuntimeError):  # the loop is closed: the process is exiting
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


async def _renew(coordinator: Coordinator, job: Job, lease_s: float) -> bool:
    """Renew the job's lease and save its progress; False when its run no longer owns it. While
    Redis is away nobody can take the job over, so the run goes on."""
    try:
        return await coordinator.renew_job(job, lease_s)
    except CoordinationUnavailable as exc:
        log.warning("job %s: progress not saved: %s", job.id, exc)
        return True


async def _finish(coordinator: Coordinator, job: Job) -> None:
    """Record the job's final state, for up to FINAL_SAVE_RETRY_S while Redis is away (a final state
    must land, or the job's lease would run out and it would run again)."""
    deadline = time.monotonic() + FINAL_SAVE_RETRY_S
    job.updated = time.time()
    while True:
        try:
            if not await coordinator.finish_job(job):
                log.warning(
                    "job %s %s, but it had been re-queued meanwhile: this run's end is not recorded", job.id, job.state
                )
            return
        except CoordinationUnavailable as exc:
            if time.monotonic() >= deadline:
                log.warning("job %s state %s not saved: %s", job.id, job.state, exc)
                return
        await asyncio.sleep(1.0)


async def _hand_back(coordinator: Coordinator, job: Job, why: str) -> None:
    try:
        if await coordinator.hand_back_job(job, why):
            log.info("job %s handed back to the queue: %s", job.id, why)
    except CoordinationUnavailable as exc:  # its lease runs out instead, and it is re-queued then
        log.warning("job %s not handed back (%s): it is re-queued when its lease runs out", job.id, exc)


async def run_job(coordinator: Coordinator, settings: Settings, job: Job, stop: asyncio.Event | None = None) -> bool:
    """Run a claimed job to its end, renewing its lease as it goes. With ``stop`` set, the job gets
    the grace period (less HANDBACK_MARGIN_S) to finish, then is handed back. Returns False when the
    job's thread may still be running (handed back; it stops at its next progress report)."""
    run = JobRun(job)
    task = _in_thread(functools.partial(execute_job, job, settings, run.report), JOB_THREAD + job.id[:8])
    hand_back_at: float | None = None
    lost = False
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=HEARTBEAT_S)
            if task.done():
                break
            job.progress = dict(run.progress)
            if not lost and not await _renew(coordinator, job, settings.job_stale_s):
                lost = True  # re-queued after its lease ran out: another run owns it now
                interrupted = run.interrupt()
                log.warning(
                    "job %s was re-queued while this worker ran it: %s",
                    job.id,
                    "stopping" if interrupted else "finishing",
                )
            if lost or stop is None or not stop.is_set():
                continue
            if hand_back_at is None:
                drain = max(0.0, settings.worker_stop_grace_s - HANDBACK_MARGIN_S)
                hand_back_at = time.monotonic() + drain
                log.info("stopping: job %s has %.0f s to finish before it is handed back", job.id, drain)
            if time.monotonic() >= hand_back_at and run.interrupt():
                await _hand_back(coordinator, job, f"worker {job.worker} was stopped before the job finished")
                await asyncio.wait({task}, timeout=HANDBACK_MARGIN_S / 2)  # it stops at its next report
                return task.done()
    except asyncio.CancelledError:  # the process is shutting down (the embedded worker)
        if run.interrupt():
            await _hand_back(coordinator, job, f"worker {job.worker} shut down before the job finished")
        # Give the thread until its next report to stop: a daemon thread still inside torch when
        # the interpreter exits aborts the process ("terminate called without an active exception").
        await asyncio.wait({task}, timeout=HANDBACK_MARGIN_S / 2)
        raise
    job.progress = dict(run.progress)
    try:
        job.version = task.result()
        job.state = "succeeded"
    except JobInterrupted:
        return True  # given up after it was lost: its new run records the end
    except Exception as exc:  # the job fails; the worker and the live bundle carry on
        log.exception("job %s failed", job.id)
        job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
    if lost:
        log.warning("job %s %s after it was re-queued: this run's end is not recorded", job.id, job.state)
    else:
        await _finish(coordinator, job)
    if job.version:
        try:
            await coordinator.announce(job.version)
        except CoordinationUnavailable as exc:
            log.warning("could not announce %s (%s); API processes will find it by polling", job.version, exc)
    return True


def _with_skipped(job: Job, store: BundleStore, version: str) -> str:
    """``version``, the job's, once what it left out is in the job's status (an admin who
    reindexed over HTTP sees it there)."""
    try:
        skipped = store.skipped_by(version)
    except BundleError as exc:  # the version is published; only its report is missing
        log.warning("job %s: cannot read what it skipped: %s", job.id, exc)
        return version
    job.skipped_count, job.skipped = len(skipped), skipped[:SKIPPED_LISTED]
    return version


async def _recover(coordinator: Coordinator, settings: Settings, restarted: str | None) -> None:
    for job in await coordinator.recover_jobs(settings.job_max_attempts, restarted):
        what = job.error if job.state == "failed" else job.requeued[-1]
        log.warning("job %s %s: %s", job.id, job.state, what)


async def worker_loop(coordinator: Coordinator, settings: Settings, stop: asyncio.Event) -> None:
    """Take jobs one at a time until ``stop`` is set, and look for jobs whose worker vanished."""
    name = worker_name()
    log.info("indexer worker %s ready", name)
    restarted: str | None = name  # at start: jobs leased under this name were lost with its last process
    next_recovery = 0.0
    while not stop.is_set():
        try:
            if time.monotonic() >= next_recovery:
                await _recover(coordinator, settings, restarted)
                restarted, next_recovery = None, time.monotonic() + RECOVER_EVERY_S
            job = await coordinator.claim_job(name, timeout_s=1.0, lease_s=settings.job_stale_s)
        except CoordinationUnavailable as exc:
            log.warning("waiting for the job queue: %s", exc)
            await asyncio.sleep(1.0)
            continue
        if job is None:
            continue
        if stop.is_set():
            await _hand_back(coordinator, job, f"worker {name} was stopped as it took the job")
            break
        log.info("job %s (%s): attempt %d on %s", job.id, job.kind, job.attempts, name)
        if not await run_job(coordinator, settings, job, stop):
            return  # handed back; its thread stops at its next progress report


def job_thread_running() -> bool:
    """Whether a job's thread is still running (one given up, winding down)."""
    return any(thread.name.startswith(JOB_THREAD) and thread.is_alive() for thread in threading.enumerate())
