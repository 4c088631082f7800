"""The look head: unit-length part vectors of the learnt projection and the colour histogram, the
same on every runtime."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.attention import crop_grid
from model.look import (
    CENTRE_SIGMA,
    COLOUR_GRID,
    COLOUR_SIGMA,
    FEATURE_GRID,
    WHOLE,
    colour_histogram,
    mix_product_look,
    palette,
    pooled_crop_features,
    sample_crops,
    skin_likeness,
    srgb_to_lab,
)
from model.network import PartAttentionNetwork, query_parts, select_parts
from model.runtime import make_forward, served_fields
from tests.helpers import tiny_config


def with_look(**overrides: object) -> PartAttentionNetwork:
    torch.manual_seed(0)
    return PartAttentionNetwork(tiny_config(look_dim=16, look_hidden=32, look_colour_weight=0.3, **overrides)).eval()


def test_srgb_to_lab_matches_the_evaluations_colour_code() -> None:
    from indexer.colours import srgb_to_lab as reference

    rgb = np.random.default_rng(0).integers(0, 256, (50, 3))
    torch.testing.assert_close(
        srgb_to_lab(torch.tensor(rgb / 255.0, dtype=torch.float64)), torch.tensor(reference(rgb)), atol=1e-3, rtol=0
    )


def test_the_colour_histogram_sees_the_crops_colour_and_not_the_white_backdrop() -> None:
    image = torch.ones(1, 3, 64, 48)  # white, as a catalogue photo's backdrop
    image[0, :, 16:48, 12:36] = torch.tensor([0.8, 0.1, 0.1])[:, None, None]  # a red garment in the middle
    whole = torch.tensor([[WHOLE]])
    histogram = colour_histogram(image, whole, palette())[0, 0]
    torch.testing.assert_close(histogram.norm(), torch.tensor(1.0))
    red = torch.argmin(((palette() - srgb_to_lab(torch.tensor([0.8, 0.1, 0.1]))) ** 2).sum(-1))
    assert int(histogram.argmax()) == int(red)
    white = torch.argmin(((palette() - srgb_to_lab(torch.ones(3))) ** 2).sum(-1))
    assert float(histogram[white]) < 0.01  # the white around it is left out


SKIN = (0.88, 0.67, 0.55)  # a light skin tone (Cr 147, Cb 111: inside the box)


def test_skin_coloured_pixels_count_less_and_a_crop_of_one_colour_keeps_its_histogram() -> None:
    tones = torch.tensor([SKIN, (0.55, 0.36, 0.26), (0.1, 0.2, 0.8), (0.1, 0.1, 0.1), (0.9, 0.9, 0.9)])
    likeness = skin_likeness(tones)
    assert float(likeness[0]) == 1.0 and float(likeness[1]) > 0.9  # light and dark skin
    assert likeness[2:].max() == 0.0  # blue, black, light grey: not skin
    whole = torch.tensor([[WHOLE]])
    half = torch.ones(1, 3, 64, 48) * torch.tensor(SKIN).view(1, 3, 1, 1)  # bare arms beside...
    half[0, :, :, 24:] = torch.tensor([0.1, 0.2, 0.8]).view(3, 1, 1)  # ...a blue sleeve
    blue = torch.argmin(((palette() - srgb_to_lab(torch.tensor([0.1, 0.2, 0.8]))) ** 2).sum(-1))
    shares = [float(colour_histogram(half, whole, palette(), weight)[0, 0, blue]) for weight in (1.0, 0.5, 0.3)]
    assert shares[0] < shares[1] < shares[2]  # the garment's colour takes more of the histogram
    one_colour = torch.ones(1, 3, 64, 48) * torch.tensor(SKIN).view(1, 3, 1, 1)
    torch.testing.assert_close(
        colour_histogram(one_colour, whole, palette(), 0.3), colour_histogram(one_colour, whole, palette())
    )
    with pytest.raises(ValueError, match="look_skin_weight"):
        tiny_config(look_skin_weight=1.5)


def test_pooled_crop_features_are_each_levels_mean_and_max_inside_the_crop() -> None:
    maps = [torch.zeros(1, 2, 8, 6), torch.zeros(1, 3, 4, 3)]
    maps[0][0, 1, :4] = 1.0  # the top half of the finest level's second channel
    top, bottom = torch.tensor([[[1.0, 0.5, 0.0, -0.5]]]), torch.tensor([[[1.0, 0.5, 0.0, 0.5]]])
    features = pooled_crop_features(maps, torch.cat([top, bottom], 1))
    assert features.shape == (1, 2, 2 * (2 + 3))
    # the second channel's mean: about 1 in the top crop, 0 in the bottom one (bilinear at the edge)
    assert float(features[0, 0, 1]) > 0.9 and float(features[0, 1, 1]) < 0.1


def direct_crops(maps: torch.Tensor, crops: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """The straightforward form: one copy of the map per crop, each sampled on its own grid; (B*K, C, rows, cols)."""
    copies = maps.repeat_interleave(crops.shape[1], 0)
    return F.grid_sample(copies, crop_grid(crops.flatten(0, 1), rows, cols), align_corners=False, padding_mode="border")


def test_every_crop_is_sampled_as_if_cut_from_its_own_copy_of_the_map() -> None:
    maps = torch.rand(2, 5, 12, 8, generator=torch.Generator().manual_seed(0))
    crops = torch.rand(2, 3, 4, generator=torch.Generator().manual_seed(1)) - 0.5
    got = sample_crops(maps, crops, 6, 4, padding_mode="border")  # (B, C, K, rows, cols)
    assert got.shape == (2, 5, 3, 6, 4)
    torch.testing.assert_close(
        got.permute(0, 2, 1, 3, 4).flatten(0, 1), direct_crops(maps, crops, 6, 4), atol=0, rtol=0
    )
    # each level's mean and max of each crop, in the order (crop, [level 0 mean, max, level 1 mean, max])
    levels = [maps, torch.rand(2, 7, 6, 4, generator=torch.Generator().manual_seed(2))]
    expected = []
    for level in levels:
        samples = F.grid_sample(
            level.repeat_interleave(3, 0), crop_grid(crops.flatten(0, 1), *FEATURE_GRID), align_corners=False
        )
        expected += [samples.mean((-2, -1)), samples.amax((-2, -1))]
    torch.testing.assert_close(pooled_crop_features(levels, crops), torch.cat(expected, -1).view(2, 3, -1))


def test_the_colour_histogram_is_the_soft_palette_share_of_each_pixel() -> None:
    # against the direct form: every pixel's distance to every palette colour, then a softmax
    images = torch.rand(2, 3, 48, 32, generator=torch.Generator().manual_seed(2)) * 0.9  # no backdrop pixel
    crops = torch.tensor([[WHOLE, (0.5, 0.4, 0.2, -0.3)]] * 2)
    rows, cols = COLOUR_GRID
    pixels = direct_crops(images, crops, rows, cols).flatten(2).transpose(1, 2)  # (B*K, N, 3)
    distance = (srgb_to_lab(pixels).unsqueeze(-2) - palette()).pow(2).sum(-1)  # (B*K, N, P)
    share = torch.softmax(-distance / (2 * COLOUR_SIGMA**2), -1)
    ys = ((torch.arange(rows) * 2 + 1) / rows - 1).view(rows, 1)
    xs = ((torch.arange(cols) * 2 + 1) / cols - 1).view(1, cols)
    centre = torch.exp(-(ys**2 + xs**2) / (2 * CENTRE_SIGMA**2)).flatten()
    expected = F.normalize((share * centre.view(-1, 1)).sum(-2).sqrt(), dim=-1).view(2, 2, -1)
    torch.testing.assert_close(colour_histogram(images, crops, palette()), expected, atol=1e-6, rtol=0)
    # float64 photos too (the palette is float32)
    torch.testing.assert_close(
        colour_histogram(images.double(), crops.double(), palette()), expected.double(), atol=1e-6, rtol=0
    )


def test_parts_are_searched_by_their_look() -> None:
    model = with_look()
    out = model(torch.rand(2, 3, 64, 48))
    assert out.part_looks is not None and out.whole_look is not None
    length = 16 + palette().shape[0]
    assert out.part_looks.shape == (2, 3, length) == (2, 3, model.config.part_dim)
    torch.testing.assert_close(out.part_looks.norm(dim=-1), torch.ones(2, 3))
    torch.testing.assert_close(out.whole_look.norm(dim=-1), torch.ones(2))
    # the colour takes its share of the vector's squared length
    torch.testing.assert_close(out.part_looks[..., 16:].pow(2).sum(-1), torch.full((2, 3), 0.3))
    (part,) = select_parts(model, out, 0, labels=["red"])
    torch.testing.assert_close(part.embedding, out.part_looks[0, part.step])
    assert all(p.embedding.shape == (length,) for p in query_parts(model, out, 1, threshold=0.0))


@pytest.mark.parametrize("share", [0.0, 0.6, 1.0])
def test_a_catalogue_photo_is_indexed_by_its_whole_and_crop_looks_mixed(share: float) -> None:
    from indexer.embed import product_vector

    model = with_look(look_whole_share=share)
    with torch.inference_mode():  # as the indexer runs it
        out = model(torch.rand(1, 3, 64, 48))
        assert out.whole_look is not None
        (part,) = select_parts(model, out, 0, labels=["red"])
        vector = torch.from_numpy(product_vector(model, out, 0, part))
    whole, crop = out.whole_look[0], part.embedding
    expected = F.normalize(share * whole + (1 - share) * crop, dim=-1)
    torch.testing.assert_close(vector, expected)
    torch.testing.assert_close(vector.norm(), torch.tensor(1.0))
    if 0 < share < 1:  # nearer the side with the larger share, and between the two
        assert float(vector @ whole) > float(vector @ crop) > float(whole @ crop)


def test_mixing_the_looks_takes_either_side_alone_at_its_ends() -> None:
    whole, crop = F.normalize(torch.randn(4, 8), dim=-1), F.normalize(torch.randn(4, 8), dim=-1)
    assert torch.equal(mix_product_look(whole, crop, 1.0), whole)
    assert torch.equal(mix_product_look(whole, crop, 0.0), crop)
    with pytest.raises(ValueError, match="look_whole_share"):
        tiny_config(look_whole_share=1.5)


@pytest.mark.parametrize("skin_weight", [1.0, 0.5])
@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_the_look_exports(runtime: str, skin_weight: float, tmp_path: Path) -> None:
    model = with_look(look_skin_weight=skin_weight)
    assert "part_looks" in served_fields(model) and "part_embeddings" not in served_fields(model)
    forward = make_forward(model, runtime, "b" * 64, tmp_path)  # type: ignore[arg-type]
    images = torch.rand(3, 3, 64, 48, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = model(images)
    got = forward(images)
    for name in ("part_looks", "whole_look", "scores"):
        torch.testing.assert_close(getattr(got, name), getattr(expected, name), atol=1e-4, rtol=1e-4, msg=name)
