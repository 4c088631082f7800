"""Admin routes, behind the API key: reindex, add and delete items (as jobs), job status."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, status

from app.coordination import CoordinationUnavailable
from app.deps import AdminDep, CoordinatorDep
from app.errors import ServiceError
from app.jobs import new_job
from app.schemas import AddItemsRequest, DeleteItemsRequest, ErrorResponse, Job, JobAccepted, ReindexRequest

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[AdminDep],
    responses={code: {"model": ErrorResponse} for code in (401, 403, 503)},
)


async def _enqueue(request: Request, coordinator: Any, kind: str, params: dict[str, Any]) -> JobAccepted:
    job = new_job(kind, params)
    try:
        await coordinator.enqueue(job)
    except CoordinationUnavailable as exc:
        raise ServiceError(
            503, "coordination_unavailable", f"the job queue is unavailable: {exc}", {"Retry-After": "5"}
        ) from exc
    return JobAccepted(job_id=job["id"], status_url=str(request.url_for("get_job", job_id=job["id"])))


@router.post("/reindex", status_code=status.HTTP_202_ACCEPTED, response_model=JobAccepted)
async def reindex(request: Request, coordinator: CoordinatorDep, body: ReindexRequest | None = None) -> JobAccepted:
    """Rebuild the whole bundle from a catalogue (the configured one by default)."""
    return await _enqueue(request, coordinator, "reindex", (body or ReindexRequest()).model_dump())


@router.post("/items", status_code=status.HTTP_202_ACCEPTED, response_model=JobAccepted)
async def add(request: Request, coordinator: CoordinatorDep, body: AddItemsRequest) -> JobAccepted:
    """Add (or replace) items by id; only they are embedded."""
    return await _enqueue(request, coordinator, "add", body.model_dump())


@router.post("/items/delete", status_code=status.HTTP_202_ACCEPTED, response_model=JobAccepted)
async def delete(request: Request, coordinator: CoordinatorDep, body: DeleteItemsRequest) -> JobAccepted:
    """Remove items by id."""
    return await _enqueue(request, coordinator, "delete", body.model_dump())


@router.get("/jobs/{job_id}", response_model=Job, name="get_job")
async def get_job(job_id: str, coordinator: CoordinatorDep) -> dict[str, Any]:
    try:
        job = await coordinator.get_job(job_id)
    except CoordinationUnavailable as exc:
        raise ServiceError(503, "coordination_unavailable", str(exc), {"Retry-After": "5"}) from exc
    if job is None:
        raise ServiceError(404, "not_found", f"no job {job_id}")
    return job
