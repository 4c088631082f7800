from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model.data import REGION_CELL, Sample
from model.framing import NOTHING_LEFT_PIXELS, FrameMap, Reframe, as_shot, surviving_pixels
from model.imaging import letterbox_placement
from model.network import PartAttentionNetwork
from model.products import Product
from model.views import (
    background_views,
    ccp_view,
    product_view,
    region_on_frame,
    view_input,
    view_maps,
)
from tests.helpers import tiny_config

LABELS = ["top", "skirt", "shoes", "bag"]
SIZE = (96, 64)


def two_items(tmp_path: Path, source: str = "pixel-level") -> Sample:
    """A 160 x 240 photo: a top in rows 40-96, a skirt in rows 110-170, shoes in rows 200-232;
    the pixel-level one knows their boxes and regions, the image-level one their labels only."""
    path = tmp_path / f"{source}.png"
    Image.new("RGB", (160, 240), "grey").save(path)
    boxes = {
        "top": (40.0, 40.0, 120.0, 96.0),
        "skirt": (40.0, 110.0, 120.0, 170.0),
        "shoes": (48.0, 200.0, 112.0, 232.0),
    }
    if source != "pixel-level":
        return Sample(path, sorted(boxes), source=source)
    regions = {}
    for name, (x0, y0, x1, y1) in boxes.items():
        region = np.zeros((240 // REGION_CELL, 160 // REGION_CELL), dtype=np.float32)
        region[int(y0) // REGION_CELL : int(y1) // REGION_CELL, int(x0) // REGION_CELL : int(x1) // REGION_CELL] = 1
        regions[name] = region
    return Sample(path, sorted(boxes), source=source, boxes=boxes, regions=regions)


def known_labels(view) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {
        name: ("present" if view.targets[i] else "absent") if view.known[i] else "unknown"
        for i, name in enumerate(LABELS)
    }


def test_item_regions_land_where_the_letterbox_puts_the_photo(tmp_path: Path) -> None:
    # A 200 x 100 photo in a 256 x 384 input sits in rows 128-255 (cells 16-31 of 48); its item
    # fills the photo's left half (cells 0-15 of 32 across).
    region = np.zeros((13, 25), dtype=np.float32)  # 8-pixel cells of the 100 x 200 photo
    region[:, :12] = 1.0
    placement = letterbox_placement(200, 100, (384, 256))[0]
    on_frame = region_on_frame(region, FrameMap.of(placement), (384, 256))
    assert on_frame.shape == (48, 32)
    assert float(on_frame[:15].sum()) == 0 and float(on_frame[33:].sum()) == 0  # the padding (edges blend)
    assert float(on_frame[17:31, 1:14].min()) == 1 and float(on_frame[17:31, 17:].max()) == 0
    mirrored = region_on_frame(region, FrameMap.of(placement, as_shot(200, 100, mirror=True)), (384, 256))
    torch.testing.assert_close(mirrored, on_frame.flip(-1))


def test_a_crop_keeps_the_items_in_it_drops_those_outside_and_leaves_the_cut_ones_unknown(tmp_path: Path) -> None:
    sample = two_items(tmp_path)
    as_shot_view = ccp_view(sample, LABELS, SIZE, None)
    assert known_labels(as_shot_view) == {"top": "present", "skirt": "present", "shoes": "present", "bag": "absent"}
    assert len(as_shot_view.items) == 3
    # the top half and a little: the top whole, a seventh of the skirt, the shoes gone
    upper = ccp_view(sample, LABELS, SIZE, Reframe((0.0, 0.0, 160.0, 112.0)), kept_share=0.25)
    assert known_labels(upper) == {"top": "present", "skirt": "unknown", "shoes": "absent", "bag": "absent"}
    # with no share asked (the default), the seventh of the skirt (640 px) counts, as the measure counts it
    counted = ccp_view(sample, LABELS, SIZE, Reframe((0.0, 0.0, 160.0, 112.0)), kept_share=0.0)
    assert known_labels(counted) == {"top": "present", "skirt": "present", "shoes": "absent", "bag": "absent"}
    ((label, box, region),) = upper.items
    assert LABELS[label] == "top" and region is not None
    placement = letterbox_placement(160, 112, SIZE)[0]
    torch.testing.assert_close(box, torch.tensor(placement.box_to_unit((40.0, 40.0, 120.0, 96.0))))
    # mirrored, the box is too
    mirrored = ccp_view(sample, LABELS, SIZE, as_shot(160, 240, mirror=True))
    plain_boxes = {c: b for c, b, _ in as_shot_view.items}
    for c, b, _ in mirrored.items:
        x0, y0, x1, y1 = plain_boxes[c].tolist()
        torch.testing.assert_close(b, torch.tensor([-x1, y0, -x0, y1]))


def test_tags_without_masks_are_kept_only_when_nearly_all_the_photo_is(tmp_path: Path) -> None:
    sample = two_items(tmp_path, "image-level")
    zoomed = Reframe((0.0, 0.0, 160.0, 240.0), scale=0.5, canvas=(160, 240), offset=(40.0, 60.0))
    assert known_labels(ccp_view(sample, LABELS, SIZE, zoomed))["skirt"] == "present"
    edges = Reframe((5.0, 5.0, 155.0, 235.0))
    assert known_labels(ccp_view(sample, LABELS, SIZE, edges))["skirt"] == "present"
    upper = ccp_view(sample, LABELS, SIZE, Reframe((0.0, 0.0, 160.0, 120.0)))
    assert known_labels(upper) == {"top": "unknown", "skirt": "unknown", "shoes": "unknown", "bag": "absent"}
    assert upper.items == ()


def test_a_product_photo_knows_its_category_and_alone_every_other_group(tmp_path: Path) -> None:
    labels = ["shoes", "heels", "top", "bag"]
    worn = product_view(Product("1", tmp_path / "1.jpg", "top", alone=False), labels, None)
    assert worn.targets.tolist() == [0, 0, 1, 0] and worn.known.tolist() == [0, 0, 1, 0]
    alone = product_view(Product("2", tmp_path / "2.jpg", "shoes", alone=True), labels, None)
    # heels may name the same shoes: unknown; tops and bags are not in a photo of shoes alone
    assert alone.targets.tolist() == [1, 0, 0, 0] and alone.known.tolist() == [1, 0, 1, 1]


def test_a_street_window_has_nothing_to_wear(tmp_path: Path) -> None:
    sample = two_items(tmp_path)
    (view,) = background_views(sample, LABELS, np.random.default_rng(0))
    assert view.reframe is not None and not view.targets.any() and view.known.all()
    for name, region in sample.regions.items():  # no item inside the window, a sliver at most
        assert surviving_pixels(region, REGION_CELL, view.reframe.crop)[0] < NOTHING_LEFT_PIXELS, name


def test_view_maps_are_the_trunks_maps_and_are_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sample = two_items(tmp_path)
    model = PartAttentionNetwork(tiny_config(pretrained=True)).eval()
    views = [(sample.image, None), (sample.image, Reframe((0.0, 0.0, 160.0, 120.0), jpeg_quality=50))]
    maps = view_maps(model, views, tmp_path / "cache", workers=0)
    assert [m.shape for m in maps] == [(2, 112, 4, 3), (2, 1280, 2, 2)]
    with torch.inference_mode():
        expected = model.trunk_forward(torch.stack([view_input(p, r, (64, 48)) for p, r in views]))
    for got, want in zip(maps, expected, strict=True):
        torch.testing.assert_close(torch.from_numpy(np.array(got)).float(), want, atol=2e-2, rtol=1e-2)
    monkeypatch.setattr("model.views._compute_view_maps", lambda *a: pytest.fail("computed again"))
    again = view_maps(model, views, tmp_path / "cache", workers=0)
    assert all(np.array_equal(a, b) for a, b in zip(maps, again, strict=True))


def test_a_wide_reframing_is_drawn_where_the_service_draws_it(tmp_path: Path) -> None:
    from dataclasses import replace

    from model.framing import Strength
    from model.views import as_served

    sample = two_items(tmp_path)
    upper = Reframe((0.0, 0.0, 160.0, 110.0))  # 160 x 110 fills 0.46 of the frame's height: wide
    rng = np.random.default_rng(0)
    drawn = {as_served(upper, SIZE, rng, Strength(wide_fill=0.6)).align for _ in range(30)}
    assert drawn == {0.0, 0.5, 1.0}  # the service's three places (model.imaging.WIDE_ALIGNS)
    assert as_served(upper, SIZE, rng, Strength(wide_fill=0.0)) == upper  # off: centred
    assert as_served(upper, SIZE, rng, Strength(wide_fill=0.4)) == upper  # not as wide as that
    # At the top, the top's box and the photo's pixels are where the service puts them: 64 x 44
    # pixels drawn in rows 0-43 of the 96 x 64 frame, the padding below; centred, rows 26-69.
    for align, first_row in ((0.0, 0), (0.5, 26)):
        view = ccp_view(sample, LABELS, SIZE, replace(upper, align=align))
        (box,) = [box for c, box, _ in view.items if LABELS[c] == "top"]
        assert float(box[1]) == pytest.approx((first_row + 40 * 0.4) / 96 * 2 - 1, abs=0.02)
        pixels = view_input(sample.image, replace(upper, align=align), SIZE)
        grey = pixels[:, first_row + 2 : first_row + 40].mean()
        assert float(grey) == pytest.approx(128 / 255, abs=0.02)  # the grey photo, not the padding
        assert float((pixels[:, first_row + 2 : first_row + 40] - grey).abs().max()) < 0.02
