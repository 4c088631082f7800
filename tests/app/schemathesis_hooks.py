"""Schemathesis hooks (SCHEMATHESIS_HOOKS=tests.app.schemathesis_hooks): real photos for the
documented image media types, so "a schema-valid request is accepted" is checked with photos
the service can decode, not with random bytes no schema can tell apart from a photo."""

from __future__ import annotations

import schemathesis
from hypothesis import strategies as st

from model.imaging import PHOTO_TYPES
from tests.app.conftest import photo_bytes

for photo_type in PHOTO_TYPES:
    photos = [
        photo_bytes(photo_type.pillow_format, size, colour)
        for colour in ("red", "navy")
        for size in ((96, 144), (200, 120))
    ]
    schemathesis.openapi.media_type(photo_type.media_type, st.sampled_from(photos))
