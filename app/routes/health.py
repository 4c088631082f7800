"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.deps import CoordinatorDep, MetricsDep, RecommenderDep, SettingsDep
from app.schemas import Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(recommender: RecommenderDep, coordinator: CoordinatorDep, settings: SettingsDep) -> JSONResponse:
    """Ready when the model and a bundle are loaded. Redis trouble degrades admin work only."""
    bundle = recommender.bundles.current
    coordination = ("redis" if await coordinator.ping() else "redis-unavailable") if settings.redis_url else "memory"
    detail = None
    ready = bundle is not None and len(bundle.items) > 0
    if bundle is None:
        detail = "no bundle loaded: build one with `python -m indexer build` or POST /admin/reindex"
    elif not ready:
        detail = f"bundle {bundle.version} holds no items: reindex a catalogue"
    elif coordination == "redis-unavailable":
        detail = "redis unavailable: serving the loaded bundle; admin jobs wait"
    if recommender.bundles.refused:
        detail = "; ".join(filter(None, [detail, recommender.bundles.refused]))
    body = Readiness(
        ready=ready,
        model_version=recommender.model_version,
        bundle_version=bundle.version if bundle else None,
        coordination=coordination,
        detail=detail,
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"description": "Prometheus text exposition", "content": {"text/plain": {"schema": {"type": "string"}}}}
    },
)
async def metrics(metrics: MetricsDep, recommender: RecommenderDep) -> Response:
    metrics.queue_depth.set(recommender.batcher.depth)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
