import numpy as np
import pytest
from PIL import Image

from model.framing import (
    EVAL_FRAMINGS,
    TRAIN_KINDS,
    FrameMap,
    Reframe,
    as_shot,
    eval_reframe,
    frame_map,
    random_reframe,
    region_box,
    surviving_pixels,
)
from model.imaging import letterbox_placement

SQUARE = (60.0, 100.0, 100.0, 160.0)  # a red square on a grey 160 x 240 photo


def photo() -> Image.Image:
    pixels = np.full((240, 160, 3), 128, dtype=np.uint8)
    x0, y0, x1, y1 = (int(v) for v in SQUARE)
    pixels[y0:y1, x0:x1] = (220, 20, 20)
    return Image.fromarray(pixels)


def red_box(image: Image.Image) -> tuple[float, float, float, float]:
    pixels = np.asarray(image).astype(int)
    ys, xs = np.nonzero((pixels[..., 0] > 170) & (pixels[..., 1] < 90))
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


@pytest.mark.parametrize(
    "reframe",
    [
        as_shot(160, 240),
        as_shot(160, 240, mirror=True),
        Reframe((40.0, 80.0, 140.0, 200.0)),  # a close-up
        Reframe((40.0, 80.0, 140.0, 200.0), mirror=True),
        Reframe((0.0, 0.0, 160.0, 240.0), scale=0.5),  # made small
        Reframe((0.0, 0.0, 160.0, 240.0), scale=0.5, canvas=(160, 240), offset=(30.0, 50.0)),  # zoomed out
        Reframe((0.0, 0.0, 160.0, 240.0), scale=0.5, canvas=(160, 240), offset=(30.0, 50.0), background="blur"),
    ],
)
def test_a_box_follows_the_pixels_it_frames(reframe: Reframe) -> None:
    made = reframe.apply(photo())
    assert made.size == reframe.size
    expected = reframe.box(SQUARE)
    assert expected is not None
    np.testing.assert_allclose(red_box(made), expected, atol=1.5)


def test_a_box_outside_the_crop_is_gone_and_one_across_its_edge_is_cut() -> None:
    upper = Reframe((0.0, 0.0, 160.0, 100.0))
    assert upper.box(SQUARE) is None
    assert upper.box((10.0, 80.0, 50.0, 140.0)) == (10.0, 80.0, 50.0, 100.0)
    assert not upper.keeps_whole(160, 240) and as_shot(160, 240).keeps_whole(160, 240)


def test_photometry_keeps_the_hue() -> None:
    darker = Reframe((0.0, 0.0, 160.0, 240.0), brightness=0.8, contrast=1.2, saturation=0.8, jpeg_quality=40)
    r, g, b = (int(v) for v in np.asarray(darker.apply(photo()))[130, 80])
    assert r > 2 * g and r > 2 * b  # still red


def test_the_frame_map_puts_a_source_box_where_the_network_sees_it() -> None:
    reframe = Reframe((40.0, 80.0, 140.0, 200.0), scale=0.8, mirror=True)
    size = (96, 64)
    to_source = frame_map(reframe, (160, 240), size)
    # the same box, reframed then letterboxed into the frame's [-1, 1] units
    new_box = reframe.box(SQUARE)
    assert new_box is not None
    placement = letterbox_placement(*reframe.size, size)[0]
    np.testing.assert_allclose(to_source.box_to_unit(SQUARE), placement.box_to_unit(new_box), atol=1e-6)
    assert FrameMap.of(placement) == frame_map(None, reframe.size, size)


def test_surviving_pixels_and_the_box_of_what_stays() -> None:
    region = np.zeros((30, 20), dtype=np.float32)  # 8-pixel cells of a 160 x 240 photo
    region[12:20, 7:12] = 1.0  # the square: rows 96-160, columns 56-96 (cells)
    total = float(region.sum()) * 64
    pixels, share = surviving_pixels(region, 8, (0.0, 0.0, 160.0, 240.0))
    assert (pixels, share) == (total, 1.0)
    pixels, share = surviving_pixels(region, 8, (0.0, 0.0, 160.0, 128.0))  # cells 12-15 of 12-19 stay
    assert share == 0.5 and pixels == total / 2
    assert region_box(region, 8, (0.0, 0.0, 160.0, 128.0), SQUARE) == (60.0, 100.0, 96.0, 128.0)
    assert region_box(region, 8, (0.0, 0.0, 160.0, 64.0), SQUARE) is None


@pytest.mark.parametrize("kind", TRAIN_KINDS)
def test_random_reframings_stay_on_the_photo(kind: str) -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        reframe = random_reframe(rng, 160, 240, kind, focus=SQUARE)
        x0, y0, x1, y1 = reframe.crop
        assert 0 <= x0 < x1 <= 160 and 0 <= y0 < y1 <= 240
        assert 0.6 <= reframe.brightness <= 1.4 and 0.6 <= reframe.saturation <= 1.4
        assert reframe.apply(photo()).size == reframe.size


def test_the_evaluation_framings() -> None:
    assert EVAL_FRAMINGS == ("full", "upper_half", "lower_half", "small_256", "zoomed_out")
    assert eval_reframe("upper_half", 550, 826).crop == (0.0, 0.0, 550.0, 413.0)
    assert eval_reframe("lower_half", 550, 826).size == (550, 413)
    assert max(eval_reframe("small_256", 550, 826).size) == 256
    zoomed = eval_reframe("zoomed_out", 550, 826)
    assert zoomed.size == (550, 826) and zoomed.box((0.0, 0.0, 550.0, 826.0)) == (137.5, 206.5, 412.5, 619.5)
    with pytest.raises(ValueError, match="unknown framing"):
        eval_reframe("sideways", 10, 10)


def test_a_reshot_catalogue_photo_keeps_its_product_on_a_street() -> None:
    from model.framing import backdrop_alpha, reshoot

    catalogue = Image.new("RGB", (224, 224), "white")
    catalogue.paste(Image.new("RGB", (100, 140), (30, 60, 200)), (62, 42))  # a blue garment on the backdrop
    alpha = backdrop_alpha(catalogue)
    assert alpha[10, 10] == 0 and alpha[112, 112] == 1  # the backdrop goes, the garment stays
    street = Image.new("RGB", (300, 300), (90, 90, 90))
    shot = reshoot(catalogue, street, np.random.default_rng(0))
    assert max(shot.size) == 256
    pixels = np.asarray(shot).reshape(-1, 3).astype(int)
    blue = (pixels[:, 2] > 150) & (pixels[:, 0] < 100)
    white = pixels.min(1) > 230
    assert blue.mean() > 0.15  # the product is there
    assert white.mean() < 0.05  # its white backdrop is not: the street shows instead
