"""Losses of Verma et al., ICIP 2018 (eq. 1-3), after RDAR (Wang et al., ICCV 2017).

L = L_cls + λ1 L_div + λ2 L_loc with λ1 = λ2 = 0.01.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.attention import anchor_points
from model.network import NetworkOutput

DIVERSITY_WEIGHT = 0.01  # λ1
LOCALISATION_WEIGHT = 0.01  # λ2
ANCHOR_WEIGHT = 0.01  # RDAR's weights inside L_loc
POSITIVE_WEIGHT = 0.1


def classification_loss(scores: torch.Tensor, targets: torch.Tensor, kind: str = "softmax") -> torch.Tensor:
    """softmax: (1/N) Σ_i Σ_c (p_i^c − p̂_i^c)², p = softmax(s), p̂ = y/‖y‖₁ (RDAR). sigmoid: BCE."""
    if kind == "sigmoid":
        return F.binary_cross_entropy_with_logits(scores, targets)
    if kind != "softmax":
        raise ValueError(f"unknown classification loss {kind!r}")
    target_dist = targets / targets.sum(-1, keepdim=True).clamp_min(1.0)
    return ((scores.softmax(-1) - target_dist) ** 2).sum(-1).mean()


def diversity_loss(maps: torch.Tensor) -> torch.Tensor:
    """1/(K−1) Σ_{k=2..K} Σ_i I_{k−1,i} I_{k,i}: overlap of consecutive attention maps (batch mean)."""
    if maps.shape[1] < 2:
        return maps.new_zeros(())
    overlap = (maps[:, 1:] * maps[:, :-1]).sum((-2, -1))  # (B, K-1)
    return overlap.mean(1).mean()


def localisation_loss(transforms: torch.Tensor, anchor_radius: float = 0.5) -> torch.Tensor:
    """RDAR's L_loc over (B, K, 4) transforms (s_x, s_y, t_x, t_y), batch mean.

    scale: Σ_k max(|s|−0.5, 0)²; anchor: 0.01 Σ_k ½‖t_k − c_k‖²; positive: 0.1 Σ_k max(0.1 − s, 0).
    """
    scale, shift = transforms[..., :2], transforms[..., 2:]
    scale_term = (F.relu(scale.abs() - 0.5) ** 2).sum((-2, -1))
    anchors = anchor_points(transforms.shape[1], anchor_radius).to(transforms)
    has_anchor = ~anchors[:, 0].isnan()
    anchor_term = 0.5 * ((shift[:, has_anchor] - anchors[has_anchor]) ** 2).sum((-2, -1))
    positive_term = F.relu(0.1 - scale).sum((-2, -1))
    return (scale_term + ANCHOR_WEIGHT * anchor_term + POSITIVE_WEIGHT * positive_term).mean()


def total_loss(
    out: NetworkOutput, targets: torch.Tensor, kind: str = "softmax", anchor_radius: float = 0.5
) -> dict[str, torch.Tensor]:
    """All terms and their weighted sum under ``"loss"``; the baseline has only L_cls."""
    terms = {"cls": classification_loss(out.scores, targets, kind)}
    loss = terms["cls"]
    if out.maps is not None and out.transforms is not None:
        terms["div"] = diversity_loss(out.maps)
        terms["loc"] = localisation_loss(out.transforms, anchor_radius)
        loss = loss + DIVERSITY_WEIGHT * terms["div"] + LOCALISATION_WEIGHT * terms["loc"]
    terms["loss"] = loss
    return terms
