"""Admin jobs (reindex, complete a first slice, add items, delete items) and the worker loop that runs them.

Jobs are queued through the coordinator; a worker (a separate ``python -m app.worker`` process, or a
task inside the API in the embedded default) takes one at a time and runs the indexer in a thread,
saving progress as it goes. On success it announces the new bundle version; every API process then
swaps to it. The bundle pointer on disk is the truth, so an announcement lost while Redis is away
is caught up by the API's pointer poll.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from pathlib import Path
from typing import assert_never

from app.coordination import CoordinationUnavailable, Coordinator
from app.paths import confine, first_outside
from app.schemas import Job, JobKind
from app.settings import Settings
from app.uploads import UploadStore
from indexer.build import add_items, build_bundle, complete_bundle, delete_items
from indexer.bundle import BundleError, BundleStore
from indexer.catalogue import CatalogueItem, load_catalogue
from indexer.errors import IndexerError

log = logging.getLogger(__name__)
FINAL_SAVE_RETRY_S = 600.0  # how long a worker keeps trying to record a finished job while Redis is away


def execute_job(job: Job, settings: Settings, progress: dict[str, int]) -> str:
    """Run one job to completion (blocking); returns the published bundle version."""
    store = BundleStore(settings.bundles_dir)
    options = settings.index_options()

    def report(done: int, total: int) -> None:
        progress.update(done=done, total=total)

    params = job.params
    uploads = UploadStore(settings.uploads_dir)  # items added by upload join every full index
    roots = settings.allowed_roots()
    if job.kind is JobKind.REINDEX:
        source = params.get("catalogue") or settings.catalogue
        if not source:
            raise IndexerError("no catalogue given and FASHION_CATALOGUE is not set")
        outside = first_outside([source, params.get("metadata")], roots)
        if outside:
            raise IndexerError(f"{outside} is outside the catalogue roots")
        catalogue = confine(uploads.added_to(load_catalogue(source, params.get("metadata"))), roots)
        return build_bundle(
            store, settings.checkpoint, catalogue, options, report, min_items=_min_items(store, job, settings)
        )
    if job.kind is JobKind.COMPLETE:
        catalogue = uploads.added_to(load_catalogue(params["catalogue"], params.get("metadata")))
        return complete_bundle(store, settings.checkpoint, catalogue, options=options, progress=report)
    if job.kind is JobKind.ADD:
        items = [CatalogueItem(i["id"], Path(i["path"]), i.get("metadata", {})) for i in params["items"]]
        outside = first_outside([item.path for item in items], roots)
        if outside:
            raise IndexerError(f"{outside} is outside the catalogue roots")
        return add_items(store, settings.checkpoint, items, options, report)
    if job.kind is JobKind.DELETE:
        return delete_items(store, params["ids"])
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


async def _save(coordinator: Coordinator, job: Job, retry_s: float = 0.0) -> None:
    """Save the job's state; with ``retry_s``, keep trying that long (a final state must land, or
    the job would read as failed once its reports stop)."""
    deadline = time.monotonic() + retry_s
    while True:
        job.updated = time.time()
        try:
            await coordinator.save_job(job)
            return
        except CoordinationUnavailable as exc:
            if time.monotonic() >= deadline:
                log.warning("job %s state %s not saved: %s", job.id, job.state, exc)
                return
        await asyncio.sleep(1.0)


async def run_job(coordinator: Coordinator, settings: Settings, job: Job) -> None:
    job.state = "running"
    await _save(coordinator, job)
    progress: dict[str, int] = {}
    task = asyncio.create_task(asyncio.to_thread(execute_job, job, settings, progress))
    while not task.done():
        await asyncio.wait({task}, timeout=1.0)
        job.progress = dict(progress)
        await _save(coordinator, job)
    try:
        job.version = task.result()
        job.state = "succeeded"
    except Exception as exc:  # the job fails; the worker and the live bundle carry on
        log.exception("job %s failed", job.id)
        job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
    await _save(coordinator, job, retry_s=FINAL_SAVE_RETRY_S)
    if job.version:
        try:
            await coordinator.announce(job.version)
        except CoordinationUnavailable as exc:
            log.warning("could not announce %s (%s); API processes will find it by polling", job.version, exc)


async def worker_loop(coordinator: Coordinator, settings: Settings, stop: asyncio.Event) -> None:
    log.info("indexer worker ready")
    while not stop.is_set():
        try:
            job = await coordinator.next_job(timeout_s=1.0)
        except CoordinationUnavailable as exc:
            log.warning("waiting for the job queue: %s", exc)
            await asyncio.sleep(1.0)
            continue
        if job is not None:
            await run_job(coordinator, settings, job)
