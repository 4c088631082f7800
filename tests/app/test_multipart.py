"""Uploads are typed by their bytes: each accepted photo type by its signature, HEIF and AVIF by the
brands of their ISO media box, and anything else (a video in the same box) refused."""

from __future__ import annotations

import pytest

from app.multipart import sniff
from model.imaging import PHOTO_TYPES
from tests.app.conftest import photo_bytes
from tests.app.test_uploads import MP4_HEADER


@pytest.mark.parametrize("photo_type", PHOTO_TYPES, ids=lambda t: t.media_type)
def test_each_photo_type_is_known_by_its_bytes(photo_type) -> None:  # type: ignore[no-untyped-def]
    assert sniff(photo_bytes(photo_type.pillow_format)) == photo_type.media_type


def test_iso_media_files_by_their_brands() -> None:
    def box(major: bytes, *compatible: bytes) -> bytes:
        body = major + b"\0\0\0\0" + b"".join(compatible)
        return (8 + len(body)).to_bytes(4, "big") + b"ftyp" + body + b"\0" * 32

    assert sniff(box(b"heic", b"mif1", b"heic")) == "image/heic"
    assert sniff(box(b"mif1", b"mif1", b"avif")) == "image/avif"  # the major brand generic, AVIF among the rest
    assert sniff(box(b"qt  ", b"qt  ")) is None  # a QuickTime video
    assert sniff(MP4_HEADER) is None
    assert sniff(b"\0\0\0\x18ftyp") is None  # cut short
