import math

import pytest
import torch

from model.attention import anchor_points
from model.losses import (
    BOX_PICK_WEIGHT,
    box_loss,
    classification_loss,
    diversity_loss,
    group_presence_loss,
    group_targets,
    localisation_loss,
    total_loss,
)
from model.network import NetworkOutput


def test_classification_loss_by_hand() -> None:
    scores = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    targets = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    # p = (0.5, 0.5) vs p̂ = (0.5, 0.5): 0;  p = (0.75, 0.25) vs (1, 0): 0.0625 + 0.0625.  Mean over 2 images.
    assert math.isclose(float(classification_loss(scores, targets)), 0.0625, rel_tol=1e-6)


def test_asymmetric_loss_ignores_easy_negatives_and_keeps_positives_bce() -> None:
    targets = torch.tensor([[1.0, 0.0, 0.0]])
    easy = torch.tensor([[2.0, -4.0, -3.0]])  # negatives at p < 0.05: no cost, no gradient
    bce_positive = -float(torch.nn.functional.logsigmoid(torch.tensor(2.0))) / 3
    assert math.isclose(float(classification_loss(easy, targets, "asymmetric")), bce_positive, rel_tol=1e-5)
    hard = torch.tensor([[2.0, 3.0, -3.0]], requires_grad=True)  # a confident false positive still costs
    loss = classification_loss(hard, targets, "asymmetric")
    loss.backward()
    assert float(loss.detach()) > bce_positive and float(hard.grad[0, 1]) > 0 and float(hard.grad[0, 2]) == 0


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
    anchors = anchor_points(3, "ring")
    assert torch.isnan(anchors[0]).all()
    torch.testing.assert_close(anchors[1], torch.tensor([0.5, 0.0]))
    transforms = torch.tensor([[[0.7, 0.05, 9.0, 9.0], [0.3, -0.6, 0.5, 0.0], [0.2, 0.2, -0.5, 1.0]]])
    scale = 0.2**2 + 0.1**2  # |s| beyond 0.5: 0.7 and -0.6
    anchor = 0.5 * (0.0 + (0.0**2 + 1.0**2))  # step 1 has no anchor; steps 2, 3 at (0.5, 0), (-0.5, 0)
    positive = 0.05 + 0.7  # s below 0.1: 0.05 and -0.6
    expected = scale + 0.01 * anchor + 0.1 * positive
    assert math.isclose(float(localisation_loss(transforms, anchors)), expected, rel_tol=1e-5)


def test_grid_anchors_cover_the_photo() -> None:
    anchors = anchor_points(9, "grid")
    assert not anchors.isnan().any()
    assert {round(float(v), 3) for v in anchors[:, 0]} == {-0.667, 0.0, 0.667}
    assert {round(float(v), 3) for v in anchors[:, 1]} == {-0.667, 0.0, 0.667}  # head to feet


def test_box_loss_matches_items_to_crops() -> None:
    # crop 0 sits exactly on the bag, crop 1 exactly on the shoes; the scores already pick them
    transforms = torch.tensor([[[0.2, 0.1, 0.5, 0.0], [0.3, 0.1, 0.0, 0.8], [0.5, 0.5, 0.0, 0.0]]], requires_grad=True)
    scores = torch.tensor([[[5.0, 0.0], [0.0, 5.0], [0.0, 0.0]]], requires_grad=True)  # (B, K, C): bag, shoes
    items = [[(1, torch.tensor([-0.3, 0.7, 0.3, 0.9]), None), (0, torch.tensor([0.3, -0.1, 0.7, 0.1]), None)]]
    perfect = box_loss(scores, transforms, items)
    pick = -torch.log_softmax(torch.tensor([5.0, 0.0, 0.0]), 0)[0]  # the right crop's share among the K crops
    assert math.isclose(float(perfect.detach()), BOX_PICK_WEIGHT * float(pick), rel_tol=1e-3)  # only the pick term left
    # moved off its item, the shoes crop costs more and the gradient pulls it back down
    moved = transforms.detach().clone()
    moved[0, 1, 3] = 0.4
    moved.requires_grad_(True)
    loss = box_loss(scores, moved, items)
    loss.backward()
    assert float(loss.detach()) > float(perfect.detach()) and float(moved.grad[0, 1, 3]) < 0
    assert box_loss(scores, transforms, [[]]) == 0  # photos without boxes add nothing


def test_centre_term_pulls_a_crop_off_the_floor_between_two_shoes_onto_one() -> None:
    # Two shoes at the bottom of an 8 x 8 frame: columns 1-2 and 5-6 of row 7; the pair's box is
    # centred on the floor between them (column 4's left edge, x = 0).
    region = torch.zeros(8, 8)
    region[7, 1:3] = region[7, 5:7] = 1.0
    box = torch.tensor([-0.75, 0.75, 0.75, 1.0])
    items = [[(0, box, region)]]
    scores = torch.zeros(1, 1, 1)
    between = torch.tensor([[[0.75, 0.125, 0.0, 0.875]]], requires_grad=True)  # exactly the pair's box
    without = box_loss(scores, between, items, centre_weight=0.0)
    with_centre = box_loss(scores, between, items, centre_weight=1.0)
    assert float(with_centre.detach()) > float(without.detach()) + 0.5  # the floor is not the item
    on_shoe = torch.tensor([[[0.75, 0.125, -0.5, 0.875]]])  # centred on the left shoe
    assert float(box_loss(scores, on_shoe, items, centre_weight=1.0) - box_loss(scores, on_shoe, items)) < 0.2
    # a centre just off a shoe is pulled onto it (the centre term's own gradient)
    near = torch.tensor([[[0.75, 0.125, -0.3, 0.875]]], requires_grad=True)
    (box_loss(scores, near, items, centre_weight=1.0) - box_loss(scores, near, items)).backward()
    assert float(near.grad[0, 0, 2]) > 0  # descent moves x towards the left shoe (negative x)


def test_total_loss_weights() -> None:
    out = NetworkOutput(
        scores=torch.zeros(1, 2),
        global_embedding=torch.zeros(1, 4),
        step_scores=torch.zeros(1, 2, 2),
        maps=torch.full((1, 2, 2, 2), 0.25),
        transforms=torch.tensor([[[0.5, 0.5, 0.0, 0.0], [0.5, 0.5, 0.5, 0.0]]]),
    )
    terms = total_loss(out, torch.tensor([[1.0, 0.0]]), anchors=anchor_points(2, "ring"))
    expected = terms["cls"] + 0.01 * terms["div"] + 0.01 * terms["loc"]
    torch.testing.assert_close(terms["loss"], expected)
    assert math.isclose(float(terms["div"]), 0.25, rel_tol=1e-6)


def test_group_presence_loss_by_hand() -> None:
    # Labels 0 and 1 are one group (shoes, heels), label 2 another. Both of the first at p = 0.5:
    # the group's presence is 1 - 0.5 * 0.5 = 0.75; the other group at p = 0.5 and absent.
    membership = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    scores = torch.zeros(1, 3, requires_grad=True)
    targets = torch.tensor([[0.0, 1.0, 0.0]])  # the photo was tagged "heels" only: its group is present
    loss = group_presence_loss(scores, targets, membership)
    assert math.isclose(float(loss.detach()), -(math.log(0.75) + math.log(0.5)) / 2, rel_tol=1e-5)
    loss.backward()
    # "shoes" is not tagged, yet the group's loss raises it as much as "heels": same item, either name
    assert float(scores.grad[0, 0]) < 0 and math.isclose(float(scores.grad[0, 0]), float(scores.grad[0, 1]))
    assert float(scores.grad[0, 2]) > 0
    confident = group_presence_loss(torch.tensor([[30.0, -30.0, -30.0]]), targets, membership)
    assert math.isfinite(float(confident)) and float(confident) < 1e-5  # no log(0) at saturation
    missed = torch.full((1, 3), -20.0, requires_grad=True)  # the group is there, confidently missed
    group_presence_loss(missed, targets, membership).backward()
    assert float(missed.grad[0, 0]) < 0 and float(missed.grad[0, 1]) < 0  # still taught to find it
    half = group_presence_loss(torch.zeros(1, 3, dtype=torch.bfloat16), targets, membership)  # CUDA autocast
    assert half.dtype == torch.float32 and math.isclose(float(half), float(loss.detach()), rel_tol=1e-3)


def test_total_loss_adds_the_weighted_group_term_and_refuses_softmax() -> None:
    out = NetworkOutput(scores=torch.tensor([[1.0, -1.0]]), global_embedding=torch.zeros(1, 4))
    targets, membership = torch.tensor([[1.0, 0.0]]), torch.eye(2)
    terms = total_loss(out, targets, "sigmoid", group_weight=0.5, group_membership=membership)
    torch.testing.assert_close(terms["loss"], terms["cls"] + 0.5 * terms["group"])
    with pytest.raises(ValueError, match="sigmoid"):
        total_loss(out, targets, "softmax", group_weight=0.5, group_membership=membership)


@pytest.mark.parametrize("kind", ["sigmoid", "asymmetric"])
def test_unknown_targets_cost_nothing_and_give_no_gradient(kind: str) -> None:
    scores = torch.tensor([[2.0, -1.0, 0.5], [0.3, 0.2, -2.0]], requires_grad=True)
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    known = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    loss = classification_loss(scores, targets, kind, known)
    loss.backward()
    assert scores.grad is not None and float(scores.grad[0, 2]) == 0.0 and float(scores.grad[0, 0]) != 0.0
    # the mean over the five known entries: what the loss of those entries alone gives
    flat = classification_loss(scores[known.bool()][None], targets[known.bool()][None], kind)
    torch.testing.assert_close(loss, flat)
    torch.testing.assert_close(
        classification_loss(scores, targets, kind, torch.ones_like(known)), classification_loss(scores, targets, kind)
    )
    with pytest.raises(ValueError, match="every label known"):
        classification_loss(scores, targets, "softmax", known)


def test_a_groups_presence_is_known_from_one_present_label_or_all_absent_ones() -> None:
    # labels shoes, heels (footwear), top (tops), bag (bags)
    membership = torch.tensor([[1.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    targets = torch.tensor([[0.0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0]])
    known = torch.tensor(
        [
            [0.0, 1, 0, 0],  # heels present, nothing else known: footwear present, the rest unknown
            [1, 0, 1, 1],  # shoes alone on white: footwear present, tops and bags absent
            [1, 1, 1, 0],  # footwear's labels both absent: footwear absent; bags unknown
        ]
    )
    present, group_known = group_targets(targets, membership, known)
    assert present.tolist() == [[1, 0, 0], [1, 0, 0], [0, 1, 0]]
    assert group_known.tolist() == [[1, 0, 0], [1, 1, 1], [1, 1, 0]]
    scores = torch.zeros(3, 4, requires_grad=True)
    group_presence_loss(scores, targets, membership, known).backward()
    assert scores.grad is not None
    assert float(scores.grad[0, 2]) == 0.0 and float(scores.grad[0, 3]) == 0.0  # unknown groups: no gradient
    assert float(scores.grad[1, 2]) > 0  # a known absent top is pushed down
