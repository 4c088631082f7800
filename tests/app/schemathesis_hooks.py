"""Schemathesis hooks (SCHEMATHESIS_HOOKS=tests.app.schemathesis_hooks): real photos for the
documented image media types, so "a schema-valid request is accepted" is checked with photos
the service can decode, not with random bytes no schema can tell apart from a photo."""

from __future__ import annotations

import io

import schemathesis
from hypothesis import strategies as st
from PIL import Image


def _photo(fmt: str, colour: str, size: tuple[int, int]) -> bytes:
    image = Image.new("RGB", size, "white")
    image.paste(Image.new("RGB", (size[0] // 2, size[1] // 3), colour), (size[0] // 4, size[1] // 3))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


for media_type, fmt in {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}.items():
    photos = [_photo(fmt, colour, size) for colour in ("red", "navy") for size in ((96, 144), (200, 120))]
    schemathesis.openapi.media_type(media_type, st.sampled_from(photos))
