"""Loading photos for the network: a large JPEG decoded at a reduced DCT scale lands exactly where
the full decode would, with nearly the same pixels; smaller photos are decoded exactly as before."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter
from PIL.JpegImagePlugin import JpegImageFile

from model.imaging import (
    MAX_ZOOM,
    PAD_VALUE,
    PHOTO_FORMATS,
    WIDE_ALIGNS,
    ImageDecodeError,
    ImageLimits,
    content_box,
    decode_image,
    letterbox,
    load_pixel_views,
    load_pixels,
)
from tests.helpers import encode

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


# --- Cutting a photo to its content


def _textured(width: int, height: int, seed: int = 0) -> Image.Image:
    """A sharp, busy picture (a street photo's detail reaches its edges)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _zoomed_out(background: str = "plain") -> tuple[Image.Image, tuple[int, int, int, int]]:
    """A 400 x 600 photo with a 100 x 200 textured 'person' at (150, 250); the person's box."""
    canvas = Image.new("RGB", (400, 600), (200, 200, 200))
    if background == "blur":
        canvas = _textured(400, 600, 1).filter(ImageFilter.GaussianBlur(16))
    box = (150, 250, 250, 450)
    canvas.paste(_textured(100, 200), box[:2])
    return canvas, box


@pytest.mark.parametrize("background", ["plain", "blur"])
def test_content_box_finds_a_small_person_on_a_plain_or_blurred_margin(background: str) -> None:
    photo, (x0, y0, x1, y1) = _zoomed_out(background)
    box = content_box(photo, 0.5)
    assert box is not None
    # it holds the person, with a margin of a few percent, and little else
    assert box[0] <= x0 and box[1] <= y0 and box[2] >= x1 and box[3] >= y1
    assert box[0] >= x0 - 25 and box[1] >= y0 - 25 and box[2] <= x1 + 25 and box[3] <= y1 + 25


def test_content_box_leaves_sharp_to_the_edge_and_blank_photos_whole() -> None:
    assert content_box(_textured(400, 600), 0.9) is None  # a street photo: detail everywhere
    assert content_box(Image.new("RGB", (400, 600), "white"), 0.9) is None  # nothing to zoom on
    photo, _ = _zoomed_out()
    assert content_box(photo, 0.05) is None  # the person's box (~10% with margin) is over the share allowed


def test_a_cut_photo_is_drawn_larger_and_boxes_map_back_to_the_whole_photo() -> None:
    photo, (x0, y0, x1, y1) = _zoomed_out()
    buffer = io.BytesIO()
    photo.save(buffer, "PNG")
    whole_pixels, whole = load_pixels(buffer.getvalue(), SIZE)
    cut_pixels, cut = load_pixels(buffer.getvalue(), SIZE, trim_max_area=0.5)
    assert (cut.width, cut.height) == (whole.width, whole.height) == (400, 600)  # the photo's own size
    grey = np.array([200, 200, 200])

    def person_rows(pixels: np.ndarray) -> int:
        return int((np.abs(pixels.astype(int) - grey).max(-1) > 30).any(1).sum())

    assert person_rows(cut_pixels) > 1.5 * person_rows(whole_pixels)  # the person fills more of the input
    # where the person is drawn in the input, mapped through the cut placement, is where it is in the photo
    person = (np.abs(cut_pixels.astype(int) - grey).max(-1) > 30) & (cut_pixels.min(-1) < 225)
    rows, cols = np.nonzero(person)
    h, w = SIZE
    drawn = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)  # input pixels
    to_frame = (cut.frame_width / w, cut.frame_height / h)
    in_frame = (drawn[0] * to_frame[0], drawn[1] * to_frame[1], drawn[2] * to_frame[0], drawn[3] * to_frame[1])
    one_input_pixel = max(to_frame)
    assert cut.box_to_photo(in_frame) == pytest.approx((x0, y0, x1, y1), abs=2 * one_input_pixel)
    # a box over the whole frame (its padding too) comes back as the part of the photo drawn, no more
    assert cut.shown is not None and whole.shown is None
    assert cut.box_to_photo((0.0, 0.0, cut.frame_width, cut.frame_height)) == pytest.approx(cut.shown)
    assert x0 - 25 <= cut.shown[0] and cut.shown[2] <= x1 + 25 and y0 - 25 <= cut.shown[1] and cut.shown[3] <= y1 + 25


def test_a_speck_on_a_blank_photo_is_not_blown_up() -> None:
    photo = Image.new("RGB", (400, 600), "white")
    photo.paste(_textured(40, 40), (300, 50))  # a tenth of the photo's width: cut to, uncapped, 9x
    box = content_box(photo, 0.5)
    assert box is not None
    # drawn at most MAX_ZOOM times the whole photo's scale, and still inside the photo, over the speck
    assert min(400 / (box[2] - box[0]), 600 / (box[3] - box[1])) == pytest.approx(MAX_ZOOM, rel=0.02)
    assert 0 <= box[0] <= 300 and 0 <= box[1] <= 50 and 340 <= box[2] <= 400 and 90 <= box[3] <= 600


def test_a_photo_not_cut_is_letterboxed_exactly_as_without_the_option() -> None:
    buffer = io.BytesIO()
    _textured(550, 825).save(buffer, "JPEG", quality=90)  # a street photo: detail to its edges
    data = buffer.getvalue()
    plain_pixels, plain = load_pixels(data, SIZE)
    pixels, placement = load_pixels(data, SIZE, trim_max_area=0.5)
    assert placement == plain
    assert np.array_equal(pixels, plain_pixels)


def test_a_wide_photo_is_seen_at_the_top_middle_and_bottom_of_the_frame() -> None:
    buffer = io.BytesIO()
    _textured(550, 410).save(buffer, "PNG")  # a street photo cut at the waist: half the frame's height, odd padding
    data = buffer.getvalue()
    views = load_pixel_views(data, SIZE)
    assert len(views) == len(WIDE_ALIGNS) and (WIDE_ALIGNS[0], WIDE_ALIGNS[-1]) == (0.0, 1.0)
    (top_pixels, _), (bottom_pixels, _) = views[0], views[-1]
    drawn = round(410 * 256 / 550)  # the photo's rows in the input: 191 of 384
    padding = np.full(3, PAD_VALUE)
    assert (top_pixels[drawn + 1 :] == padding).all() and not (top_pixels[: drawn - 1] == padding).all()
    assert (bottom_pixels[: SIZE[0] - drawn - 1] == padding).all()
    # the same pixels, shifted: only where the photo is drawn differs
    assert np.array_equal(top_pixels[:drawn], bottom_pixels[SIZE[0] - drawn :])
    # each placement maps the drawn photo back to the whole photo
    for pixels, placement in views:
        rows = np.nonzero((pixels != padding).any(-1).any(-1))[0]
        to_photo = placement.frame_height / SIZE[0]
        box = placement.box_to_photo((0.0, rows.min() * to_photo, 256 * to_photo, (rows.max() + 1) * to_photo))
        assert box == pytest.approx((0.0, 0.0, 550.0, 410.0), abs=2 * to_photo)
    # the middle view is the centred letterbox of before: its padding split evenly, the odd row below
    middle_pixels, middle = views[WIDE_ALIGNS.index(0.5)]
    assert np.array_equal(middle_pixels[(SIZE[0] - drawn) // 2 :][:drawn], top_pixels[:drawn])
    assert (middle_pixels[: (SIZE[0] - drawn) // 2] == padding).all()
    # seen once: where wide photos are not split, and for a photo that fills the frame, as load_pixels draws it
    ((once, placement),) = load_pixel_views(data, SIZE, wide_fill=0.0)
    assert placement == middle == load_pixels(data, SIZE)[1] and np.array_equal(once, middle_pixels)
    square = io.BytesIO()
    _textured(300, 300).save(square, "PNG")  # the catalogue's square photos fill 0.67 of the frame: once
    assert len(load_pixel_views(square.getvalue(), SIZE)) == 1
    buffer = io.BytesIO()
    _textured(550, 825).save(buffer, "PNG")
    ((tall, tall_placement),) = load_pixel_views(buffer.getvalue(), SIZE)
    pixels, plain = load_pixels(buffer.getvalue(), SIZE)
    assert tall_placement == plain and np.array_equal(tall, pixels)


def test_the_pixel_limit_counts_the_pixels_decoded() -> None:
    """A JPEG drawn small is decoded at a reduced DCT scale, and the limit holds for what is decoded:
    a photo over the limit in full loads (as a 48-megapixel phone photo would under the default), a
    PNG of the same size, decoded in full, is refused, and so is the JPEG decoded in full."""
    limits = ImageLimits(max_pixels=3_000_000)
    jpeg = _jpeg(2400, 1800)  # 4.3 Mpx: decoded at a quarter of its side for the network, 0.27 Mpx
    pixels, placement = load_pixels(jpeg, SIZE, limits)
    assert pixels.shape == (*SIZE, 3) and (placement.width, placement.height) == (2400, 1800)
    with pytest.raises(ImageDecodeError, match="2400x1800 is over the limit of 3000000 pixels"):
        decode_image(jpeg, limits)
    png = io.BytesIO()
    Image.new("RGB", (2400, 1800)).save(png, "PNG")
    with pytest.raises(ImageDecodeError, match="over the limit"):
        load_pixels(png.getvalue(), SIZE, limits)
    # its full size has a ceiling too (twice the limit): libjpeg still reads every coefficient
    with pytest.raises(ImageDecodeError, match="3000x2100 is over the limit"):
        load_pixels(_jpeg(3000, 2100), SIZE, limits)


def test_a_png_over_the_limit_is_refused_before_any_pixel_is_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL.PngImagePlugin import PngImageFile

    def refuse(self: PngImageFile):  # type: ignore[no-untyped-def]
        raise AssertionError("decoded before the limit was checked")

    png = io.BytesIO()
    Image.new("RGB", (2400, 1800)).save(png, "PNG")
    monkeypatch.setattr(PngImageFile, "load", refuse)
    limits = ImageLimits(max_pixels=3_000_000)
    with pytest.raises(ImageDecodeError, match="over the limit"):
        decode_image(png.getvalue(), limits)
    with pytest.raises(ImageDecodeError, match="over the limit"):
        load_pixels(png.getvalue(), SIZE, limits)


def _cut_out() -> np.ndarray:
    """A red product on a fully transparent background whose hidden pixels are black, as cut-out
    product PNGs are usually saved."""
    pixels = np.zeros((100, 80, 4), np.uint8)
    pixels[30:70, 20:60] = (200, 30, 30, 255)
    return pixels


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_a_cut_out_photo_is_laid_on_white_not_black(mode: str) -> None:
    image = Image.fromarray(_cut_out())
    if mode == "LA":
        image = image.convert("LA")
    elif mode == "P":  # a palette with one transparent colour (GIF-like PNG)
        image = image.convert("RGB").quantize(colors=4)
        image.info["transparency"] = image.getpixel((0, 0))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    decoded = np.asarray(decode_image(buffer.getvalue()))
    assert tuple(decoded[2, 2]) == (PAD_VALUE,) * 3  # the background: white, as the catalogue's
    product = decoded[50, 40]
    assert product[0] > 150 if mode != "LA" else 40 < product[0] < 120  # the product's own colour (grey in LA)
    pixels, _ = load_pixels(buffer.getvalue(), SIZE)
    assert tuple(pixels[5, 5]) == (PAD_VALUE,) * 3


def test_a_16_bit_grey_photo_keeps_its_tones() -> None:
    ramp = np.linspace(0, 65535, 100 * 80).reshape(100, 80).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, "PNG")
    decoded = np.asarray(decode_image(buffer.getvalue()))
    assert decoded[0, 0, 0] == 0 and decoded[-1, -1, 0] == 255
    assert abs(int(decoded[50, 40, 0]) - 128) <= 2  # Pillow's own conversion would clip it to white


def test_a_turned_iphone_photo_is_upright_as_the_same_jpeg_is() -> None:
    """pi-heif applies a HEIC's rotation itself and resets its EXIF orientation, Pillow's AVIF
    reader leaves it to the EXIF: either way the photo is turned once, as the JPEG is."""
    image = Image.new("RGB", (180, 120), "blue")
    image.paste(Image.new("RGB", (20, 20), "red"), (0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, upright portrait
    decoded = {}
    for fmt in ("HEIF", "AVIF", "JPEG"):
        data = encode(image, fmt, exif=exif.tobytes())
        decoded[fmt] = decode_image(data)
        _, placement = load_pixels(data, SIZE)
        assert (placement.width, placement.height) == decoded[fmt].size == (120, 180)
    for fmt, photo in decoded.items():
        assert photo.getpixel((110, 5))[0] > 200 and photo.getpixel((5, 5))[2] > 200, fmt  # red at the top right


def _avif() -> bytes:
    return encode(Image.new("RGB", (64, 96), "navy"), "AVIF")


def test_a_damaged_avif_or_heic_is_a_clear_error_not_a_crash() -> None:
    """libavif and libheif report a bad file as RuntimeError: it must come out as ImageDecodeError
    (a 422 for the service, a skipped item for the indexer), never an exception nobody catches."""
    for data in (_avif(), encode(Image.new("RGB", (64, 96), "navy"), "HEIF")):
        damaged = bytearray(data)
        picture = data.index(b"mdat") + 4
        damaged[picture:] = bytes(255 - b for b in damaged[picture:])  # the coded picture garbled, its header whole
        for spoiled in (bytes(damaged), data[:40]):  # garbled (fails decoding); cut short (fails opening)
            with pytest.raises(ImageDecodeError):
                load_pixels(spoiled, SIZE, formats=PHOTO_FORMATS)


def test_an_avif_whose_first_brand_is_the_generic_mif1_is_read_as_avif() -> None:
    data = bytearray(_avif())
    assert data[8:12] == b"avif"
    data[8:12] = b"mif1"  # the major brand generic; "avif" stays among the compatible ones
    pixels, placement = load_pixels(bytes(data), SIZE, formats=PHOTO_FORMATS)  # as the service asks
    assert (placement.width, placement.height) == (64, 96) and pixels[SIZE[0] // 2, SIZE[1] // 2][2] > 80
