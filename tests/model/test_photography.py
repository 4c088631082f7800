"""Product photos re-photographed as another shop would, and CCP's items cut out as product photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from model.data import CROP_MARGIN, ClothingCoParsing
from model.photography import STYLES, fabric_surface, shop_photo, street_surfaces
from tests.helpers import COLOURS, tiny_ccp


def catalogue_photo(colour: tuple[int, int, int] = COLOURS[1]) -> Image.Image:
    """A product on a white studio backdrop, as the product set shoots it."""
    pixels = np.full((160, 120, 3), 255, dtype=np.uint8)
    pixels[30:130, 25:95] = colour
    return Image.fromarray(pixels)


def test_every_style_puts_the_product_on_its_surface_small_and_seeded() -> None:
    surface = Image.new("RGB", (90, 70), (90, 60, 30))  # a wooden floor
    for style in STYLES:
        on = None if style == "on-white" else surface
        one = shop_photo(catalogue_photo(), on, style, np.random.default_rng(3))
        again = shop_photo(catalogue_photo(), on, style, np.random.default_rng(3))
        assert np.array_equal(np.asarray(one), np.asarray(again)), style
        assert one.mode == "RGB" and 256 <= max(one.size) <= 640, (style, one.size)
        pixels = np.asarray(one, dtype=np.float32)
        green = (pixels[..., 1] > pixels[..., 0] + 40) & (pixels[..., 1] > pixels[..., 2] + 40)
        assert 0.05 < green.mean() < 0.9, style  # the product is there, and not all of it
        # the backdrop is gone: no studio white left around the product, but the surface (on white:
        # a white sheet in the room's light, grey and tinted)
        assert (pixels.min(-1) > 235).mean() < 0.05, style
        corner = pixels[:4, :4].reshape(-1, 3).mean(0)
        if style == "on-white":
            assert corner.min() > 120 and corner.max() - corner.min() < 60, corner
        else:
            assert np.abs(corner - (90, 60, 30)).max() < 60, (style, corner)


def test_a_white_product_on_white_is_kept_whole_rather_than_cut_away() -> None:
    photo = catalogue_photo((250, 250, 250))  # the backdrop and the product cannot be told apart
    photo.paste((20, 20, 20), (55, 40, 65, 50))  # a dark logo on the white shirt
    out = np.asarray(shop_photo(photo, Image.new("RGB", (50, 50), (40, 90, 40)), "flat", np.random.default_rng(0)))
    assert (out.min(-1) > 200).mean() > 0.2  # the white product (and its backdrop) is in the photo


def test_street_surfaces_have_no_one_in_them(tmp_path: Path) -> None:
    ccp = ClothingCoParsing(tiny_ccp(tmp_path / "ccp", photos=4))
    photos = sorted((tmp_path / "ccp" / "photos").glob("000[1-4].jpg"))
    windows = street_surfaces(ccp, photos)
    assert windows and {p for p, _ in windows} <= set(photos)
    for photo, (x0, y0, x1, y1) in windows:
        mask = ccp.read_mask(ccp.mask_path(photo))
        assert (mask[y0:y1, x0:x1] == 0).mean() >= 0.97
        assert 0.2 * 160 - 1 <= x1 - x0 <= 0.4 * 160 and 0.2 * 120 - 1 <= y1 - y0 <= 0.4 * 120


def test_a_fabric_surface_is_the_inside_of_a_product_enlarged() -> None:
    fabric = np.asarray(fabric_surface(catalogue_photo(), np.random.default_rng(0)))
    assert fabric.shape[0] == fabric.shape[1] and fabric.shape[0] > 50
    assert (np.abs(fabric.astype(int) - COLOURS[1]).max(-1) < 30).mean() > 0.9  # the product's own colour


def test_item_crops_are_an_items_box_grown_by_the_margin(tmp_path: Path) -> None:
    ccp = ClothingCoParsing(tiny_ccp(tmp_path / "ccp", photos=2))
    mask_path = tmp_path / "ccp/annotations/pixel-level/0001.mat"
    crops = dict((label, crop) for crop, label in ccp.item_crops(mask_path))
    assert set(crops) == {"bag", "shoes"}  # skin is no item
    ys, xs = np.nonzero(ccp.read_mask(mask_path) == 1)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    dx, dy = CROP_MARGIN * (x1 - x0), CROP_MARGIN * (y1 - y0)
    box = (max(0, x0 - dx), max(0, y0 - dy), min(160, x1 + dx), min(120, y1 + dy))
    assert crops["bag"].size == (round(box[2]) - round(box[0]), round(box[3]) - round(box[1]))
    centre = np.asarray(crops["bag"])[crops["bag"].size[1] // 2, crops["bag"].size[0] // 2]
    assert np.abs(centre.astype(int) - COLOURS[0]).max() < 30
