"""Losses of Verma et al., ICIP 2018 (eq. 1-3), after RDAR (Wang et al., ICCV 2017), and the box
supervision of the box-supervised variant.

L = L_cls + λ1 L_div + λ2 L_loc with λ1 = λ2 = 0.01 (the paper), + λ_box L_box where a photo has
item boxes (the odd-numbered pixel-level CCP photos of the training split).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torchvision.ops import generalized_box_iou_loss

from model.network import NetworkOutput

DIVERSITY_WEIGHT = 0.01  # λ1
LOCALISATION_WEIGHT = 0.01  # λ2
ANCHOR_WEIGHT = 0.01  # RDAR's weights inside L_loc
POSITIVE_WEIGHT = 0.1
BOX_L1_WEIGHT = 2.0  # inside L_box, after DETR's balance of L1, GIoU and classification
BOX_GIOU_WEIGHT = 1.0
BOX_PICK_WEIGHT = 1.0

# A photo's items: (label index, box (x0, y0, x1, y1) in [-1, 1] map units, the item's coarse
# region on the input frame (H', W') in [0, 1], or None where the photo has no region).
Item = tuple[int, torch.Tensor, torch.Tensor | None]


ASYMMETRIC_FOCUS = 4.0  # γ− of the asymmetric loss: easy negatives fade
ASYMMETRIC_MARGIN = 0.05  # m: negatives scored below it cost nothing


def masked_mean(values: torch.Tensor, known: torch.Tensor | None) -> torch.Tensor:
    """The mean of ``values`` over the entries whose target is known (all when ``known`` is None)."""
    if known is None:
        return values.mean()
    known = known.to(values)
    return (values * known).sum() / known.sum().clamp_min(1.0)


def asymmetric_loss(scores: torch.Tensor, targets: torch.Tensor, known: torch.Tensor | None = None) -> torch.Tensor:
    """Ben-Baruch, Ridnik et al., "Asymmetric Loss For Multi-Label Classification", ICCV 2021, with
    γ+ = 0: −y log p − (1 − y) p_m^γ− log(1 − p_m), p_m = max(p − m, 0); mean over the known labels.
    A photo has ~5 of 56 labels: most negatives are easy, and BCE spends its gradient on them."""
    p = scores.sigmoid()
    shifted = (p - ASYMMETRIC_MARGIN).clamp_min(0)
    positive = targets * F.logsigmoid(scores)
    negative = (1 - targets) * shifted.pow(ASYMMETRIC_FOCUS) * torch.log1p(-shifted.clamp_max(1 - 1e-6))
    return masked_mean(-(positive + negative), known)


def classification_loss(
    scores: torch.Tensor, targets: torch.Tensor, kind: str = "softmax", known: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax: (1/N) Σ_i Σ_c (p_i^c − p̂_i^c)², p = softmax(s), p̂ = y/‖y‖₁ (RDAR). sigmoid: BCE.
    asymmetric: model.losses.asymmetric_loss. ``known`` (B, C): 1 where a target is known (partial
    labels: a reframed photo, a product photo); the sigmoid losses average over those only."""
    if kind == "sigmoid":
        return masked_mean(F.binary_cross_entropy_with_logits(scores, targets, reduction="none"), known)
    if kind == "asymmetric":
        return asymmetric_loss(scores, targets, known)
    if kind != "softmax":
        raise ValueError(f"unknown classification loss {kind!r}")
    if known is not None and not bool(known.all()):
        raise ValueError("the softmax loss needs every label known: train partial labels with sigmoid scores")
    target_dist = targets / targets.sum(-1, keepdim=True).clamp_min(1.0)
    return ((scores.softmax(-1) - target_dist) ** 2).sum(-1).mean()


def group_targets(
    targets: torch.Tensor, membership: torch.Tensor, known: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, G) group presence and whether it is known: a group is present where one of its labels is
    known present, absent where all of its labels are known absent, unknown otherwise."""
    targets, membership = targets.float(), membership.float()
    known = torch.ones_like(targets) if known is None else known.float()
    present = ((targets * known) @ membership).clamp_max(1.0)
    all_absent = ((1 - targets) * known) @ membership >= membership.sum(0) - 0.5
    return present, ((present > 0) | all_absent).float()


def group_presence_loss(
    scores: torch.Tensor, targets: torch.Tensor, membership: torch.Tensor, known: torch.Tensor | None = None
) -> torch.Tensor:
    """BCE of each item group's presence, the group's probability being that any of its labels is
    present: P_g = 1 − Π_{c∈g} (1 − σ(s_c)) (what the service ranks a photo's parts by,
    model.labels.group_probabilities). ``membership`` is the (C, G) 0/1 label-to-group matrix.
    CCP's labels often name one item in two ways (`shoes`, `heels`); its group is the same. With
    partial labels (``known``), groups whose presence is unknown add nothing (group_targets)."""
    scores, membership = scores.float(), membership.float()  # bfloat16 under CUDA autocast
    log_absent = F.logsigmoid(-scores) @ membership  # (B, G) log(1 − P_g), stable for confident scores
    # Clamped only where P_g underflows to 0, so a confidently missed group still has a gradient.
    log_present = torch.log(-torch.expm1(log_absent.clamp_max(-torch.finfo(torch.float32).tiny)))
    present, group_known = group_targets(targets, membership, known)
    return masked_mean(
        -(present * log_present + (1 - present) * log_absent), group_known if known is not None else None
    )


def codeword_usage_loss(share: torch.Tensor) -> torch.Tensor:
    """KL(mean assignment || uniform) over the codewords: 0 when every codeword takes an equal share
    of the cells, log K when one takes them all (the encoding collapsing to pooling)."""
    return (share * (share * share.numel()).clamp_min(1e-12).log()).sum()


def diversity_loss(maps: torch.Tensor) -> torch.Tensor:
    """1/(K−1) Σ_{k=2..K} Σ_i I_{k−1,i} I_{k,i}: overlap of consecutive attention maps (batch mean)."""
    if maps.shape[1] < 2:
        return maps.new_zeros(())
    overlap = (maps[:, 1:] * maps[:, :-1]).sum((-2, -1))  # (B, K-1)
    return overlap.mean(1).mean()


def localisation_loss(transforms: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """RDAR's L_loc over (B, K, 4) transforms (s_x, s_y, t_x, t_y) and (K, 2) anchors c_k (NaN:
    none), batch mean. scale: Σ_k max(|s|−0.5, 0)²; anchor: 0.01 Σ_k ½‖t_k − c_k‖²;
    positive: 0.1 Σ_k max(0.1 − s, 0)."""
    scale, shift = transforms[..., :2], transforms[..., 2:]
    scale_term = (F.relu(scale.abs() - 0.5) ** 2).sum((-2, -1))
    anchors = anchors.to(transforms)
    has_anchor = ~anchors[:, 0].isnan()
    anchor_term = 0.5 * ((shift[:, has_anchor] - anchors[has_anchor]) ** 2).sum((-2, -1))
    positive_term = F.relu(0.1 - scale).sum((-2, -1))
    return (scale_term + ANCHOR_WEIGHT * anchor_term + POSITIVE_WEIGHT * positive_term).mean()


def transforms_to_corners(transforms: torch.Tensor) -> torch.Tensor:
    """(..., 4) (s_x, s_y, t_x, t_y) -> (..., 4) (x0, y0, x1, y1) in [-1, 1] map coordinates."""
    sx, sy, tx, ty = transforms.unbind(-1)
    sx, sy = sx.abs(), sy.abs()
    return torch.stack([tx - sx, ty - sy, tx + sx, ty + sy], -1)


def on_item(region: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """How much of the item lies at ``centre`` (x, y in [-1, 1]): its region, with a halo of one
    cell (its 3 x 3 blur where that is larger) so that a centre just off the item still has a
    gradient towards it, sampled bilinearly."""
    region = region[None, None]
    haloed = torch.maximum(region, F.avg_pool2d(region, 3, stride=1, padding=1))
    return F.grid_sample(haloed, centre.view(1, 1, 1, 2), align_corners=False).view(())


def box_loss(
    step_scores: torch.Tensor, transforms: torch.Tensor, items: list[list[Item]], centre_weight: float = 0.0
) -> torch.Tensor:
    """Box supervision: each photo's items (label c, (x0, y0, x1, y1) in [-1, 1] map coordinates)
    are matched one-to-one to crops (Hungarian, DETR's cost), and each matched crop is pulled onto
    its item's box (L1 + GIoU) and made the step that scores c highest among the K crops, which is
    how a part's crop is picked at serving time. Photos without items add nothing.

    ``centre_weight`` > 0 also pulls a matched crop's centre onto the item's own pixels where the
    item has a region: the centre of a pair of shoes' box is the floor between them."""
    boxes = transforms_to_corners(transforms)  # (B, K, 4)
    pick = step_scores.log_softmax(1)  # (B, K, C): over the crops, per label
    total, count = step_scores.new_zeros(()), 0
    for b, photo_items in enumerate(items):
        if not photo_items:
            continue
        labels = torch.tensor([c for c, _, _ in photo_items], device=boxes.device)
        targets = torch.stack([box for _, box, _ in photo_items]).to(boxes)  # (n, 4)
        l1 = torch.cdist(targets, boxes[b], p=1)  # (n, K)
        cost = BOX_L1_WEIGHT * l1 - BOX_PICK_WEIGHT * pick[b, :, labels].t()
        rows, cols = linear_sum_assignment(cost.detach().float().cpu().numpy())
        rows_t, cols_t = torch.as_tensor(rows, device=boxes.device), torch.as_tensor(cols, device=boxes.device)
        matched = boxes[b, cols_t]
        total = total + (
            BOX_L1_WEIGHT * F.l1_loss(matched, targets[rows_t], reduction="sum")
            + BOX_GIOU_WEIGHT * generalized_box_iou_loss(matched, targets[rows_t], reduction="sum")
            - BOX_PICK_WEIGHT * pick[b, cols_t, labels[rows_t]].sum()
        )
        if centre_weight > 0:
            for row, col in zip(rows.tolist(), cols.tolist(), strict=True):
                region = photo_items[row][2]
                if region is not None:
                    total = total + centre_weight * (1 - on_item(region.to(boxes), transforms[b, col, 2:]))
        count += len(rows)
    return total / max(count, 1)


def total_loss(
    out: NetworkOutput,
    targets: torch.Tensor,
    kind: str = "softmax",
    anchors: torch.Tensor | None = None,
    items: list[list[Item]] | None = None,
    box_weight: float = 0.0,
    usage_weight: float = 0.0,
    centre_weight: float = 0.0,
    group_weight: float = 0.0,
    group_membership: torch.Tensor | None = None,
    known: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """All terms and their weighted sum under ``"loss"``; the baseline has only L_cls. L_box is
    added where ``box_weight`` > 0 and ``items`` gives some photos' item boxes; the codeword-usage
    term where ``usage_weight`` > 0; the groups' presence (of the fused sigmoid scores) where
    ``group_weight`` > 0, given the (C, G) ``group_membership``. ``known`` (B, C) marks the targets
    that are known (None: all); the classification terms skip the others."""
    terms = {"cls": classification_loss(out.scores, targets, kind, known)}
    loss = terms["cls"]
    if group_weight > 0:
        if kind == "softmax" or group_membership is None:
            raise ValueError("the group presence term needs sigmoid scores and the label-to-group matrix")
        terms["group"] = group_presence_loss(out.scores, targets, group_membership.to(out.scores), known)
        loss = loss + group_weight * terms["group"]
    if out.whole_scores is not None and out.crop_scores is not None:
        # Fused scores: each branch also classifies on its own, so the crops still name their parts.
        terms["crop_cls"] = classification_loss(out.crop_scores, targets, kind, known)
        terms["whole_cls"] = classification_loss(out.whole_scores, targets, kind, known)
        loss = loss + terms["crop_cls"] + terms["whole_cls"]
    if out.maps is not None and out.transforms is not None and out.step_scores is not None:
        if anchors is None:
            raise ValueError("the attention losses need the model's anchors (model.attention.config_anchors)")
        terms["div"] = diversity_loss(out.maps)
        terms["loc"] = localisation_loss(out.transforms, anchors)
        loss = loss + DIVERSITY_WEIGHT * terms["div"] + LOCALISATION_WEIGHT * terms["loc"]
        if usage_weight > 0 and out.codeword_share is not None:
            terms["usage"] = codeword_usage_loss(out.codeword_share)
            loss = loss + usage_weight * terms["usage"]
        if box_weight > 0 and items is not None:
            terms["box"] = box_loss(out.step_scores, out.transforms, items, centre_weight)
            loss = loss + box_weight * terms["box"]
    terms["loss"] = loss
    return terms
