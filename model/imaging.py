"""Decoding untrusted images and fitting them to the network's input.

Decoding checks the pixel count before the pixels are decoded (decompression bombs), forces a full
decode (truncated files fail here, not later), honours EXIF orientation and converts any mode to RGB.
Loading for the network decodes a large JPEG at a reduced DCT scale (load_pixels). Fitting
letterboxes: the photo is scaled to fit the input and padded, so a square product photo is not
stretched into a portrait; boxes are mapped back through the same placement.
"""

from __future__ import annotations

import io
import os
import stat
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps
from PIL.JpegImagePlugin import JpegImageFile

from model.errors import ModelError

DEFAULT_MAX_PIXELS = 40_000_000  # more is a decompression bomb, not a photo
DEFAULT_MAX_SIDE = 20_000  # no camera or product shot has a longer side
DEFAULT_MAX_ASPECT = 10.0  # long side over short side: panoramas stay well under it
PAD_VALUE = 255  # catalogue photos sit on white


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
) -> tuple[np.ndarray, Placement]:
    """Bytes or a path -> ((H, W, 3) uint8 pixels letterboxed to ``size`` = (H, W), placement in the
    photo's own pixels), or ImageDecodeError.

    A JPEG at least four times the size it is drawn at in the input is decoded straight at the
    smallest of its DCT scales (1/2, 1/4, 1/8) that keeps twice that size, then resized as before: a
    phone's 12-megapixel photo is decoded at a quarter of its side, a fraction of the work of a full
    decode. Smaller photos (CCP's 550 x 827, drawn at 255 x 384; this catalogue's 224 x 224) are
    decoded in full, exactly as the model was trained."""
    image, photo_size = _decode(source, limits, formats, size)
    return letterbox(image, size, photo_size)


def load_input(
    source: bytes | str | os.PathLike[str],
    size: tuple[int, int],
    limits: ImageLimits = DEFAULT_LIMITS,
    formats: tuple[str, ...] | None = None,
) -> tuple[torch.Tensor, Placement]:
    """Bytes or a path -> ((3, H, W) float input in [0, 1], placement): load_pixels, as the model's input."""
    pixels, placement = load_pixels(source, size, limits, formats)
    return to_input(pixels), placement


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
            image = Image.open(handle, formats=formats)
        except Image.DecompressionBombError as exc:
            raise ImageDecodeError(f"too many pixels: {exc}") from exc
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageDecodeError("not a readable image") from exc
        width, height = image.size
        if width < 1 or height < 1:
            raise ImageDecodeError("image has no pixels")
        if width * height > limits.max_pixels:
            raise ImageDecodeError(f"{width}x{height} is over the limit of {limits.max_pixels} pixels")
        if max(width, height) > limits.max_side:
            raise ImageDecodeError(f"{width}x{height} has a side over the limit of {limits.max_side} pixels")
        if max(width, height) / min(width, height) > limits.max_aspect:
            raise ImageDecodeError(f"{width}x{height} is more than {limits.max_aspect:g} times as long as it is wide")
        try:
            turned = image.getexif().get(0x0112, 1) in _QUARTER_TURNS
            upright = (height, width) if turned else (width, height)
            if fit is not None and isinstance(image, JpegImageFile):  # phones' MPO files are JPEGs too
                _, scale, _, _ = letterbox_placement(*upright, fit)
                # at least twice the drawn size stays, so the resize after still averages pixels
                image.draft(None, (max(1, round(2 * width * scale)), max(1, round(2 * height * scale))))
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # in place: an upright photo is not copied
            return _rgb(image), upright
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise ImageDecodeError(f"cannot decode image: {exc}") from exc


def _rgb(image: Image.Image) -> Image.Image:
    """``image`` in RGB: itself when it is RGB already, not a copy of every pixel."""
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

    def box_to_photo(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """A box in frame pixels -> the same box in photo pixels, clipped to the photo."""
        x0, y0, x1, y1 = box
        return (
            min(max(x0 - self.offset_x, 0.0), self.width),
            min(max(y0 - self.offset_y, 0.0), self.height),
            min(max(x1 - self.offset_x, 0.0), self.width),
            min(max(y1 - self.offset_y, 0.0), self.height),
        )

    def box_to_unit(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """A box in photo pixels -> the same box in the network input's [-1, 1] map coordinates."""
        x0, y0, x1, y1 = box
        ux = lambda x: (x + self.offset_x) / self.frame_width * 2 - 1  # noqa: E731
        uy = lambda y: (y + self.offset_y) / self.frame_height * 2 - 1  # noqa: E731
        return (ux(x0), uy(y0), ux(x1), uy(y1))


def letterbox_placement(width: int, height: int, size: tuple[int, int]) -> tuple[Placement, float, int, int]:
    """Where a width x height photo lands in a letterboxed input of ``size`` = (H, W): the
    placement, the scale, and the photo's top-left corner in input pixels."""
    out_h, out_w = size
    scale = min(out_w / width, out_h / height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    left, top = (out_w - new_w) // 2, (out_h - new_h) // 2
    return Placement(width, height, out_w / scale, out_h / scale, left / scale, top / scale), scale, left, top


def letterbox(
    image: Image.Image, size: tuple[int, int], photo_size: tuple[int, int] | None = None
) -> tuple[np.ndarray, Placement]:
    """RGB image -> ((H, W, 3) uint8 pixels, placement), letterboxed to ``size`` = (H, W): a quarter
    of the bytes of the model's input, for handing decoded photos between processes. ``photo_size``
    is the photo's full size when ``image`` was decoded smaller: the geometry is the full photo's."""
    out_h, out_w = size
    width, height = photo_size or image.size
    placement, scale, left, top = letterbox_placement(width, height, size)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    canvas = Image.new("RGB", (out_w, out_h), (PAD_VALUE,) * 3)
    canvas.paste(_rgb(image).resize((new_w, new_h), Image.Resampling.BILINEAR), (left, top))
    return np.asarray(canvas, dtype=np.uint8), placement


def to_input(pixels: np.ndarray) -> torch.Tensor:
    """(..., H, W, 3) uint8 pixels -> (..., 3, H, W) float tensor in [0, 1]."""
    return (torch.from_numpy(np.asarray(pixels, dtype=np.float32)) / 255.0).movedim(-1, -3).contiguous()
