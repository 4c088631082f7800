"""Decoding untrusted images and fitting them to the network's input.

Decoding checks the pixel count before the pixels are decoded (decompression bombs), forces a full
decode (truncated files fail here, not later), honours EXIF orientation and converts any mode to RGB.
Loading for the network decodes a large JPEG at a reduced DCT scale (load_pixels). Fitting
letterboxes: the photo is scaled to fit the input and padded, so a square product photo is not
stretched into a portrait; boxes are mapped back through the same placement. A photo whose person
stands small on a plain or blurred margin (zoomed out, a studio shot with white space) may first be
cut to its content (``content_box``), so the network sees the person at the scale it was trained on.
A shopper's photo much wider than the portrait frame is drawn at several heights in it
(``load_pixel_views``), as the network expects items where a full-length photo has them.
"""

from __future__ import annotations

import io
import os
import stat
from dataclasses import dataclass

import numpy as np
import torch
from pi_heif import register_heif_opener
from PIL import AvifImagePlugin, Image, ImageOps
from PIL.JpegImagePlugin import JpegImageFile

from model.errors import ModelError

# HEIC (an iPhone's photos) through pi-heif, the decoding build of pillow-heif (LGPL libheif and
# libde265; pillow-heif's own wheels bundle GPL x265 for encoding). AVIF is Pillow's own. One thread
# per decode: photos are decoded in parallel already (the service's decode pool, the indexer's
# workers), and each codec would otherwise start a thread per core for every photo.
register_heif_opener(decode_threads=1)
AvifImagePlugin.DEFAULT_MAX_THREADS = 1


@dataclass(frozen=True)
class PhotoType:
    media_type: str
    pillow_format: str  # Image.open(formats=...)
    suffixes: tuple[str, ...]  # a catalogue's files of this type, the first for a stored upload


# The photo types read here, by the service's uploads and the indexer's catalogue files alike (the
# one list: the routes' OpenAPI types, the upload check by signature, the file suffixes).
PHOTO_TYPES = (
    PhotoType("image/jpeg", "JPEG", (".jpg", ".jpeg")),
    PhotoType("image/png", "PNG", (".png",)),
    PhotoType("image/webp", "WEBP", (".webp",)),
    PhotoType("image/heic", "HEIF", (".heic", ".heif")),
    PhotoType("image/avif", "AVIF", (".avif",)),
)
PHOTO_TYPE_NAMES = "JPEG, PNG, WebP, HEIC or AVIF"
PHOTO_FORMATS = tuple(t.pillow_format for t in PHOTO_TYPES)
# HEIF and AVIF files open with an ISO media "ftyp" box naming their brands: the major one, then
# the compatible ones (an AVIF may say mif1 first and avif after; a video says isom, mp42, qt).
AVIF_BRANDS = {b"avif", b"avis"}
HEIC_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"}
# What a codec raises on a bad file besides OSError and ValueError: libavif's errors come as
# RuntimeError, libheif's as EOFError or RuntimeError, an absurd allocation as MemoryError.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, RuntimeError, MemoryError, Image.DecompressionBombError)


def iso_media_type(head: bytes) -> str | None:
    """ "image/avif" or "image/heic" for a file that begins with an ISO media box of those brands;
    None for any other (a video in the same box too)."""
    if head[4:8] != b"ftyp":
        return None
    size = int.from_bytes(head[:4], "big")
    brands = {head[8:12]} | {head[i : i + 4] for i in range(16, min(size, len(head)) - 3, 4)}
    if brands & AVIF_BRANDS:  # before HEIC's: an AVIF may name the generic mif1 too
        return "image/avif"
    return "image/heic" if brands & HEIC_BRANDS else None


DEFAULT_MAX_PIXELS = 40_000_000  # more is a decompression bomb, not a photo
# A JPEG drawn small is decoded at a reduced DCT scale, and the limit holds for the pixels decoded;
# its full size may then be this many times the limit (a 48- or 64-megapixel phone photo), no more:
# libjpeg still reads every coefficient, and holds them all for a progressive file.
JPEG_FULL_SIZE_FACTOR = 2
DEFAULT_MAX_SIDE = 20_000  # no camera or product shot has a longer side
DEFAULT_MAX_ASPECT = 10.0  # long side over short side: panoramas stay well under it
PAD_VALUE = 255  # catalogue photos sit on white
# Cutting a photo to its content (content_box): the detail map is read off a copy this many pixels
# on its long side; a pixel is detail where it differs from a neighbour by more than DETAIL_LEVEL
# grey levels (a plain or out-of-focus margin stays under it, JPEG noise included); the content box
# leaves out CONTENT_TAIL of the detail on each side (a stray speck) and is widened by CONTENT_MARGIN
# of its size on each side. A photo with less detail than MIN_DETAIL_SHARE of its pixels is not cut.
DETAIL_SIDE = 96
DETAIL_LEVEL = 10.0
CONTENT_TAIL = 0.01
CONTENT_MARGIN = 0.05
MIN_DETAIL_SHARE = 0.005
# A cut draws its box at most this many times larger than the whole photo would be drawn (a box
# smaller than that is widened about its centre): a speck on a blank photo is not blown up, and a
# JPEG decoded at a reduced DCT scale (twice its drawn size, load_pixels) is upscaled 1.5x at most.
MAX_ZOOM = 3.0
# The service cuts a photo to its content box where the box covers at most this share of it (0:
# never); chosen on validation (bench/any_photo.py --choose --trim). A street photo's box covers
# nearly all of it; a photo zoomed out to half its size on a plain canvas, about 0.27.
DEFAULT_TRIM_MAX_AREA = 0.35
# A photo much wider than the network's portrait frame (a half-body shot, a landscape phone photo)
# fills only a band of it. The network learnt where items sit from full-length photos (tops high,
# shoes low), so such a photo is seen three times in one batch, drawn at the frame's top, middle and
# bottom, and each label's probability is its highest of the three (model.network.photo_parts). A
# photo is "wide" where it fills at most this share of the frame's height (0: never; CCP's photos
# fill all of it, the catalogue's square photos 0.67, a photo cut at the waist 0.5). Both chosen on
# validation (bench/any_photo.py --choose --wide FILL:ALIGNS): top and bottom alone, 0.79 / 0.79 of
# the photo's group recall for its upper / lower half; with the middle, 0.86 / 0.80; 0.7 (the square
# photos too; tried with top and bottom only) lost product photos their own group (0.892 -> 0.886).
DEFAULT_WIDE_FILL = 0.6
WIDE_ALIGNS = (0.0, 0.5, 1.0)  # where a wide photo is drawn in the frame's height (0: top, 1: bottom)


@dataclass(frozen=True)
class ImageLimits:
    """What a decodable photo may be; beyond any limit decode_image refuses it, saying which."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_side: int = DEFAULT_MAX_SIDE
    max_aspect: float = DEFAULT_MAX_ASPECT


DEFAULT_LIMITS = ImageLimits()


class ImageDecodeError(ModelError):
    """The bytes are not a usable image; the message says why."""


def decode_image(
    source: bytes | str | os.PathLike[str],
    limits: ImageLimits = DEFAULT_LIMITS,
    formats: tuple[str, ...] | None = None,
) -> Image.Image:
    """Bytes or a path -> an upright RGB image at full size, or ImageDecodeError."""
    return _decode(source, limits, formats, None)[0]


def load_pixels(
    source: bytes | str | os.PathLike[str],
    size: tuple[int, int],
    limits: ImageLimits = DEFAULT_LIMITS,
    formats: tuple[str, ...] | None = None,
    trim_max_area: float = 0.0,
) -> tuple[np.ndarray, Placement]:
    """Bytes or a path -> ((H, W, 3) uint8 pixels letterboxed to ``size`` = (H, W), placement in the
    photo's own pixels), or ImageDecodeError.

    A JPEG at least four times the size it is drawn at in the input is decoded straight at the
    smallest of its DCT scales (1/2, 1/4, 1/8) that keeps twice that size, then resized as before: a
    phone's 12-megapixel photo is decoded at a quarter of its side, a fraction of the work of a full
    decode. Smaller photos (CCP's 550 x 827, drawn at 255 x 384; this catalogue's 224 x 224) are
    decoded in full, exactly as the model was trained.

    With ``trim_max_area`` > 0, a photo whose content box (``content_box``) covers at most that
    share of it is cut to the box first; the placement still maps to the whole photo's pixels."""
    return load_pixel_views(source, size, limits, formats, trim_max_area, wide_fill=0.0)[0]


def frame_fill(width: float, height: float, size: tuple[int, int]) -> float:
    """The share of a letterboxed frame's height (``size`` = (H, W)) a width x height photo fills:
    at most ``wide_fill`` of it, a photo is wide."""
    return min(size[1] / width, size[0] / height) * height / size[0]


def load_pixel_views(
    source: bytes | str | os.PathLike[str],
    size: tuple[int, int],
    limits: ImageLimits = DEFAULT_LIMITS,
    formats: tuple[str, ...] | None = None,
    trim_max_area: float = 0.0,
    wide_fill: float = DEFAULT_WIDE_FILL,
    wide_aligns: tuple[float, ...] = WIDE_ALIGNS,
) -> list[tuple[np.ndarray, Placement]]:
    """A shopper's photo as the network sees it (load_pixels, decoded once): one letterboxed view,
    or, where it fills at most ``wide_fill`` of the frame's height, one drawn at each of
    ``wide_aligns`` (by default the frame's top, middle and bottom)."""
    image, photo_size = _decode(source, limits, formats, size)
    crop = content_box(image, trim_max_area) if trim_max_area > 0 else None
    if crop is not None:
        scale_x, scale_y = photo_size[0] / image.width, photo_size[1] / image.height
        crop = (crop[0] * scale_x, crop[1] * scale_y, crop[2] * scale_x, crop[3] * scale_y)
    shown_w, shown_h = (crop[2] - crop[0], crop[3] - crop[1]) if crop is not None else photo_size
    aligns = wide_aligns if frame_fill(shown_w, shown_h, size) <= wide_fill else (0.5,)
    return [letterbox(image, size, photo_size, crop, align) for align in aligns]


def load_input(
    source: bytes | str | os.PathLike[str],
    size: tuple[int, int],
    limits: ImageLimits = DEFAULT_LIMITS,
    formats: tuple[str, ...] | None = None,
    trim_max_area: float = 0.0,
) -> tuple[torch.Tensor, Placement]:
    """Bytes or a path -> ((3, H, W) float input in [0, 1], placement): load_pixels, as the model's input."""
    pixels, placement = load_pixels(source, size, limits, formats, trim_max_area)
    return to_input(pixels), placement


def load_input_views(
    source: bytes | str | os.PathLike[str],
    size: tuple[int, int],
    limits: ImageLimits = DEFAULT_LIMITS,
    formats: tuple[str, ...] | None = None,
    trim_max_area: float = 0.0,
    wide_fill: float = DEFAULT_WIDE_FILL,
    wide_aligns: tuple[float, ...] = WIDE_ALIGNS,
) -> list[tuple[torch.Tensor, Placement]]:
    """load_pixel_views, as the model's inputs: [((3, H, W) float input in [0, 1], placement)]."""
    views = load_pixel_views(source, size, limits, formats, trim_max_area, wide_fill, wide_aligns)
    return [(to_input(pixels), placement) for pixels, placement in views]


# EXIF orientations that turn the stored image a quarter turn (its width becomes the upright height).
_QUARTER_TURNS = (5, 6, 7, 8)


def _decode(
    source: bytes | str | os.PathLike[str],
    limits: ImageLimits,
    formats: tuple[str, ...] | None,
    fit: tuple[int, int] | None,
) -> tuple[Image.Image, tuple[int, int]]:
    """(upright RGB image, the photo's upright full size). With ``fit`` = (H, W), a JPEG may come
    back smaller than its full size (see load_pixels); without, it is always full size."""
    in_memory = isinstance(source, bytes | bytearray)
    if not in_memory and _special(source):  # type: ignore[arg-type]
        raise ImageDecodeError("not a regular file")  # a pipe or device would block or never end
    if (not source) if in_memory else _empty(source):  # type: ignore[arg-type]
        raise ImageDecodeError("empty file")
    try:
        handle = io.BytesIO(source) if isinstance(source, bytes | bytearray) else open(source, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise ImageDecodeError(f"cannot open: {exc.strerror or exc}") from exc
    with handle:
        try:
            image = Image.open(handle, formats=_formats_for(handle, formats))
        except Image.DecompressionBombError as exc:
            raise ImageDecodeError(f"too many pixels: {exc}") from exc
        except DECODE_ERRORS as exc:
            raise ImageDecodeError("not a readable image") from exc
        width, height = image.size
        if width < 1 or height < 1:
            raise ImageDecodeError("image has no pixels")
        if max(width, height) > limits.max_side:
            raise ImageDecodeError(f"{width}x{height} has a side over the limit of {limits.max_side} pixels")
        if max(width, height) / min(width, height) > limits.max_aspect:
            raise ImageDecodeError(f"{width}x{height} is more than {limits.max_aspect:g} times as long as it is wide")
        reduced = fit is not None and isinstance(image, JpegImageFile)  # phones' MPO files are JPEGs too
        # Checked before anything is decoded: reading a PNG's EXIF (below) decodes the whole image.
        if width * height > limits.max_pixels * (JPEG_FULL_SIZE_FACTOR if reduced else 1):
            raise ImageDecodeError(f"{width}x{height} is over the limit of {limits.max_pixels} pixels")
        try:
            turned = image.getexif().get(0x0112, 1) in _QUARTER_TURNS
            upright = (height, width) if turned else (width, height)
            if reduced:
                assert fit is not None
                _, scale, _, _ = letterbox_placement(*upright, fit)
                # at least twice the drawn size stays, so the resize after still averages pixels
                image.draft(None, (max(1, round(2 * width * scale)), max(1, round(2 * height * scale))))
            image.load()
            # what was decoded: a reduced JPEG's pixels; a HEIF's size is its header's word until decoded
            if image.size[0] * image.size[1] > limits.max_pixels:
                raise ImageDecodeError(
                    f"{image.size[0]}x{image.size[1]} is over the limit of {limits.max_pixels} pixels"
                )
            ImageOps.exif_transpose(image, in_place=True)  # in place: an upright photo is not copied
            return _rgb(image), upright
        except DECODE_ERRORS as exc:
            raise ImageDecodeError(f"cannot decode image: {exc}") from exc


def _formats_for(handle: io.BufferedIOBase | io.BytesIO, formats: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The formats to open a photo with: an ISO media file by its brands alone (HEIF's and AVIF's
    openers both take a generic mif1 file, and each fails on the other's codec), else ``formats``."""
    head = handle.read(64)
    handle.seek(0)
    kind = iso_media_type(head)
    if kind is None:
        return formats
    chosen = next(t.pillow_format for t in PHOTO_TYPES if t.media_type == kind)
    return (chosen,) if formats is None or chosen in formats else formats


def _rgb(image: Image.Image) -> Image.Image:
    """``image`` in RGB: itself when it is RGB already, not a copy of every pixel. A photo with
    transparency (a product cut out as a PNG) is laid on white, where the catalogue's products sit
    and where the padding is, not on the black its transparent pixels usually hold; 16-bit grey is
    scaled to 8 bits (Pillow's own conversion clips it: nearly every pixel white)."""
    if image.mode.startswith("I"):  # I;16 (a 16-bit grey PNG or TIFF): its transparency, if any, dropped
        grey = np.asarray(image, dtype=np.float32)
        # "I" may hold 8-bit values too (a 32-bit TIFF of them); I;16 is 16-bit by its mode
        scale = 257.0 if image.mode.startswith("I;16") or grey.max(initial=0) > 255 else 1.0
        return Image.fromarray(np.clip(grey / scale + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        cut_out = image.convert("RGBA")
        white = Image.new("RGB", cut_out.size, (PAD_VALUE, PAD_VALUE, PAD_VALUE))
        white.paste(cut_out, mask=cut_out.getchannel("A"))
        return white
    return image if image.mode == "RGB" else image.convert("RGB")


def _special(path: str | os.PathLike[str]) -> bool:
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False  # reported when opened


def _empty(path: str | os.PathLike[str]) -> bool:
    try:
        return os.path.getsize(path) == 0
    except OSError:
        return False  # reported when opened


@dataclass(frozen=True)
class Placement:
    """Where a photo sits inside the letterboxed network input, in the photo's own pixels."""

    width: int  # the photo's size
    height: int
    frame_width: float  # the padded frame's size, in photo pixels
    frame_height: float
    offset_x: float  # the photo's top-left corner inside that frame
    offset_y: float
    # the part of the photo drawn in the frame (x0, y0, x1, y1), where it was cut to its content
    shown: tuple[float, float, float, float] | None = None

    def box_to_photo(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """A box in frame pixels -> the same box in photo pixels, clipped to the part of the photo
        the network saw (the whole photo unless it was cut)."""
        left, top, right, bottom = self.shown or (0.0, 0.0, float(self.width), float(self.height))
        x0, y0, x1, y1 = box
        return (
            min(max(x0 - self.offset_x, left), right),
            min(max(y0 - self.offset_y, top), bottom),
            min(max(x1 - self.offset_x, left), right),
            min(max(y1 - self.offset_y, top), bottom),
        )

    def box_to_unit(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """A box in photo pixels -> the same box in the network input's [-1, 1] map coordinates."""
        x0, y0, x1, y1 = box
        ux = lambda x: (x + self.offset_x) / self.frame_width * 2 - 1  # noqa: E731
        uy = lambda y: (y + self.offset_y) / self.frame_height * 2 - 1  # noqa: E731
        return (ux(x0), uy(y0), ux(x1), uy(y1))


def letterbox_placement(
    width: int, height: int, size: tuple[int, int], align: float = 0.5
) -> tuple[Placement, float, int, int]:
    """Where a width x height photo lands in a letterboxed input of ``size`` = (H, W): the
    placement, the scale, and the photo's top-left corner in input pixels. ``align``: where in the
    frame's height the photo is drawn (0: at the top, 0.5: centred, 1: at the bottom)."""
    out_h, out_w = size
    scale = min(out_w / width, out_h / height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    left, top = (out_w - new_w) // 2, int((out_h - new_h) * align)
    return Placement(width, height, out_w / scale, out_h / scale, left / scale, top / scale), scale, left, top


def letterbox(
    image: Image.Image,
    size: tuple[int, int],
    photo_size: tuple[int, int] | None = None,
    crop: tuple[float, float, float, float] | None = None,
    align: float = 0.5,
) -> tuple[np.ndarray, Placement]:
    """RGB image -> ((H, W, 3) uint8 pixels, placement), letterboxed to ``size`` = (H, W): a quarter
    of the bytes of the model's input, for handing decoded photos between processes. ``photo_size``
    is the photo's full size when ``image`` was decoded smaller: the geometry is the full photo's.
    ``crop`` (x0, y0, x1, y1 in the full photo's pixels): only that part of the photo is drawn; the
    placement maps the frame to the whole photo's pixels all the same. ``align``: where in the
    frame's height the photo is drawn (letterbox_placement)."""
    out_h, out_w = size
    width, height = photo_size or image.size
    if crop is None:
        x0, y0, cut_w, cut_h = 0.0, 0.0, float(width), float(height)
    else:
        x0, y0 = max(0.0, crop[0]), max(0.0, crop[1])
        cut_w, cut_h = min(float(width), crop[2]) - x0, min(float(height), crop[3]) - y0
        if cut_w < 1 or cut_h < 1:
            raise ValueError(f"the crop {crop} leaves nothing of a {width}x{height} photo")
        to_image = image.width / width, image.height / height
        image = _rgb(image).crop(
            (
                round(x0 * to_image[0]),
                round(y0 * to_image[1]),
                round((x0 + cut_w) * to_image[0]),
                round((y0 + cut_h) * to_image[1]),
            )
        )
    shown, scale, left, top = letterbox_placement(max(1, round(cut_w)), max(1, round(cut_h)), size, align)
    placement = Placement(
        width,
        height,
        shown.frame_width,
        shown.frame_height,
        shown.offset_x - x0,
        shown.offset_y - y0,
        None if crop is None else (x0, y0, x0 + cut_w, y0 + cut_h),
    )
    new_w, new_h = max(1, round(cut_w * scale)), max(1, round(cut_h * scale))
    canvas = Image.new("RGB", (out_w, out_h), (PAD_VALUE,) * 3)
    canvas.paste(_rgb(image).resize((new_w, new_h), Image.Resampling.BILINEAR), (left, top))
    return np.asarray(canvas, dtype=np.uint8), placement


def content_box(image: Image.Image, max_area: float) -> tuple[float, float, float, float] | None:
    """The part of ``image`` that holds its detail, (x0, y0, x1, y1) in its pixels, widened by
    CONTENT_MARGIN; None when that box covers more than ``max_area`` of the photo (a street photo,
    sharp to its edges), or the photo has next to no detail (a blank image: nothing to zoom on).

    A person zoomed out onto a plain or out-of-focus background, or standing small in a studio
    photo's white space, is drawn at a fraction of the network's input; cut to this box, the
    person fills it, as in the photos the network was trained on."""
    small = _rgb(image).convert("L")
    small.thumbnail((DETAIL_SIDE, DETAIL_SIDE), Image.Resampling.BOX)
    grey = np.asarray(small, dtype=np.float32)
    rows, cols = grey.shape
    if rows < 4 or cols < 4:
        return None
    detail = np.zeros_like(grey)
    detail[:, 1:] = np.abs(np.diff(grey, axis=1))
    detail[1:, :] = np.maximum(detail[1:, :], np.abs(np.diff(grey, axis=0)))
    mask = detail > DETAIL_LEVEL
    if mask.mean() < MIN_DETAIL_SHARE:
        return None

    def span(mass: np.ndarray) -> tuple[float, float]:
        share = np.cumsum(mass) / mass.sum()
        return float(np.searchsorted(share, CONTENT_TAIL)), float(np.searchsorted(share, 1 - CONTENT_TAIL) + 1)

    (top, bottom), (left, right) = span(mask.sum(1)), span(mask.sum(0))
    pad_x, pad_y = (right - left) * CONTENT_MARGIN, (bottom - top) * CONTENT_MARGIN
    left, right = max(0.0, left - pad_x), min(float(cols), right + pad_x)
    top, bottom = max(0.0, top - pad_y), min(float(rows), bottom + pad_y)
    if (right - left) * (bottom - top) > max_area * rows * cols:
        return None
    # the box's scale against the whole photo's, whatever the frame's shape: at most MAX_ZOOM
    zoom = min(cols / (right - left), rows / (bottom - top))
    if zoom > MAX_ZOOM:
        grow = zoom / MAX_ZOOM
        left, right = _widen(left, right, grow, cols)
        top, bottom = _widen(top, bottom, grow, rows)
    to_x, to_y = image.width / cols, image.height / rows
    return left * to_x, top * to_y, right * to_x, bottom * to_y


def _widen(low: float, high: float, factor: float, limit: float) -> tuple[float, float]:
    """[low, high] grown ``factor`` times about its centre, shifted to stay within [0, limit]."""
    half = min(limit, (high - low) * factor) / 2
    centre = min(max((low + high) / 2, half), limit - half)
    return centre - half, centre + half


def to_input(pixels: np.ndarray) -> torch.Tensor:
    """(..., H, W, 3) uint8 pixels -> (..., 3, H, W) float tensor in [0, 1]."""
    return (torch.from_numpy(np.asarray(pixels, dtype=np.float32)) / 255.0).movedim(-1, -3).contiguous()
