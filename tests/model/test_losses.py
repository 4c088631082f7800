import math

import torch

from model.attention import anchor_points
from model.losses import classification_loss, diversity_loss, localisation_loss, total_loss
from model.network import NetworkOutput


def test_classification_loss_by_hand() -> None:
    scores = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    targets = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    # p = (0.5, 0.5) vs p̂ = (0.5, 0.5): 0;  p = (0.75, 0.25) vs (1, 0): 0.0625 + 0.0625.  Mean over 2 images.
    assert math.isclose(float(classification_loss(scores, targets)), 0.0625, rel_tol=1e-6)


def test_classification_loss_sigmoid_option_is_bce() -> None:
    scores, targets = torch.tensor([[0.0]]), torch.tensor([[1.0]])
    assert math.isclose(float(classification_loss(scores, targets, "sigmoid")), math.log(2), rel_tol=1e-6)


def test_diversity_loss_by_hand() -> None:
    a = torch.tensor([[0.5, 0.5], [0.0, 0.0]])
    b = torch.tensor([[0.5, 0.0], [0.5, 0.0]])
    c = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    maps = torch.stack([a, b, c])[None]  # (1, K=3, 2, 2)
    # overlaps: <a, b> = 0.25, <b, c> = 0 -> (0.25 + 0) / (K - 1)
    assert math.isclose(float(diversity_loss(maps)), 0.125, rel_tol=1e-6)


def test_localisation_loss_by_hand() -> None:
    anchors = anchor_points(3)
    assert torch.isnan(anchors[0]).all()
    torch.testing.assert_close(anchors[1], torch.tensor([0.5, 0.0]))
    transforms = torch.tensor([[[0.7, 0.05, 9.0, 9.0], [0.3, -0.6, 0.5, 0.0], [0.2, 0.2, -0.5, 1.0]]])
    scale = 0.2**2 + 0.1**2  # |s| beyond 0.5: 0.7 and -0.6
    anchor = 0.5 * (0.0 + (0.0**2 + 1.0**2))  # step 1 has no anchor; steps 2, 3 at (0.5, 0), (-0.5, 0)
    positive = 0.05 + 0.7  # s below 0.1: 0.05 and -0.6
    expected = scale + 0.01 * anchor + 0.1 * positive
    assert math.isclose(float(localisation_loss(transforms)), expected, rel_tol=1e-5)


def test_total_loss_weights() -> None:
    out = NetworkOutput(
        scores=torch.zeros(1, 2),
        global_embedding=torch.zeros(1, 4),
        maps=torch.full((1, 2, 2, 2), 0.25),
        transforms=torch.tensor([[[0.5, 0.5, 0.0, 0.0], [0.5, 0.5, 0.5, 0.0]]]),
    )
    terms = total_loss(out, torch.tensor([[1.0, 0.0]]))
    expected = terms["cls"] + 0.01 * terms["div"] + 0.01 * terms["loc"]
    torch.testing.assert_close(terms["loss"], expected)
    assert math.isclose(float(terms["div"]), 0.25, rel_tol=1e-6)
