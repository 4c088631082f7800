"""The look head: unit-length part vectors of the learnt projection and the colour histogram, the
same on every runtime."""

from pathlib import Path

import numpy as np
import pytest
import torch

from model.look import WHOLE, colour_histogram, palette, pooled_crop_features, srgb_to_lab
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


def test_pooled_crop_features_are_each_levels_mean_and_max_inside_the_crop() -> None:
    maps = [torch.zeros(1, 2, 8, 6), torch.zeros(1, 3, 4, 3)]
    maps[0][0, 1, :4] = 1.0  # the top half of the finest level's second channel
    top, bottom = torch.tensor([[[1.0, 0.5, 0.0, -0.5]]]), torch.tensor([[[1.0, 0.5, 0.0, 0.5]]])
    features = pooled_crop_features(maps, torch.cat([top, bottom], 1))
    assert features.shape == (1, 2, 2 * (2 + 3))
    # the second channel's mean: about 1 in the top crop, 0 in the bottom one (bilinear at the edge)
    assert float(features[0, 0, 1]) > 0.9 and float(features[0, 1, 1]) < 0.1


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


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_the_look_exports(runtime: str, tmp_path: Path) -> None:
    model = with_look()
    assert "part_looks" in served_fields(model) and "part_embeddings" not in served_fields(model)
    forward = make_forward(model, runtime, "b" * 64, tmp_path)  # type: ignore[arg-type]
    images = torch.rand(3, 3, 64, 48, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = model(images)
    got = forward(images)
    for name in ("part_looks", "whole_look", "scores"):
        torch.testing.assert_close(getattr(got, name), getattr(expected, name), atol=1e-4, rtol=1e-4, msg=name)
