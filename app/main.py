"""The FastAPI application: ``create_app()`` builds it; heavy things load in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request, Response

from app.batching import MicroBatcher
from app.coordination import CoordinationUnavailable, Coordinator, make_coordinator
from app.errors import install_error_handlers
from app.jobs import worker_loop
from app.metrics import Metrics
from app.recommender import Recommender, ResponseCache
from app.routes import admin, health, items, page, recommend
from app.schemas import Job, JobKind
from app.settings import Settings, get_settings
from indexer.bundle import Bundle
from indexer.category_map import CategoryMapError, read_category_map

log = logging.getLogger(__name__)


async def _follow_announcements(app: FastAPI) -> None:
    while True:  # a failure must not end the loop: the next announcement may be fine
        try:
            async for _version in app.state.coordinator.announcements():
                # An announcement says the pointer moved: the pointer, not the version named, is
                # the truth (a late announcement may name a bundle another writer has replaced).
                await app.state.recommender.bundles.swap_to()
        except Exception:
            log.exception("following bundle announcements failed; resuming")
            await asyncio.sleep(1.0)


async def _poll_pointer(app: FastAPI, every_s: float) -> None:
    """The pointer on disk is the truth: catches announcements missed while Redis was away."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await app.state.recommender.bundles.swap_to()
        except Exception:
            log.exception("checking the bundle pointer failed; trying again in %.0f s", every_s)


async def _complete_first_slice(bundle: Bundle, coordinator: Coordinator) -> None:
    """A live bundle that holds a first slice of its catalogue gets the rest through a job (a job
    on a bundle already completed publishes nothing, so several API processes may each ask)."""
    if bundle.complete:
        return
    catalogue = bundle.manifest["catalogue"]
    job = Job.new(JobKind.COMPLETE, {"catalogue": catalogue["root"], "metadata": catalogue.get("metadata")})
    await coordinator.enqueue(job)
    log.info("bundle %s holds a first slice of %s: job %s adds the rest", bundle.version, catalogue["root"], job.id)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    metrics: Metrics = app.state.metrics
    if not settings.checkpoint.is_file():
        raise RuntimeError(f"no model checkpoint at {settings.checkpoint} (set FASHION_CHECKPOINT)")
    coordinator = make_coordinator(settings.redis_url)
    recommender = await asyncio.to_thread(
        Recommender.from_files,
        settings.checkpoint,
        settings.bundles_dir,
        metrics,
        settings.device,
        runtime=settings.runtime,
        runtime_cache=settings.runtime_cache,
        limits=settings.image_limits(),
        threshold=settings.part_threshold,
        floor=settings.part_floor,
        trim_max_area=settings.trim_max_area,
        wide_fill=settings.wide_fill,
        wide_threshold=settings.wide_part_threshold,
        make_batcher=app.state.make_batcher,
        batching=settings.batch_options(),
        cache=ResponseCache(coordinator, settings.cache_ttl_s, metrics) if settings.cache_ttl_s else None,
        search_threads=settings.search_threads,
    )
    app.state.recommender, app.state.coordinator = recommender, coordinator
    if settings.category_map is not None:  # read with the settings; its labels are the model's to check
        try:
            read_category_map(settings.category_map).check_labels(recommender.model.config.labels)
        except CategoryMapError as exc:
            raise RuntimeError(f"FASHION_CATEGORY_MAP: {exc}") from None
    await recommender.bundles.swap_to()
    if recommender.bundles.current is None:
        log.warning("no bundle in %s yet: /recommend answers 503 until one is published", settings.bundles_dir)
    else:
        with contextlib.suppress(CoordinationUnavailable):
            if await coordinator.get_version() is None:
                await coordinator.announce(recommender.bundles.current.version)
            await _complete_first_slice(recommender.bundles.current, coordinator)
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        await recommender.warm_up()
        recommender.batcher.start()
        tasks.append(asyncio.create_task(_follow_announcements(app)))
        tasks.append(asyncio.create_task(_poll_pointer(app, settings.bundle_poll_s)))
        if settings.embedded_worker:
            tasks.append(asyncio.create_task(worker_loop(coordinator, settings, stop)))
        yield
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await recommender.close()
        await coordinator.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(
        title="Diverse fashion recommendation",
        description="A photo of an outfit in; one catalogue item per attended part out, each a different one "
        "(Verma et al., ICIP 2018).",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings or get_settings()
    app.state.make_batcher = MicroBatcher  # a Ray Serve replica may put @serve.batch in its place (app.serve)
    app.state.metrics = Metrics()
    install_error_handlers(app)
    app.include_router(recommend.router)
    app.include_router(admin.router)
    app.include_router(health.router)
    app.include_router(items.router)
    app.include_router(page.router)

    @app.middleware("http")
    async def count_requests(request: Request, call_next):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        try:
            response: Response = await call_next(request)
        except Exception:
            # an unhandled error is answered 500 by the handler outside this middleware: counted here
            route = request.scope.get("route")
            app.state.metrics.requests.labels(getattr(route, "path", "unmatched"), "500").inc()
            raise
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        app.state.metrics.requests.labels(path, str(response.status_code)).inc()
        if path == "/recommend":
            app.state.metrics.stage_seconds.labels("request").observe(time.perf_counter() - started)
        return response

    return app
