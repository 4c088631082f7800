"""Recurrent attention with a spatial transformer and an LSTM.

Wang, Chen, Li, Xu, Lin, "Multi-label Image Recognition by Recurrently Discovering Attentional
Regions" (RDAR), ICCV 2017, as used by Verma et al., ICIP 2018. Step 0 reads the whole map (M_0 =
identity); each step k = 1..K samples crop_k = grid_sample(X, affine_grid(M_k)) with
M_k = [[s_x, 0, t_x], [0, s_y, t_y]], the LSTM reads crop_k's texture encoding and emits label
scores s_k and the next transform M_{k+1}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model.encoding import TextureEncoding, encode_map


def anchor_points(steps: int, radius: float = 0.5) -> torch.Tensor:
    """(K, 2) anchors c_k of RDAR's localisation loss: none for step 1 (NaN), the others evenly on a
    circle of ``radius`` round the centre, in [-1, 1] map coordinates."""
    anchors = torch.full((steps, 2), float("nan"))
    for k in range(1, steps):
        angle = 2 * math.pi * (k - 1) / (steps - 1)
        anchors[k] = torch.tensor([radius * math.cos(angle), radius * math.sin(angle)])
    return anchors


@dataclass
class AttentionOutput:
    scores: torch.Tensor  # (B, K, C) label scores of steps 1..K
    embeddings: torch.Tensor  # (B, K, E) L2-normalised texture encodings of crops 1..K
    transforms: torch.Tensor  # (B, K, 4) (s_x, s_y, t_x, t_y) of crops 1..K, in [-1, 1] map coordinates
    maps: torch.Tensor  # (B, K, h, w) soft attention maps I_k, each summing to 1
    whole_embedding: torch.Tensor  # (B, E) encoding of the whole map (step 0), for global search


def transform_matrices(transforms: torch.Tensor) -> torch.Tensor:
    """(..., 4) (s_x, s_y, t_x, t_y) -> (..., 2, 3) affine matrices without rotation or shear."""
    sx, sy, tx, ty = transforms.unbind(-1)
    zero = torch.zeros_like(sx)
    return torch.stack([sx, zero, tx, zero, sy, ty], -1).unflatten(-1, (2, 3))


def soft_box_maps(transforms: torch.Tensor, height: int, width: int, sharpness: float) -> torch.Tensor:
    """Attention maps I_k: the region of the (h, w) grid that M_k covers, as a soft box summing to 1.

    The crop of M_k spans t ± |s| in the [-1, 1] coordinates of grid_sample (align_corners=False);
    sigmoid edges make the map differentiable in s and t.
    """
    sx, sy, tx, ty = (v[..., None] for v in transforms.unbind(-1))  # (B, K, 1)
    xs = (torch.arange(width, device=transforms.device) * 2 + 1) / width - 1  # cell centres (w,)
    ys = (torch.arange(height, device=transforms.device) * 2 + 1) / height - 1  # (h,)

    def inside(centres: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        half = s.abs()
        return torch.sigmoid(sharpness * (centres - t + half)) * torch.sigmoid(sharpness * (t + half - centres))

    box = inside(ys, ty, sy).unsqueeze(-1) * inside(xs, tx, sx).unsqueeze(-2)  # (B, K, h, w)
    return box / box.sum((-2, -1), keepdim=True).clamp_min(1e-8)


class RecurrentAttention(nn.Module):
    def __init__(
        self,
        channels: int,
        num_labels: int,
        steps: int,
        codewords: int,
        hidden: int,
        crop_size: tuple[int, int],
        box_sharpness: float,
        dropout: float,
        initial_scale: float = 0.3,
        anchor_radius: float = 0.5,
        scores_from: str = "lstm",
    ) -> None:
        super().__init__()
        if steps < 1:
            raise ValueError("steps must be at least 1")
        self.steps = steps
        self.crop_size = crop_size
        self.box_sharpness = box_sharpness
        self.encoding = TextureEncoding(channels, codewords)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTMCell(codewords * channels, hidden)
        # "crop" scores each crop from its own encoding, so the step that scores a label is the crop
        # that saw it; "lstm" scores from the recurrent state, which also remembers earlier crops.
        self.scores_from_crop = scores_from == "crop"
        self.classify = nn.Linear(codewords * channels if self.scores_from_crop else hidden, num_labels)
        self.localise = nn.Linear(hidden, 4)
        # M_k = localise(h_{k-1}) + a learned per-step offset that starts at step k's anchor (the same
        # points the anchor loss pulls towards), so the crops start spread out rather than stacked.
        with torch.no_grad():
            self.localise.weight.normal_(0.0, 0.01)
            self.localise.bias.zero_()
        start = torch.zeros(steps, 4)
        start[:, :2] = initial_scale
        centres = anchor_points(steps, anchor_radius)
        start[1:, 2:] = centres[1:]
        self.step_offsets = nn.Parameter(start)

    def forward(self, x: torch.Tensor) -> AttentionOutput:
        B, D, h, w = x.shape
        crop_h, crop_w = self.crop_size
        whole = encode_map(self.encoding, x)  # step 0: M_0 = identity, its scores unused
        state = self.lstm(self.dropout(whole))
        scores, embeddings, transforms = [], [], []
        for k in range(self.steps):
            m = self.localise(state[0]) + self.step_offsets[k]  # (B, 4): M_k from the previous step
            grid = F.affine_grid(transform_matrices(m), [B, D, crop_h, crop_w], align_corners=False)
            crop = F.grid_sample(x, grid, align_corners=False)  # (B, D, crop_h, crop_w)
            embedding = encode_map(self.encoding, crop)  # (B, E)
            state = self.lstm(self.dropout(embedding), state)
            scores.append(self.classify(self.dropout(embedding) if self.scores_from_crop else state[0]))
            embeddings.append(embedding)
            transforms.append(m)
        transforms_k = torch.stack(transforms, 1)  # (B, K, 4)
        return AttentionOutput(
            scores=torch.stack(scores, 1),
            embeddings=torch.stack(embeddings, 1),
            transforms=transforms_k,
            maps=soft_box_maps(transforms_k, h, w, self.box_sharpness),
            whole_embedding=whole,
        )
