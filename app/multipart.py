"""Photos sent as multipart/form-data: read with a size limit, typed by their bytes, never by what
the client claims. Used by ``POST /recommend`` and ``POST /admin/items``."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass

from fastapi import Request
from starlette.datastructures import FormData, Headers, UploadFile
from starlette.formparsers import MultiPartParser

from app.errors import ServiceError

MULTIPART_SLACK = 64 * 1024  # room for the multipart framing and text fields around the image
# Magic numbers of the accepted types; the client's file name and declared type are not trusted.
SIGNATURES = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG\r\n\x1a\n": "image/png"}
ACCEPTED = ("image/jpeg", "image/png", "image/webp")


@dataclass(frozen=True)
class ImageForm:
    data: bytes
    content_type: str  # sniffed from the bytes
    fields: dict[str, str]  # the form's text fields


def sniff(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for magic, kind in SIGNATURES.items() if data.startswith(magic)), None)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` (never read whole first)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ServiceError(413, "too_large", f"upload over the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ServiceError(413, "too_large", f"upload over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_image_form(request: Request, max_bytes: int, field: str = "image") -> ImageForm:
    """The image in the form's ``field`` and the form's text fields; 413, 415 or 422 otherwise."""
    body = await read_body(request, max_bytes + MULTIPART_SLACK)
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ServiceError(415, "unsupported_media_type", f"send the photo as multipart/form-data, field {field!r}")
    form = await _parse_form(request.headers, body)
    try:
        upload = form.get(field)
        if not isinstance(upload, UploadFile):
            raise ServiceError(422, "missing_image", f"the multipart field {field!r} (a file) is required")
        data = await upload.read()
        claimed = (upload.content_type or "").lower()
        fields = {name: value for name, value in form.items() if isinstance(value, str)}
    finally:
        await form.close()
    if len(data) > max_bytes:
        raise ServiceError(413, "too_large", f"image over the limit of {max_bytes} bytes")
    if not data:
        raise ServiceError(422, "empty_image", "the image is empty")
    kind = sniff(data)
    if kind is None:
        if claimed in ACCEPTED:
            raise ServiceError(422, "undecodable_image", f"the bytes are not a {claimed} image")
        raise ServiceError(415, "unsupported_media_type", "only JPEG, PNG and WebP photos are accepted")
    return ImageForm(data, kind, fields)


async def _parse_form(headers: Headers, body: bytes) -> FormData:
    """The form in ``body``, already read under the size limit (so the request's stream is spent)."""

    async def chunks() -> AsyncGenerator[bytes, None]:
        yield body

    try:
        return await MultiPartParser(headers, chunks(), max_files=1, max_fields=20).parse()
    except Exception as exc:  # malformed multipart framing
        raise ServiceError(422, "invalid_multipart", f"cannot parse the multipart body: {exc}") from exc
