"""Photos framed unlike CCP's full-length street shots: half-body, waist-to-knee and close-up crops,
zoomed out onto a plain or blurred background, small, re-compressed, in other light (the hue is
kept: colour is what a shopper matches).

A ``Reframe`` is geometry (which part of the source photo, how large, where on a new canvas,
mirrored or not) and photometry. The geometry is an axis-aligned affine map from the source's
pixels to the new photo's, so an item's box and coarse region follow the photo exactly: training
reads from it which labels a view keeps (``view_labels``), evaluation which items survive a
framing (``eval_reframe``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from model.imaging import Placement, letterbox_placement

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
Background = Literal["plain", "blur"]

# The framings a shopper's photo is measured in (bench/any_photo.py), besides the photo as shot.
EVAL_FRAMINGS = ("full", "upper_half", "lower_half", "small_256", "zoomed_out")
# Reported beside them, chosen nothing: zoomed out on a blurred copy of the photo, and less far
# (0.65 of its size) on white.
EXTRA_FRAMINGS = ("zoomed_out_blur", "zoomed_out_065_white")
EVAL_FILL = (200, 200, 200)  # the zoomed-out photo's plain background
SMALL_SIDE = 256  # a phone's thumbnail or a chat app's copy: the long side in pixels


@dataclass(frozen=True)
class Reframe:
    """Source photo -> new photo: the ``crop`` of the source, scaled by ``scale``, pasted at
    ``offset`` on a canvas (the scaled crop's own size when ``canvas`` is None), mirrored if
    ``mirror``; then brightness, contrast, saturation, blur and JPEG re-encoding."""

    crop: Box  # the part of the source kept, in source pixels
    scale: float = 1.0  # new pixels per source pixel
    canvas: tuple[int, int] | None = None  # (width, height) of the new photo
    offset: tuple[float, float] = (0.0, 0.0)  # the scaled crop's top-left on the canvas
    mirror: bool = False
    background: Background = "plain"  # what fills the canvas around the crop: a colour, or the photo blurred
    fill: tuple[int, int, int] = (255, 255, 255)
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    blur: float = 0.0  # Gaussian radius, in new pixels
    jpeg_quality: int | None = None  # re-encoded at this quality; None: not
    # Where the new photo is drawn in the network's letterboxed frame (0: top, 0.5: centred, 1:
    # bottom), as the service draws a wide photo (model.imaging.load_pixel_views).
    align: float = 0.5

    def __post_init__(self) -> None:
        x0, y0, x1, y1 = self.crop
        if not (x1 > x0 and y1 > y0 and self.scale > 0):
            raise ValueError(f"a reframe needs a non-empty crop and a positive scale, not {self.crop}, {self.scale}")

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the new photo."""
        if self.canvas is not None:
            return self.canvas
        x0, y0, x1, y1 = self.crop
        return max(1, round((x1 - x0) * self.scale)), max(1, round((y1 - y0) * self.scale))

    def affine(self) -> tuple[float, float, float, float]:
        """(a_x, b_x, a_y, b_y) with new = a * source + b on each axis."""
        a_x, b_x = self.scale, self.offset[0] - self.crop[0] * self.scale
        a_y, b_y = self.scale, self.offset[1] - self.crop[1] * self.scale
        if self.mirror:
            a_x, b_x = -a_x, self.size[0] - b_x
        return a_x, b_x, a_y, b_y

    def keeps_whole(self, width: int, height: int) -> bool:
        """Whether the whole of a ``width`` x ``height`` source is in the new photo."""
        x0, y0, x1, y1 = self.crop
        return x0 <= 0.5 and y0 <= 0.5 and x1 >= width - 0.5 and y1 >= height - 0.5

    def box(self, box: Box) -> Box | None:
        """A source box -> its visible part in the new photo (None when none is left)."""
        cx0, cy0, cx1, cy1 = self.crop
        x0, y0, x1, y1 = max(box[0], cx0), max(box[1], cy0), min(box[2], cx1), min(box[3], cy1)
        if x1 <= x0 or y1 <= y0:
            return None
        a_x, b_x, a_y, b_y = self.affine()
        nx = sorted((a_x * x0 + b_x, a_x * x1 + b_x))
        ny = sorted((a_y * y0 + b_y, a_y * y1 + b_y))
        width, height = self.size
        out = (max(0.0, nx[0]), max(0.0, ny[0]), min(float(width), nx[1]), min(float(height), ny[1]))
        return out if out[2] > out[0] and out[3] > out[1] else None

    def apply(self, image: Image.Image) -> Image.Image:
        """The new photo from an RGB source ``image``."""
        x0, y0, x1, y1 = self.crop
        width, height = self.size
        scaled = image.crop((round(x0), round(y0), round(x1), round(y1)))
        inner = (max(1, round((x1 - x0) * self.scale)), max(1, round((y1 - y0) * self.scale)))
        scaled = scaled.resize(inner, Image.Resampling.BILINEAR)
        if self.canvas is None:
            out = scaled
        else:
            if self.background == "blur":  # the photo itself, stretched over the canvas and blurred out of focus
                out = image.resize((width, height), Image.Resampling.BILINEAR)
                out = out.filter(ImageFilter.GaussianBlur(max(width, height) / 25))
            else:
                out = Image.new("RGB", (width, height), self.fill)
            out.paste(scaled, (round(self.offset[0]), round(self.offset[1])))
        if self.mirror:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        for enhance, factor in (
            (ImageEnhance.Brightness, self.brightness),
            (ImageEnhance.Contrast, self.contrast),
            (ImageEnhance.Color, self.saturation),  # saturation only: the hue stays
        ):
            if factor != 1.0:
                out = enhance(out).enhance(factor)
        if self.blur > 0:
            out = out.filter(ImageFilter.GaussianBlur(self.blur))
        if self.jpeg_quality is not None:
            buffer = io.BytesIO()
            out.save(buffer, "JPEG", quality=self.jpeg_quality)
            with Image.open(io.BytesIO(buffer.getvalue())) as decoded:
                out = decoded.convert("RGB")
        return out


def as_shot(width: int, height: int, mirror: bool = False) -> Reframe:
    """The photo unchanged (or only mirrored)."""
    return Reframe((0.0, 0.0, float(width), float(height)), mirror=mirror)


@dataclass(frozen=True)
class FrameMap:
    """The network's input frame -> a source photo's pixels: source = scale * u + shift on each axis,
    u in [0, 1] across the frame. Through a letterbox placement, and a reframe before it."""

    scale_x: float
    shift_x: float
    scale_y: float
    shift_y: float

    @classmethod
    def of(cls, placement: Placement, reframe: Reframe | None = None) -> FrameMap:
        """``placement``: where the (reframed) photo sits in the frame; ``reframe``: how that photo
        was made from the source (None: it is the source)."""
        # frame -> the photo the network saw: photo = u * frame_size - offset
        ax, bx = placement.frame_width, -placement.offset_x
        ay, by = placement.frame_height, -placement.offset_y
        if reframe is None:
            return cls(ax, bx, ay, by)
        rax, rbx, ray, rby = reframe.affine()  # photo = r_a * source + r_b
        return cls(ax / rax, (bx - rbx) / rax, ay / ray, (by - rby) / ray)

    def box_to_unit(self, box: Box) -> Box:
        """A source box -> the same box in the frame's [-1, 1] map coordinates (x0 < x1)."""
        xs = sorted(((box[0] - self.shift_x) / self.scale_x, (box[2] - self.shift_x) / self.scale_x))
        ys = sorted(((box[1] - self.shift_y) / self.scale_y, (box[3] - self.shift_y) / self.scale_y))
        return (xs[0] * 2 - 1, ys[0] * 2 - 1, xs[1] * 2 - 1, ys[1] * 2 - 1)


def frame_map(reframe: Reframe | None, photo_size: tuple[int, int], input_size: tuple[int, int]) -> FrameMap:
    """The input frame -> source map of a ``photo_size`` = (width, height) source photo, reframed
    (or not) and letterboxed into ``input_size`` = (H, W)."""
    width, height = reframe.size if reframe is not None else photo_size
    align = reframe.align if reframe is not None else 0.5
    return FrameMap.of(letterbox_placement(width, height, input_size, align)[0], reframe)


# A reframed item's label: kept where at least this many of its source pixels and this share of
# them stay in the photo; absent where fewer than NOTHING_LEFT_PIXELS stay; unknown in between.
KEPT_PIXELS = 100  # as CCP's test protocol counts a label
# Any share (0): an item with KEPT_PIXELS left is present, as the measure counts it. Chosen on
# validation (bench/any_photo.py --choose) over 0.25, the share before 2026-12-07.
KEPT_SHARE = 0.0
NOTHING_LEFT_PIXELS = 25


def surviving_pixels(region: np.ndarray, cell: int, crop: Box) -> tuple[float, float]:
    """(source pixels, share of the item) of a coarse ``region`` (share of item pixels per cell of
    ``cell`` source pixels) whose cells' centres lie inside ``crop``."""
    rows, cols = region.shape
    ys = (np.arange(rows) + 0.5) * cell
    xs = (np.arange(cols) + 0.5) * cell
    inside = ((ys >= crop[1]) & (ys < crop[3]))[:, None] & ((xs >= crop[0]) & (xs < crop[2]))[None, :]
    total = float(region.sum())
    kept = float(region[inside].sum())
    return kept * cell * cell, kept / total if total > 0 else 0.0


def region_box(region: np.ndarray, cell: int, crop: Box, box: Box | None) -> Box | None:
    """The box of an item's region cells inside ``crop``, within its exact ``box`` where known."""
    rows, cols = region.shape
    ys = (np.arange(rows) + 0.5) * cell
    xs = (np.arange(cols) + 0.5) * cell
    inside = ((ys >= crop[1]) & (ys < crop[3]))[:, None] & ((xs >= crop[0]) & (xs < crop[2]))[None, :]
    hit_rows, hit_cols = np.nonzero((region > 0) & inside)
    if not len(hit_rows):
        return None
    out = (
        float(hit_cols.min() * cell),
        float(hit_rows.min() * cell),
        float((hit_cols.max() + 1) * cell),
        float((hit_rows.max() + 1) * cell),
    )
    if box is not None:
        out = (max(out[0], box[0]), max(out[1], box[1]), min(out[2], box[2]), min(out[3], box[3]))
    out = (max(out[0], crop[0]), max(out[1], crop[1]), min(out[2], crop[2]), min(out[3], crop[3]))
    return out if out[2] > out[0] and out[3] > out[1] else None


# --- Random reframings for training

TRAIN_KINDS = ("upper", "lower", "middle", "closeup", "zoomout", "whole")


@dataclass(frozen=True)
class Strength:
    """How far training views are moved from the photo as shot (chosen on validation)."""

    min_zoom: float = 0.4  # the smallest a zoomed-out photo is drawn, as a share of its canvas
    closeup_area: tuple[float, float] = (0.12, 0.45)  # a close-up's share of the photo's area
    small_side: tuple[int, int] = (160, 400)  # long side of a photo made small (then letterboxed up)
    small_p: float = 0.5
    jpeg: tuple[int, int] = (30, 90)
    jpeg_p: float = 0.5
    light: float = 0.2  # brightness, contrast and saturation within 1 ± this
    blur_p: float = 0.25
    blur: float = 1.5  # radius at most
    # A reframed photo that fills at most this share of the frame's height is drawn at the frame's
    # top, middle or bottom (at random), as the service draws a wide photo; 0: always centred.
    wide_fill: float = 0.0


def random_reframe(
    rng: np.random.Generator,
    width: int,
    height: int,
    kind: str,
    strength: Strength = Strength(),
    focus: Box | None = None,
) -> Reframe:
    """A random reframing of a ``width`` x ``height`` photo: ``kind`` one of TRAIN_KINDS; a
    close-up is centred on ``focus`` (an item's box) when given."""
    w, h = float(width), float(height)
    if kind == "upper":  # head to waist or hips
        crop: Box = (0.0, 0.0, w, h * rng.uniform(0.35, 0.7))
    elif kind == "lower":  # waist or knees down
        crop = (0.0, h * rng.uniform(0.3, 0.65), w, h)
    elif kind == "middle":  # shoulders or waist to the knees
        top = h * rng.uniform(0.1, 0.4)
        crop = (0.0, top, w, min(h, top + h * rng.uniform(0.3, 0.5)))
    elif kind == "closeup":
        area = rng.uniform(*strength.closeup_area) * w * h
        aspect = rng.uniform(0.6, 1.4) * w / h
        cw, ch = min(w, np.sqrt(area * aspect)), min(h, np.sqrt(area / aspect))
        if focus is not None:
            cx = (focus[0] + focus[2]) / 2 + rng.uniform(-0.25, 0.25) * cw
            cy = (focus[1] + focus[3]) / 2 + rng.uniform(-0.25, 0.25) * ch
        else:
            cx, cy = rng.uniform(cw / 2, w - cw / 2), rng.uniform(ch / 2, h - ch / 2)
        x0, y0 = float(np.clip(cx - cw / 2, 0, w - cw)), float(np.clip(cy - ch / 2, 0, h - ch))
        crop = (x0, y0, x0 + cw, y0 + ch)
    elif kind in ("zoomout", "whole"):
        crop = (0.0, 0.0, w, h)
    else:
        raise ValueError(f"unknown reframing {kind!r}; choose one of {', '.join(TRAIN_KINDS)}")
    if kind == "whole":  # a mild crop of the edges at most
        dx, dy = rng.uniform(0, 0.06) * w, rng.uniform(0, 0.06) * h
        crop = (dx, dy, w - rng.uniform(0, 0.06) * w, h - rng.uniform(0, 0.06) * h)
    crop_w, crop_h = crop[2] - crop[0], crop[3] - crop[1]
    reframe = Reframe(crop, mirror=bool(rng.random() < 0.5))
    if kind == "zoomout":
        zoom = rng.uniform(strength.min_zoom, 0.85)
        canvas_w, canvas_h = round(crop_w), round(crop_h)
        inner_w, inner_h = crop_w * zoom, crop_h * zoom
        offset = (rng.uniform(0, canvas_w - inner_w), rng.uniform(0, canvas_h - inner_h))
        light_fill = tuple(int(v) for v in rng.integers(150, 256, 3))
        reframe = replace(
            reframe,
            scale=zoom,
            canvas=(canvas_w, canvas_h),
            offset=offset,
            background="blur" if rng.random() < 0.5 else "plain",
            fill=(light_fill[0], light_fill[1], light_fill[2]),
        )
    if rng.random() < strength.small_p:  # made small: the whole new photo's long side
        long_side = max(reframe.size)
        target = rng.uniform(*strength.small_side)
        if target < long_side:
            factor = target / long_side
            reframe = replace(
                reframe,
                scale=reframe.scale * factor,
                canvas=None
                if reframe.canvas is None
                else (max(1, round(reframe.canvas[0] * factor)), max(1, round(reframe.canvas[1] * factor))),
                offset=(reframe.offset[0] * factor, reframe.offset[1] * factor),
            )
    light = strength.light
    return replace(
        reframe,
        brightness=float(rng.uniform(1 - light, 1 + light)),
        contrast=float(rng.uniform(1 - light, 1 + light)),
        saturation=float(rng.uniform(1 - light, 1 + light)),
        blur=float(rng.uniform(0.3, strength.blur)) if rng.random() < strength.blur_p else 0.0,
        jpeg_quality=int(rng.integers(strength.jpeg[0], strength.jpeg[1] + 1))
        if rng.random() < strength.jpeg_p
        else None,
    )


def background_window(
    rng: np.random.Generator, regions: dict[str, np.ndarray], cell: int, width: int, height: int, tries: int = 40
) -> Box | None:
    """A window of the photo with no item in it (street, wall, sky): a photo with nothing to wear,
    for training the model to find nothing there. None when no such window turns up."""
    if not regions:
        return None
    items = np.sum(list(regions.values()), axis=0)  # share of item pixels per cell
    for _ in range(tries):
        cw, ch = rng.uniform(0.25, 0.45) * width, rng.uniform(0.15, 0.3) * height
        x0, y0 = rng.uniform(0, width - cw), rng.uniform(0, height - ch)
        window = (x0, y0, x0 + cw, y0 + ch)
        pixels, _ = surviving_pixels(items, cell, window)
        if pixels < NOTHING_LEFT_PIXELS:
            return window
    return None


# --- The framings a shopper's photo is measured in


def eval_reframe(name: str, width: int, height: int) -> Reframe:
    """One of EVAL_FRAMINGS, fixed: the top or bottom half, the long side 256 px, or the photo at
    half size in the middle of a plain canvas of its own size."""
    w, h = float(width), float(height)
    if name == "full":
        return as_shot(width, height)
    if name == "upper_half":
        return Reframe((0.0, 0.0, w, h / 2))
    if name == "lower_half":
        return Reframe((0.0, h / 2, w, h))
    if name == "small_256":
        return Reframe((0.0, 0.0, w, h), scale=SMALL_SIDE / max(w, h))
    if name == "zoomed_out":
        return Reframe((0.0, 0.0, w, h), scale=0.5, canvas=(width, height), offset=(w / 4, h / 4), fill=EVAL_FILL)
    if name == "zoomed_out_blur":
        return Reframe((0.0, 0.0, w, h), scale=0.5, canvas=(width, height), offset=(w / 4, h / 4), background="blur")
    if name == "zoomed_out_065_white":
        offset = (w * 0.35 / 2, h * 0.35 / 2)
        return Reframe((0.0, 0.0, w, h), scale=0.65, canvas=(width, height), offset=offset, fill=(255, 255, 255))
    known = ", ".join(EVAL_FRAMINGS + EXTRA_FRAMINGS)
    raise ValueError(f"unknown framing {name!r}; choose one of {known}")


# --- A catalogue photo re-shot as a shopper's photo of the product


BACKDROP_MIN = 238  # a pixel this bright in every channel, connected to the photo's edge, is the studio backdrop


def backdrop_alpha(photo: Image.Image) -> np.ndarray:
    """(H, W) float alpha of a catalogue photo: 0 on its white studio backdrop (near-white pixels
    connected to the edge), 1 on the product (and the model wearing it), softened at the border."""
    from scipy import ndimage

    pixels = np.asarray(photo.convert("RGB"))
    white = pixels.min(-1) >= BACKDROP_MIN
    components, _ = ndimage.label(white)
    edge = np.unique(np.concatenate([components[0], components[-1], components[:, 0], components[:, -1]]))
    backdrop = np.isin(components, edge[edge > 0])
    return (
        np.asarray(
            Image.fromarray((~backdrop).astype(np.uint8) * 255).filter(ImageFilter.GaussianBlur(1.0)), dtype=np.float32
        )
        / 255.0
    )


def reshoot(photo: Image.Image, street: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A catalogue photo as a shopper might photograph the product: a random crop of 0.5-0.9 of its
    area, turned up to 10 degrees, in mild perspective, its white backdrop replaced by ``street``
    (a region of a street photo), brightness and contrast within ±20% (the hue kept), blurred,
    256 px on its long side, JPEG quality 40-70."""
    photo = photo.convert("RGB")
    w, h = photo.size
    area, aspect = rng.uniform(0.5, 0.9) * w * h, rng.uniform(3 / 4, 4 / 3)
    cw, ch = min(float(w), np.sqrt(area * aspect)), min(float(h), np.sqrt(area / aspect))
    x0, y0 = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
    box = (round(x0), round(y0), round(x0 + cw), round(y0 + ch))
    product = photo.crop(box)
    alpha = Image.fromarray((backdrop_alpha(photo)[box[1] : box[3], box[0] : box[2]] * 255).astype(np.uint8))
    # a quarter turn of the camera at most, and a mild perspective: the four corners moved by up to 8%
    angle = float(rng.uniform(-10, 10))
    product = product.rotate(angle, Image.Resampling.BILINEAR, expand=True)
    alpha = alpha.rotate(angle, Image.Resampling.BILINEAR, expand=True)  # the turned-in corners are transparent
    pw, ph = product.size
    corners = [(0, 0), (pw, 0), (pw, ph), (0, ph)]
    moved = [(x + rng.uniform(-0.08, 0.08) * pw, y + rng.uniform(-0.08, 0.08) * ph) for x, y in corners]
    coefficients = _perspective(moved, corners)
    product = product.transform((pw, ph), Image.Transform.PERSPECTIVE, coefficients, Image.Resampling.BILINEAR)
    alpha = alpha.transform((pw, ph), Image.Transform.PERSPECTIVE, coefficients, Image.Resampling.BILINEAR)
    # onto the street: a canvas up to 30% larger than the product, the product anywhere on it
    grow = rng.uniform(1.0, 1.3)
    canvas_size = (round(pw * grow), round(ph * grow))
    canvas = street.convert("RGB").resize(canvas_size, Image.Resampling.BILINEAR)
    canvas.paste(
        product, (int(rng.integers(0, canvas_size[0] - pw + 1)), int(rng.integers(0, canvas_size[1] - ph + 1))), alpha
    )
    out = replace(
        Reframe(
            (0.0, 0.0, float(canvas_size[0]), float(canvas_size[1])),
            scale=SMALL_SIDE / max(canvas_size),
            brightness=float(rng.uniform(0.8, 1.2)),
            contrast=float(rng.uniform(0.8, 1.2)),
            blur=float(rng.uniform(0.3, 1.2)),
            jpeg_quality=int(rng.integers(40, 71)),
        )
    )
    return out.apply(canvas)


def _perspective(source: list[tuple[float, float]], target: list[tuple[int, int]]) -> list[float]:
    """PIL's perspective coefficients mapping ``target`` corners (output) to ``source`` (input)."""
    rows = []
    for (x, y), (u, v) in zip(target, source, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    solution = np.linalg.solve(np.array(rows, dtype=np.float64), np.array(source, dtype=np.float64).ravel())
    return solution.tolist()


def street_region(street: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A random region of a street photo, a third to two thirds of its sides."""
    w, h = street.size
    cw, ch = rng.uniform(0.33, 0.67) * w, rng.uniform(0.33, 0.67) * h
    x0, y0 = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
    return street.crop((round(x0), round(y0), round(x0 + cw), round(y0 + ch)))
