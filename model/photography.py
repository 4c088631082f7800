"""A catalogue photo re-photographed the way another shop shoots its products: laid flat on a bed
or a floor, hung on a wall, set down in a street or a room, under warm or cool light falling from
one side, small and re-compressed. The product head is fitted on these beside the catalogue's own
studio photos (model.products), so that a shop whose photos are not the product set's still gets
its products placed in the right part index.

The product is cut out of its white studio backdrop (model.framing.backdrop_alpha; an apparel photo
keeps the model wearing it, as a shop's "on a model" photo does), cropped, turned and laid on a
surface with a soft shadow. The surfaces are real textures: regions of CCP training street photos
(walls, pavements, floors, grass) and enlarged fabric from the inside of another product's photo
(a bedspread, a blanket). No test photo is ever a surface.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from model.data import ClothingCoParsing
from model.framing import backdrop_alpha

Style = Literal["flat", "hanging", "set-down", "on-white"]
# How often each style is drawn: the styles a small shop's own photos mostly show (checked against
# the examples: hangers, floors, beds) weigh most; cut-out on white stays, with a shadow.
STYLES: dict[Style, float] = {"flat": 0.35, "hanging": 0.25, "set-down": 0.25, "on-white": 0.15}
MIN_PRODUCT_SHARE = 0.1  # of a photo: less left off the backdrop, the product is white and kept whole


def fabric_surface(photo: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A patch from inside a product photo's product (its middle, off the backdrop), enlarged to
    look like a bedspread: a real fabric's texture and colour."""
    photo = photo.convert("RGB")
    w, h = photo.size
    side = rng.uniform(0.15, 0.3) * min(w, h)
    x0, y0 = rng.uniform(0.35, 0.65) * w - side / 2, rng.uniform(0.35, 0.65) * h - side / 2
    patch = photo.crop((round(x0), round(y0), round(x0 + side), round(y0 + side)))
    return patch.resize((max(1, round(side * 3)),) * 2, Image.Resampling.BICUBIC)


def _light(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Warm or cool light (each channel's gain within ±12%), falling from one side (a ramp down to
    0.6-1.0 of full light across the photo), brightness and contrast within ±25%."""
    pixels = np.asarray(image, dtype=np.float32)
    h, w = pixels.shape[:2]
    gains = rng.uniform(0.88, 1.12, size=3).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = (np.cos(angle) * (xs / max(w - 1, 1) - 0.5) + np.sin(angle) * (ys / max(h - 1, 1) - 0.5)) + 0.5
    darkest = rng.uniform(0.6, 1.0)
    light = darkest + (1 - darkest) * np.clip(ramp, 0, 1)
    out = Image.fromarray(np.clip(pixels * gains * light[..., None], 0, 255).astype(np.uint8))
    out = ImageEnhance.Brightness(out).enhance(float(rng.uniform(0.75, 1.25)))
    return ImageEnhance.Contrast(out).enhance(float(rng.uniform(0.75, 1.25)))


def draw_style(rng: np.random.Generator) -> Style:
    names = list(STYLES)
    return names[int(rng.choice(len(names), p=np.array(list(STYLES.values()))))]


def shop_photo(photo: Image.Image, surface: Image.Image | None, style: Style, rng: np.random.Generator) -> Image.Image:
    """``photo`` (a catalogue photo on white) as another shop's photo of the product, in ``style``,
    on ``surface`` (white where None)."""
    photo = photo.convert("RGB")
    w, h = photo.size
    # 0.7-1.0 of the product's area: a shop's framing cuts an edge off now and then
    area, aspect = rng.uniform(0.7, 1.0) * w * h, rng.uniform(0.85, 1.15)
    cw, ch = min(float(w), np.sqrt(area * aspect)), min(float(h), np.sqrt(area / aspect))
    x0, y0 = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
    box = (round(x0), round(y0), round(x0 + cw), round(y0 + ch))
    product = photo.crop(box)
    cut_out = backdrop_alpha(photo)
    if cut_out.mean() < MIN_PRODUCT_SHARE:  # a white product on white: its backdrop cannot be told apart
        cut_out = np.ones_like(cut_out)
    alpha = Image.fromarray((cut_out[box[1] : box[3], box[0] : box[2]] * 255).astype(np.uint8))
    # laid flat: any way round (a quarter turn a quarter of the time); hung or set down: nearly upright
    if style == "flat":
        angle = float(rng.uniform(-40, 40) + (90 * rng.choice([-1, 1]) if rng.random() < 0.25 else 0))
    else:
        angle = float(rng.uniform(-8, 8))
    product = product.rotate(angle, Image.Resampling.BILINEAR, expand=True)
    alpha = alpha.rotate(angle, Image.Resampling.BILINEAR, expand=True)
    pw, ph = product.size
    grow = rng.uniform(1.1, 1.6) if style != "set-down" else rng.uniform(1.3, 2.0)
    canvas_size = (round(pw * grow), round(ph * grow))
    if surface is None:
        canvas = Image.new("RGB", canvas_size, (255, 255, 255))
    else:
        canvas = surface.convert("RGB").resize(canvas_size, Image.Resampling.BILINEAR)
    at = (int(rng.integers(0, canvas_size[0] - pw + 1)), int(rng.integers(0, canvas_size[1] - ph + 1)))
    # a soft shadow: short under a flat product, longer and to one side behind a hung one
    reach = 0.01 if style == "flat" else 0.04
    shift = rng.uniform(-reach, reach * 2, size=2) * np.array([pw, ph])
    shadow_mask = Image.new("L", canvas_size, 0)
    shadow_mask.paste(alpha, (round(at[0] + shift[0]), round(at[1] + shift[1])))
    shadow_mask = shadow_mask.filter(ImageFilter.GaussianBlur(max(pw, ph) * rng.uniform(0.01, 0.04)))
    darkness = rng.uniform(0.25, 0.55)
    shade = 1 - darkness * np.asarray(shadow_mask, dtype=np.float32)[..., None] / 255.0
    canvas = Image.fromarray((np.asarray(canvas, dtype=np.float32) * shade).astype(np.uint8))
    canvas.paste(product, at, alpha)
    out = _light(canvas, rng)
    if rng.random() < 0.5:
        out = out.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.2))))
    # a phone's photo sent on, or a shop's thumbnail: 256-640 px on its long side, JPEG 40-85
    scale = rng.uniform(256, 640) / max(out.size)
    out = out.resize((max(1, round(out.width * scale)), max(1, round(out.height * scale))), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    out.save(buffer, "JPEG", quality=int(rng.integers(40, 86)))
    with Image.open(io.BytesIO(buffer.getvalue())) as decoded:
        return decoded.convert("RGB")


SurfaceWindow = tuple[Path, tuple[int, int, int, int]]  # a street photo and a box of it
BARE = 0.97  # the least share of a surface window's pixels that are no one's (CCP's "null" label)


def street_surfaces(ccp: ClothingCoParsing, photos: Sequence[Path], seed: int = 0) -> list[SurfaceWindow]:
    """Windows of CCP street photos with no one in them (walls, pavements, floors), read off the
    photos' masks: up to two per photo, a fifth to two fifths of its sides, at least BARE bare."""
    rng = np.random.default_rng(seed)
    windows: list[SurfaceWindow] = []
    for photo in photos:
        bare = ccp.read_mask(ccp.mask_path(photo)) == 0
        h, w = bare.shape
        found = 0
        for _ in range(40):
            cw, ch = int(rng.uniform(0.2, 0.4) * w), int(rng.uniform(0.2, 0.4) * h)
            x0, y0 = int(rng.integers(0, w - cw)), int(rng.integers(0, h - ch))
            if bare[y0 : y0 + ch, x0 : x0 + cw].mean() >= BARE:
                windows.append((photo, (x0, y0, x0 + cw, y0 + ch)))
                found += 1
                if found == 2:
                    break
    return windows
