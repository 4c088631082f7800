"""Recurrent attention with a spatial transformer and an LSTM.

Wang, Chen, Li, Xu, Lin, "Multi-label Image Recognition by Recurrently Discovering Attentional
Regions" (RDAR), ICCV 2017, as used by Verma et al., ICIP 2018. Step 0 reads the whole map (M_0 =
identity); each step k = 1..K samples crop_k = grid_sample(X, grid of M_k) with
M_k = [[s_x, 0, t_x], [0, s_y, t_y]]. The LSTM reads the crop's features (their layout, so it can
tell where to look next) and emits the next transform M_{k+1}; crop k's label scores s_k come from
its own texture encoding (RDAR's region classifier), so the crop that scores a label is the crop
that saw it.

Each transform is bounded: crops stay on the photo, half-sizes s stay within [min_scale,
max_scale]. Every step starts at its own anchor (a grid that covers the photo, feet and head
included, or RDAR's ring) and moves per photo towards the content its query looks for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model.config import ModelConfig
from model.encoding import TextureEncoding, encode_map, map_descriptors


def anchor_points(steps: int, layout: str = "grid", radius: float = 0.5) -> torch.Tensor:
    """(K, 2) anchor centres c_k in [-1, 1] map coordinates (x, y).

    "grid": a rows x cols lattice over the whole map (3 x 3 for K = 9), row by row.
    "ring": RDAR's: none for step 1 (NaN), the others evenly on a circle of ``radius``.
    """
    anchors = torch.full((steps, 2), float("nan"))
    if layout == "grid":
        rows = math.ceil(math.sqrt(steps))
        cols = math.ceil(steps / rows)
        for k in range(steps):
            row, col = divmod(k, cols)
            anchors[k] = torch.tensor([(2 * col + 1) / cols - 1, (2 * row + 1) / rows - 1])
    elif layout == "ring":
        for k in range(1, steps):
            angle = 2 * math.pi * (k - 1) / (steps - 1)
            anchors[k] = torch.tensor([radius * math.cos(angle), radius * math.sin(angle)])
    else:
        raise ValueError(f"unknown anchor layout {layout!r}; choose 'grid' or 'ring'")
    return anchors


def config_anchors(config: ModelConfig) -> torch.Tensor:
    """The anchors of a model: the points its crops start at and L_loc pulls towards."""
    return anchor_points(config.steps, config.anchors, config.anchor_radius)


@dataclass
class AttentionOutput:
    scores: torch.Tensor  # (B, K, C) label scores of steps 1..K
    embeddings: torch.Tensor  # (B, K, E) L2-normalised texture encodings of crops 1..K
    transforms: torch.Tensor  # (B, K, 4) (s_x, s_y, t_x, t_y) of crops 1..K, in [-1, 1] map coordinates
    maps: torch.Tensor  # (B, K, h, w) soft attention maps I_k, each summing to 1
    whole_embedding: torch.Tensor  # (B, E) encoding of the whole map (step 0), for global search
    codeword_share: torch.Tensor  # (codewords,) mean soft assignment of the whole maps' cells


def crop_grid(transforms: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 4) (s_x, s_y, t_x, t_y) -> (B, height, width, 2) grid_sample coordinates of the crop: what
    affine_grid gives for M = [[s_x, 0, t_x], [0, s_y, t_y]] (align_corners=False), written as an
    outer sum because the crops never rotate or shear (and so it exports to ONNX and OpenVINO)."""
    xs = (torch.arange(width, device=transforms.device, dtype=transforms.dtype) * 2 + 1) / width - 1
    ys = (torch.arange(height, device=transforms.device, dtype=transforms.dtype) * 2 + 1) / height - 1
    sx, sy, tx, ty = (v[:, None] for v in transforms.unbind(-1))  # (B, 1)
    gx = (sx * xs + tx)[:, None, :].expand(-1, height, -1)  # (B, height, width)
    gy = (sy * ys + ty)[:, :, None].expand(-1, -1, width)
    return torch.stack([gx, gy], -1)


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


class ContentPlacement(nn.Module):
    """The LSTM's state -> (s_x, s_y, t_x, t_y) of step k: the crop looks for its item near its anchor.

    Centre: a soft arg-max over the map's cells of (query · cell) − ‖cell − c_k‖² / 2σ_k², the
    query emitted from the LSTM state, c_k the step's learned anchor and σ_k its learned reach; the
    query starts near zero, so crop k starts at its anchor and learns to follow content.
    Half-sizes: sigmoid into [min_scale, max_scale] of a learned per-step value plus the state's
    move. The centre is clamped so the whole crop stays on the map: a crop off the map samples zero
    padding, the same for every photo, which training would otherwise use to silence noisy scores.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if not 0 < config.min_scale < config.initial_scale < config.max_scale:
            raise ValueError("need 0 < min_scale < initial_scale < max_scale")
        self.min_scale, self.max_scale = config.min_scale, config.max_scale
        self.query = nn.Linear(config.hidden, config.channels)
        self.resize = nn.Linear(config.hidden, 2)
        for layer in (self.query, self.resize):  # near zero: crops start at their anchors
            nn.init.normal_(layer.weight, std=1e-3)
            nn.init.zeros_(layer.bias)
        anchors = config_anchors(config).nan_to_num(0.0)
        self.anchor_logits = nn.Parameter(torch.atanh(anchors.clamp(-0.95, 0.95)))  # c_k = tanh(.)
        self.log_reach = nn.Parameter(torch.full((config.steps,), math.log(0.3)))  # σ_k
        unit = (config.initial_scale - config.min_scale) / (config.max_scale - config.min_scale)
        self.scale_logits = nn.Parameter(torch.full((config.steps, 2), math.log(unit / (1 - unit))))

    @torch.no_grad()
    def start_at(self, boxes: torch.Tensor) -> None:
        """Start the K crops at (K, 4) boxes (x0, y0, x1, y1) in map units (e.g. typical item boxes)."""
        half = ((boxes[:, 2:] - boxes[:, :2]) / 2).clamp(self.min_scale + 1e-3, self.max_scale - 1e-3)
        unit = (half - self.min_scale) / (self.max_scale - self.min_scale)
        self.scale_logits.copy_(torch.log(unit / (1 - unit)))
        self.anchor_logits.copy_(torch.atanh(((boxes[:, 2:] + boxes[:, :2]) / 2).clamp(-0.95, 0.95)))

    def forward(self, hidden: torch.Tensor, x: torch.Tensor, step: int) -> torch.Tensor:
        B, D, h, w = x.shape
        ys = (torch.arange(h, device=x.device) * 2 + 1) / h - 1
        xs = (torch.arange(w, device=x.device) * 2 + 1) / w - 1
        cells = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).flatten(0, 1)  # (h*w, 2) as (x, y)
        anchor = torch.tanh(self.anchor_logits[step])  # (2,)
        prior = -((cells - anchor) ** 2).sum(-1) / (2 * self.log_reach[step].exp() ** 2)  # (h*w,)
        content = torch.einsum("bd,bdn->bn", self.query(hidden), x.flatten(2)) / math.sqrt(D)  # (B, h*w)
        weights = torch.softmax(content + prior, -1)  # (B, h*w)
        scale = self.min_scale + (self.max_scale - self.min_scale) * torch.sigmoid(
            self.resize(hidden) + self.scale_logits[step]
        )  # (B, 2)
        centre = weights @ cells  # (B, 2)
        centre = torch.maximum(torch.minimum(centre, 1 - scale), scale - 1)  # the crop stays on the map
        return torch.cat([scale, centre], -1)


class RecurrentAttention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.steps < 1:
            raise ValueError("steps must be at least 1")
        self.steps = config.steps
        self.crop_size = (config.crop_height, config.crop_width)
        self.box_sharpness = config.box_sharpness
        self.encoding = TextureEncoding(config.channels, config.codewords)
        self.dropout = nn.Dropout(config.dropout)
        # The LSTM reads a crop's cells in place (its layout), the classifier its orderless encoding.
        self.lstm = nn.LSTMCell(config.channels * config.crop_height * config.crop_width, config.hidden)
        # s_k from crop k's own encoding: a part's label is scored by the crop that saw it. Encodings
        # of different photos share a large common component (cosine ~0.9): BN centres and scales
        # them for the classifier (Deep TEN/EncNet normalise their encodings the same way).
        scorer = nn.Linear(config.embedding_dim, len(config.labels))
        # Scores start nearly equal: no early noise for the crops to flee from.
        nn.init.normal_(scorer.weight, std=1e-3)
        nn.init.zeros_(scorer.bias)
        self.classify = nn.Sequential(nn.BatchNorm1d(config.embedding_dim), nn.Dropout(config.dropout), scorer)
        self.place = ContentPlacement(config)

    def forward(self, x: torch.Tensor) -> AttentionOutput:
        B, D, h, w = x.shape
        crop_h, crop_w = self.crop_size
        whole = encode_map(self.encoding, x)  # (B, E) step 0: M_0 = identity, its scores unused
        layout = F.adaptive_avg_pool2d(x, self.crop_size)  # (B, D, crop_h, crop_w): the whole map, coarse
        state = self.lstm(self.dropout(layout.flatten(1)))
        embeddings, transforms = [], []
        for k in range(self.steps):
            m = self.place(state[0], x, k)  # (B, 4): M_k from the previous step's state
            crop = F.grid_sample(x, crop_grid(m, crop_h, crop_w), align_corners=False)  # (B, D, crop_h, crop_w)
            embedding = encode_map(self.encoding, crop)  # (B, E)
            state = self.lstm(self.dropout(crop.flatten(1)), state)
            embeddings.append(embedding)
            transforms.append(m)
        transforms_k = torch.stack(transforms, 1)  # (B, K, 4)
        embeddings_k = torch.stack(embeddings, 1)  # (B, K, E)
        # All K crops through one BN batch: per-step batches would normalise each step on its own
        # in training but on shared statistics in evaluation, skewing the comparison across crops
        # that picks each label's part.
        scores = self.classify(embeddings_k.flatten(0, 1)).unflatten(0, (B, self.steps))  # (B, K, C)
        return AttentionOutput(
            scores=scores,
            embeddings=embeddings_k,
            transforms=transforms_k,
            maps=soft_box_maps(transforms_k, h, w, self.box_sharpness),
            whole_embedding=whole,
            codeword_share=self.encoding.assignments(map_descriptors(x)).mean((0, 1)),
        )
