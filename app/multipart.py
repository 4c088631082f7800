"""Photos sent as multipart/form-data: read with a size limit, typed by their bytes, never by what
the client claims. Used by ``POST /recommend`` and ``POST /admin/items``."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from app.errors import ServiceError
from model.imaging import PHOTO_TYPE_NAMES, PHOTO_TYPES, iso_media_type

MULTIPART_SLACK = 64 * 1024  # room for the multipart framing and text fields around the image
# Magic numbers of the accepted types; the client's file name and declared type are not trusted.
SIGNATURES = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG\r\n\x1a\n": "image/png"}
ACCEPTED = tuple(t.media_type for t in PHOTO_TYPES)
MAX_PARTS = 21  # the image and up to 20 text fields


@dataclass(frozen=True)
class ImageForm:
    data: bytes
    content_type: str  # sniffed from the bytes
    fields: dict[str, str]  # the form's text fields


def sniff(data: bytes) -> str | None:
    """The photo's media type by its first bytes, or None for anything else."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp":  # HEIC, AVIF, or a video in the same box
        return iso_media_type(data[:256])
    return next((kind for magic, kind in SIGNATURES.items() if data.startswith(magic)), None)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` (never read whole first)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ServiceError(413, "too_large", f"upload over the limit of {limit} bytes")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ServiceError(413, "too_large", f"upload over the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:  # nobody to answer; counted as nginx counts it, not logged as our error
        raise ServiceError(499, "client_closed", "the client went away before its upload arrived") from None
    return b"".join(chunks)


async def read_image_form(request: Request, max_bytes: int, field: str = "image") -> ImageForm:
    """The image in the form's ``field`` and the form's text fields; 413, 415 or 422 otherwise."""
    body = await read_body(request, max_bytes + MULTIPART_SLACK)
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ServiceError(415, "unsupported_media_type", f"send the photo as multipart/form-data, field {field!r}")
    parts = _parse_parts(content_type, body)
    files = [p for p in parts if p.filename is not None]
    upload = next((p for p in files if p.name == field), None)
    if upload is None:
        raise ServiceError(422, "missing_image", f"the multipart field {field!r} (a file) is required")
    if len(files) > 1:
        raise ServiceError(422, "invalid_multipart", "send one file per request")
    data = bytes(upload.data)
    if len(data) > max_bytes:
        raise ServiceError(413, "too_large", f"image over the limit of {max_bytes} bytes")
    if not data:
        raise ServiceError(422, "empty_image", "the image is empty")
    kind = sniff(data)
    if kind is None:
        if upload.content_type in ACCEPTED:
            raise ServiceError(422, "undecodable_image", f"the bytes are not a {upload.content_type} image")
        raise ServiceError(415, "unsupported_media_type", f"only {PHOTO_TYPE_NAMES} photos are accepted")
    fields = {p.name: bytes(p.data).decode("utf-8", "replace") for p in parts if p.filename is None}
    return ImageForm(data, kind, fields)


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None  # None: a text field (the file name itself is never used)
    content_type: str = ""
    data: bytearray = field(default_factory=bytearray)
    header_name: bytes = b""
    header_value: bytes = b""


def _parse_parts(content_type: str, body: bytes) -> list[_Part]:
    """The parts of a multipart body already read whole under the size limit. python-multipart's
    own parser, with its per-header limit raised to the body's size: the body is bounded already,
    and a long file name (which is never used) must not make a photo unreadable."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise ServiceError(422, "invalid_multipart", "the multipart content type has no boundary")
    parts: list[_Part] = []

    def on_header_end() -> None:
        part = parts[-1]
        name, value = part.header_name.lower(), part.header_value
        if name == b"content-disposition":
            _, disposition = parse_options_header(value)
            part.name = disposition.get(b"name", b"").decode("utf-8", "replace")
            filename = disposition.get(b"filename")
            part.filename = None if filename is None else filename.decode("utf-8", "replace")
        elif name == b"content-type":
            part.content_type = value.decode("latin-1").split(";")[0].strip().lower()
        part.header_name = part.header_value = b""

    def on_part_begin() -> None:
        if len(parts) >= MAX_PARTS:
            raise ServiceError(422, "invalid_multipart", f"more than {MAX_PARTS} form fields")
        parts.append(_Part())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        parts[-1].header_name += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        parts[-1].header_value += data[start:end]

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].data += data[start:end]

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_part_data": on_part_data,
    }
    try:
        parser = MultipartParser(boundary, callbacks, max_header_size=max(len(body), 1))  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except FormParserError as exc:  # bad framing, or a boundary the parser refuses (over 256 bytes)
        raise ServiceError(422, "invalid_multipart", f"cannot parse the multipart body: {exc}") from exc
    return [p for p in parts if p.name]
