"""GET /items/{id}/image: a catalogue item's photo, for the page's cards (and any client's)."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from app.deps import RecommenderDep
from app.errors import ServiceError, error_responses
from app.multipart import sniff
from model.imaging import PHOTO_TYPES

router = APIRouter(tags=["items"])

CACHE_CONTROL = "public, max-age=3600"  # an id's photo changes only when the item is replaced: revalidate hourly


@router.get(
    "/items/{item_id:path}/image",  # :path: a shop's ids may hold a slash (AB/123), sent encoded or not
    response_class=FileResponse,
    responses={
        200: {"content": {t.media_type: {} for t in PHOTO_TYPES}},
        **error_responses(404, 503),
    },
)
async def item_image(item_id: str, request: Request, recommender: RecommenderDep) -> Response:
    """The photo of an item of the live bundle. Only the bundle's own record says where the file is;
    nothing the client sends is used as a path."""
    bundle = recommender.bundles.current
    if bundle is None:
        raise ServiceError(503, "not_ready", "no bundle is loaded yet", {"Retry-After": "5"})
    key = bundle.keys_by_id.get(item_id)
    record = bundle.items.get(key) if key is not None else None
    if record is None:
        raise ServiceError(404, "not_found", f"no item {item_id!r} in bundle {bundle.version}")
    path = Path(record.image)
    try:
        with open(path, "rb") as handle:
            media_type, stat = sniff(handle.read(256)), os.fstat(handle.fileno())  # an ISO file lists its brands
    except OSError:
        media_type = None
    if not record.image or media_type is None:
        raise ServiceError(404, "not_found", f"the photo of item {item_id!r} is not available")
    etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
    headers = {"Cache-Control": CACHE_CONTROL, "ETag": etag}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return FileResponse(path, media_type=media_type, headers=headers)
