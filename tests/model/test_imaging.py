"""Loading photos for the network: a large JPEG decoded at a reduced DCT scale lands exactly where
the full decode would, with nearly the same pixels; smaller photos are decoded exactly as before."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from PIL.JpegImagePlugin import JpegImageFile

from model.imaging import ImageDecodeError, decode_image, letterbox, load_pixels

SIZE = (384, 256)


def _jpeg(width: int, height: int, orientation: int | None = None) -> bytes:
    # smooth content, so scaling in the DCT and scaling the pixels agree closely
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)], -1).astype(np.uint8)
    buffer = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95, exif=exif)
    return buffer.getvalue()


@pytest.fixture
def decoded_sizes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The size each JPEG decode is set to by PIL's draft, as load_pixels asks for it."""
    sizes: list[tuple[int, int]] = []
    draft = JpegImageFile.draft

    def spy(self: JpegImageFile, mode: str | None, size: tuple[int, int] | None):  # type: ignore[no-untyped-def]
        result = draft(self, mode, size)
        sizes.append(self.size)
        return result

    monkeypatch.setattr(JpegImageFile, "draft", spy)
    return sizes


@pytest.mark.parametrize("width,height,decoded", [(2000, 3000, (1000, 1500)), (4032, 3024, (1008, 756))])
def test_large_jpeg_is_decoded_reduced_and_lands_where_the_full_decode_would(
    width: int, height: int, decoded: tuple[int, int], decoded_sizes: list[tuple[int, int]]
) -> None:
    data = _jpeg(width, height)
    fast, placement = load_pixels(data, SIZE)
    assert decoded_sizes == [decoded]  # the smallest DCT scale that keeps over twice the size it is drawn at
    full, full_placement = letterbox(decode_image(data), SIZE)
    assert placement == full_placement  # boxes map back to the photo's own pixels, as before
    assert fast.shape == full.shape == (*SIZE, 3)
    assert np.abs(fast.astype(int) - full).mean() < 2.0


def test_photos_under_four_times_the_input_are_decoded_exactly_as_before() -> None:
    data = _jpeg(550, 827)  # a CCP photo's size: what the model was trained and measured on
    fast, placement = load_pixels(data, SIZE)
    full, full_placement = letterbox(decode_image(data), SIZE)
    assert placement == full_placement
    assert np.array_equal(fast, full)


def test_quarter_turned_jpeg_keeps_its_upright_geometry() -> None:
    data = _jpeg(1800, 1200, orientation=6)  # stored landscape, upright portrait
    pixels, placement = load_pixels(data, SIZE)
    assert (placement.width, placement.height) == (1200, 1800)
    full, full_placement = letterbox(decode_image(data), SIZE)
    assert placement == full_placement
    assert np.abs(pixels.astype(int) - full).mean() < 2.0


def test_small_and_non_jpeg_photos_are_decoded_in_full() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (224, 224), "red").save(buffer, "PNG")
    pixels, placement = load_pixels(buffer.getvalue(), SIZE)
    assert (placement.width, placement.height) == (224, 224)
    assert tuple(pixels[SIZE[0] // 2, SIZE[1] // 2]) == (255, 0, 0)


def test_truncated_jpeg_still_fails_on_the_reduced_path() -> None:
    data = _jpeg(2000, 3000)
    with pytest.raises(ImageDecodeError):
        load_pixels(data[: len(data) // 2], SIZE)


@pytest.mark.parametrize("mode,options", [("L", {}), ("CMYK", {}), ("RGB", {"progressive": True})])
def test_grey_cmyk_and_progressive_jpegs_take_the_reduced_path(mode: str, options: dict[str, object]) -> None:
    rgb = Image.open(io.BytesIO(_jpeg(2000, 3000)))
    buffer = io.BytesIO()
    rgb.convert(mode).save(buffer, "JPEG", quality=95, **options)
    fast, placement = load_pixels(buffer.getvalue(), SIZE)
    full, full_placement = letterbox(decode_image(buffer.getvalue()), SIZE)
    assert placement == full_placement and fast.shape == (*SIZE, 3)
    assert np.abs(fast.astype(int) - full).mean() < 3.0


def test_phone_mpo_files_are_decoded_reduced_too(decoded_sizes: list[tuple[int, int]]) -> None:
    # many phones write MPO (a JPEG with extra frames): Pillow opens it as its own format
    first = Image.open(io.BytesIO(_jpeg(4032, 3024)))
    buffer = io.BytesIO()
    first.save(buffer, "MPO", save_all=True, append_images=[first.copy()])
    assert Image.open(io.BytesIO(buffer.getvalue())).format == "MPO"
    load_pixels(buffer.getvalue(), SIZE)
    assert decoded_sizes == [(1008, 756)]
