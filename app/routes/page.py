"""GET /: a page to try the service: choose or drop a photo, see its parts and their products."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

router = APIRouter(tags=["page"])

PAGE = Path(__file__).resolve().parent.parent / "static" / "index.html"


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    """One static file, no build step: it calls POST /recommend and GET /items/{id}/image."""
    return FileResponse(PAGE, media_type="text/html", headers={"Cache-Control": "no-cache"})
