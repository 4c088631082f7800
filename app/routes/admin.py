"""Admin routes, behind the API key: reindex, add and delete items (as jobs), job status."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from app.coordination import CoordinationUnavailable, Coordinator
from app.deps import AdminDep, CoordinatorDep, RecommenderDep, SettingsDep
from app.errors import ServiceError, error_responses
from app.multipart import read_body, read_image_form
from app.paths import first_outside
from app.reindex import NoCatalogue, reindex_source
from app.schemas import (
    IMAGE_TYPES,
    ITEM_ID_PATTERN,
    AddItemsRequest,
    DeleteItemsRequest,
    Job,
    JobAccepted,
    JobKind,
    ReindexRequest,
    inline_schema,
)
from app.settings import Settings
from app.uploads import UploadStore
from indexer.catalogue import CatalogueItem
from indexer.category_map import CategoryMapError, read_category_map
from model.imaging import PHOTO_FORMATS, ImageDecodeError, load_pixels

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[AdminDep],
    responses=error_responses(400, 401, 403, 422, 503),
)


async def _enqueue(request: Request, coordinator: Coordinator, kind: JobKind, params: dict[str, Any]) -> JobAccepted:
    job = Job.new(kind, params)
    try:
        await coordinator.enqueue(job)
    except CoordinationUnavailable as exc:
        raise ServiceError(
            503, "coordination_unavailable", f"the job queue is unavailable: {exc}", {"Retry-After": "5"}
        ) from exc
    return JobAccepted(job_id=job.id, status_url=str(request.url_for("get_job", job_id=job.id)))


def _check_paths(settings: Settings, *paths: str | None) -> None:
    outside = first_outside(paths, settings.allowed_roots())
    if outside:
        raise ServiceError(403, "forbidden_path", f"{outside} is outside the catalogue roots (FASHION_CATALOGUE_ROOTS)")


@router.post("/reindex", status_code=status.HTTP_202_ACCEPTED, response_model=JobAccepted)
async def reindex(
    request: Request,
    coordinator: CoordinatorDep,
    settings: SettingsDep,
    recommender: RecommenderDep,
    body: ReindexRequest | None = None,
) -> JobAccepted:
    """Rebuild the whole bundle from a catalogue: the request's, else FASHION_CATALOGUE, else the one
    the live bundle was built from (422 when there is none). The category map (the request's,
    FASHION_CATEGORY_MAP, or the live bundle's when its catalogue is indexed again) is checked
    before the job is queued: a bad one is refused (422) with its problem. The job fails, and the
    live bundle stays, when it would index none or far fewer items than the live bundle holds
    (FASHION_REINDEX_MIN_FRACTION) unless ``force`` is set."""
    body = body or ReindexRequest()
    _check_paths(settings, body.catalogue, body.metadata, body.category_map)
    params = body.model_dump()
    try:
        labels = recommender.model.config.labels
        if body.category_map is not None:
            given = await asyncio.to_thread(read_category_map, body.category_map)
            params["category_map"] = given.check_labels(labels).record()  # the job indexes with the map checked here
        source = await asyncio.to_thread(reindex_source, params, settings)
        if source.category_map is not None:
            if not settings.labels_from:
                raise CategoryMapError("a category map names the values of FASHION_LABELS_FROM, which is empty")
            source.category_map.check_labels(labels)  # FASHION_CATEGORY_MAP's or the live bundle's
    except CategoryMapError as exc:
        raise ServiceError(422, "invalid_category_map", str(exc)) from exc
    except NoCatalogue as exc:
        raise ServiceError(422, "no_catalogue", str(exc)) from exc
    return await _enqueue(request, coordinator, JobKind.REINDEX, params)


@router.post(
    "/items",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobAccepted,
    responses=error_responses(413, 415),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": inline_schema(AddItemsRequest)},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["image"],
                        "properties": {
                            "id": {
                                "type": "string",
                                "pattern": ITEM_ID_PATTERN,
                                "minLength": 1,
                                "maxLength": 128,
                                "description": "the item's id, replacing an item of that id "
                                "(default: one derived from the photo's bytes)",
                            },
                            "image": {"type": "string", "format": "binary", "description": "the product's photo"},
                            "metadata": {"type": "object", "description": "a JSON object, e.g. the product's name"},
                        },
                    },
                    "encoding": {
                        "image": {"contentType": IMAGE_TYPES},
                        "metadata": {"contentType": "application/json"},
                    },
                },
            },
        }
    },
)
async def add(
    request: Request, coordinator: CoordinatorDep, settings: SettingsDep, recommender: RecommenderDep
) -> JobAccepted:
    """Add (or replace) items; only they are embedded. Either upload one product photo as
    multipart/form-data (fields ``id``, ``image``, ``metadata``: it is kept in the upload store and
    every later reindex includes it), or send JSON naming image files on the worker's disk."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        item = await _store_upload(request, settings, recommender.size)
        params = {"items": [{"id": item.id, "path": str(item.path), "metadata": item.metadata}]}
        return await _enqueue(request, coordinator, JobKind.ADD, params)
    if not content_type.startswith("application/json"):
        raise ServiceError(415, "unsupported_media_type", "send multipart/form-data (an upload) or application/json")
    try:
        body = AddItemsRequest.model_validate_json(await read_body(request, settings.max_upload_bytes))
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc
    _check_paths(settings, *(item.path for item in body.items))
    return await _enqueue(request, coordinator, JobKind.ADD, body.model_dump())


async def _store_upload(request: Request, settings: Settings, size: tuple[int, int]) -> CatalogueItem:
    """The multipart item, checked as /recommend checks a photo (size, type, pixels, decoded as the
    network's input ``size`` asks: a large JPEG at a reduced scale), then kept."""
    form = await read_image_form(request, settings.max_upload_bytes)
    try:
        await asyncio.to_thread(load_pixels, form.data, size, settings.image_limits(), PHOTO_FORMATS)
    except ImageDecodeError as exc:
        raise ServiceError(422, "undecodable_image", str(exc)) from exc
    item_id = form.fields.get("id")
    if item_id is None:
        item_id = "upload-" + hashlib.sha256(form.data).hexdigest()[:16]  # same photo, same id
    elif not re.fullmatch(ITEM_ID_PATTERN, item_id):  # an empty id too: the schema says one character at least
        raise ServiceError(
            422,
            "invalid_item",
            f"id {item_id[:40]!r}: an item id is 1-128 letters, digits, '_', '.' or '-', starting with a letter "
            "or digit (leave the field out for one made from the photo)",
        )
    try:
        metadata = json.loads(form.fields.get("metadata") or "{}")
    except json.JSONDecodeError as exc:
        raise ServiceError(422, "invalid_metadata", f"metadata is not JSON: {exc.msg}") from exc
    except RecursionError as exc:
        raise ServiceError(422, "invalid_metadata", "metadata is nested too deeply") from exc
    if not isinstance(metadata, dict):
        raise ServiceError(422, "invalid_metadata", "metadata must be a JSON object")
    try:
        return await asyncio.to_thread(
            UploadStore(settings.uploads_dir).save, item_id, form.data, form.content_type, metadata
        )
    except ValueError as exc:
        raise ServiceError(422, "invalid_item", str(exc)) from exc


@router.post("/items/delete", status_code=status.HTTP_202_ACCEPTED, response_model=JobAccepted)
async def delete(request: Request, coordinator: CoordinatorDep, body: DeleteItemsRequest) -> JobAccepted:
    """Remove items by id."""
    return await _enqueue(request, coordinator, JobKind.DELETE, body.model_dump())


@router.get("/jobs/{job_id}", response_model=Job, name="get_job", responses=error_responses(404))
async def get_job(job_id: str, coordinator: CoordinatorDep, settings: SettingsDep) -> Job:
    """The job's state and progress. A running job whose worker stopped renewing its lease (killed,
    lost) is re-queued here, or failed after FASHION_JOB_MAX_ATTEMPTS runs, so no job stays
    "running" for ever."""
    try:
        job = await coordinator.settle_job(job_id, settings.job_max_attempts)
    except CoordinationUnavailable as exc:
        raise ServiceError(503, "coordination_unavailable", str(exc), {"Retry-After": "5"}) from exc
    if job is None:
        raise ServiceError(404, "not_found", f"no job {job_id}")
    return job
