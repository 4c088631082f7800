"""A part's look: the vector a part is searched by, describing its item (colour, pattern, material,
shape) so that the nearest product looks like it, not only is of its kind.

For each attended crop, and for the whole photo:
- the frozen trunk's maps sampled inside the crop (both levels, on a small grid) and pooled (mean
  and max), projected by a small network trained instance-level on product photos (InfoNCE between
  a product's catalogue photo and its re-shot views, model.look_training), L2-normalised;
- a colour histogram of the crop's pixels: each pixel softly assigned to a fixed palette in CIELAB,
  weighted towards the crop's centre, the white studio backdrop (and the letterbox padding) left
  out, skin-coloured pixels weighted by ``look_skin_weight``; square-rooted (Hellinger) and
  L2-normalised;
- the two concatenated, the colour with ``look_colour_weight`` of the squared length.

The vectors are unit length: FAISS's L2 distance between two is 2 − 2·cosine, as before.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from model.attention import crop_grid
from model.config import ModelConfig

FEATURE_GRID = (6, 4)  # samples of each trunk map per crop (rows, columns): a crop is a portrait window
COLOUR_GRID = (24, 16)  # pixels of the photo sampled per crop for its colours
PALETTE_LEVELS = 4  # palette: this many levels of each of R, G, B (64 colours)
COLOUR_SIGMA = 12.0  # CIELAB units: how softly a pixel is shared between palette colours
BACKDROP = 0.93  # a pixel at least this bright in every channel is backdrop (catalogue white, padding)
CENTRE_SIGMA = 0.6  # the centre weighting's spread, in the crop's half-sizes
# Skin-coloured pixels: a soft box in YCbCr (Chai & Ngan, 1999: Cr 133-173, Cb 77-127, 0-255 units),
# its edges ramped over this many units so that a pixel's weight moves smoothly with its colour.
SKIN_CR, SKIN_CB, SKIN_EDGE = (133.0, 173.0), (77.0, 127.0), 4.0


def srgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3) sRGB in [0, 1] -> CIELAB (D65), in torch (so it exports with the network). Powers
    are written exp(p * log x): OpenVINO ran ``x ** 2.4`` and ``x ** (1/3)`` a millisecond a photo
    slower (bench/look_cost.py)."""
    linear = torch.where(
        rgb > 0.04045, torch.exp(2.4 * torch.log(((rgb + 0.055) / 1.055).clamp_min(1e-6))), rgb / 12.92
    )
    # sRGB -> XYZ, each row divided by the white point's X, Y, Z
    matrix = torch.tensor(
        [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]], dtype=rgb.dtype
    ) / torch.tensor([[0.95047], [1.0], [1.08883]], dtype=rgb.dtype)
    xyz = linear @ matrix.t()
    delta = 6 / 29
    f = torch.where(xyz > delta**3, torch.exp(torch.log(xyz.clamp_min(1e-9)) / 3), xyz / (3 * delta**2) + 4 / 29)
    return torch.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def palette() -> torch.Tensor:
    """(P, 3) CIELAB anchors: an even grid of sRGB colours."""
    levels = (torch.arange(PALETTE_LEVELS, dtype=torch.float32) + 0.5) / PALETTE_LEVELS
    rgb = torch.stack(torch.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    return srgb_to_lab(rgb)


def sample_crops(
    images: torch.Tensor, transforms: torch.Tensor, rows: int, cols: int, padding_mode: str = "zeros"
) -> torch.Tensor:
    """(B, C, H, W) maps and (B, K, 4) crops -> (B, C, K, rows, cols): each crop sampled on a
    ``rows`` x ``cols`` grid. One grid holds a photo's K crops stacked, so the map is read in place:
    copying it once per crop (a batch of B*K maps) cost more than the look head's network."""
    B, K, _ = transforms.shape
    grid = crop_grid(transforms.flatten(0, 1), rows, cols).view(B, K * rows, cols, 2)
    samples = F.grid_sample(images, grid, align_corners=False, padding_mode=padding_mode)  # (B, C, K*rows, cols)
    return samples.view(B, images.shape[1], K, rows, cols)


def skin_likeness(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3) sRGB in [0, 1] -> (...,) in [0, 1]: 1 inside the skin box of YCbCr, 0 outside it."""
    r, g, b = rgb.unbind(-1)
    cr = 128 + 255 * (0.5 * r - 0.418688 * g - 0.081312 * b)
    cb = 128 + 255 * (-0.168736 * r - 0.331264 * g + 0.5 * b)

    def inside(value: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
        low, high = bounds
        return ((value - low) / SKIN_EDGE + 0.5).clamp(0, 1) * ((high - value) / SKIN_EDGE + 0.5).clamp(0, 1)

    return inside(cr, SKIN_CR) * inside(cb, SKIN_CB)


def colour_histogram(
    images: torch.Tensor, transforms: torch.Tensor, anchors: torch.Tensor, skin_weight: float = 1.0
) -> torch.Tensor:
    """(B, 3, H, W) photos in [0, 1] and (B, K, 4) crops -> (B, K, P) unit-length colour
    histograms of each crop's pixels (square-rooted shares of the palette). ``skin_weight``: the
    weight a skin-coloured pixel keeps (1: as any other). A part's crop holds the arms, neck or
    legs around its item; a crop of one colour keeps its histogram whatever the weight."""
    B, K, _ = transforms.shape
    rows, cols = COLOUR_GRID
    pixels = sample_crops(images, transforms, rows, cols, padding_mode="border")  # (B, 3, K, rows, cols)
    pixels = pixels.flatten(3).permute(0, 2, 3, 1).flatten(0, 1)  # (B*K, N, 3)
    rgb = pixels.clamp(0, 1)  # clamped once: ONNX's exporter lost the second of two clamps of one tensor
    lab = srgb_to_lab(rgb)
    # A softmax over the palette needs a pixel's |a - b|² only up to its own |a|²: |b|² - 2 a.b is a
    # matrix product (the (B*K, N, P, 3) difference it replaces was the head's dearest step).
    anchors = anchors.to(lab.dtype)
    distance = anchors.pow(2).sum(-1) - 2 * lab @ anchors.t()  # (B*K, N, P): |a - b|² - |a|²
    share = torch.softmax(-distance / (2 * COLOUR_SIGMA**2), -1)
    ys = ((torch.arange(rows, dtype=images.dtype) * 2 + 1) / rows - 1).view(rows, 1)
    xs = ((torch.arange(cols, dtype=images.dtype) * 2 + 1) / cols - 1).view(1, cols)
    centre = torch.exp(-(ys**2 + xs**2) / (2 * CENTRE_SIGMA**2)).flatten()  # (N,)
    visible = ((BACKDROP - pixels.amin(-1)) / 0.01).clamp(0, 1)  # (B*K, N): 1 below the backdrop's brightness
    # Weighted by each factor in turn: OpenVINO's saved model computes a reduction over their
    # product (centre * visible, one tensor) wrongly. The sum needs no division: the vector is
    # normalised after.
    weighted = share * visible.unsqueeze(-1)
    if skin_weight < 1:
        kept = 1 - (1 - skin_weight) * skin_likeness(rgb)  # (B*K, N)
        weighted = weighted * kept.unsqueeze(-1)
    histogram = (weighted * centre.view(1, -1, 1)).sum(1) + 1e-9  # (B*K, P)
    return F.normalize(histogram.clamp_min(0).sqrt(), dim=-1).view(B, K, -1)


def pooled_crop_features(trunk_maps: list[torch.Tensor], transforms: torch.Tensor) -> torch.Tensor:
    """Trunk maps and (B, K, 4) crops -> (B, K, 2 * sum(C)) each level's mean and max inside each crop."""
    rows, cols = FEATURE_GRID
    pooled = []
    for level in trunk_maps:
        samples = sample_crops(level.float(), transforms, rows, cols)  # (B, C, K, r, c)
        pooled += [samples.mean((-2, -1)), samples.amax((-2, -1))]  # (B, C, K) each
    return torch.cat(pooled, 1).transpose(1, 2)


WHOLE = (1.0, 1.0, 0.0, 0.0)  # the transform of the whole photo: (s_x, s_y, t_x, t_y)


def mix_product_look(whole: torch.Tensor, crop: torch.Tensor, whole_share: float) -> torch.Tensor:
    """A catalogue photo's look vector(s): its whole photo's and its category crop's, mixed with
    ``whole_share`` of the whole photo's and made unit length again. A shopper's part shows the
    item cut out, its catalogue photo shows it worn (head, legs, other clothes): the crop alone
    misses what the attention cut off, the whole photo alone carries what is not the product."""
    if whole_share >= 1:
        return whole
    if whole_share <= 0:
        return crop
    return F.normalize(whole_share * whole + (1 - whole_share) * crop, dim=-1)


class LookHead(nn.Module):
    """Trunk maps, photos and crops -> unit-length look vectors, (B, K, look_dim + P)."""

    anchors: torch.Tensor

    def __init__(self, config: ModelConfig, trunk_channels: list[int]) -> None:
        super().__init__()
        if config.look_dim < 1:
            raise ValueError("a look head needs look_dim >= 1")
        if not 0 <= config.look_colour_weight < 1:
            raise ValueError("look_colour_weight is a share of the vector: in [0, 1)")
        features = 2 * sum(trunk_channels)
        self.project = nn.Sequential(
            nn.BatchNorm1d(features),
            nn.Linear(features, config.look_hidden),
            nn.ReLU(),
            nn.Linear(config.look_hidden, config.look_dim),
        )
        self.colour_weight = config.look_colour_weight
        self.skin_weight = config.look_skin_weight
        self.register_buffer("anchors", palette(), persistent=False)

    @property
    def colours(self) -> int:
        return int(self.anchors.shape[0])

    def embed(self, features: torch.Tensor, dropout: float = 0.0) -> torch.Tensor:
        """(..., F) pooled crop features -> (..., look_dim) unit-length learnt part of the vector.
        ``dropout``: of the standardised features, in training mode only (model.look_training)."""
        shape = features.shape[:-1]
        standardised = self.project[0](features.reshape(-1, features.shape[-1]))
        hidden = F.dropout(standardised, dropout, training=self.training and dropout > 0)
        return F.normalize(self.project[1:](hidden), dim=-1).view(*shape, -1)

    def combine(self, learnt: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
        """The look vector: the learnt part and the colour histogram, weighted (unit length)."""
        return torch.cat([learnt * math.sqrt(1 - self.colour_weight), colour * math.sqrt(self.colour_weight)], -1)

    def forward(
        self, trunk_maps: list[torch.Tensor], images: torch.Tensor, transforms: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K, L) look vectors of the crops and (B, L) of the whole photo."""
        B = transforms.shape[0]
        whole = torch.tensor(WHOLE, dtype=transforms.dtype, device=transforms.device).expand(B, 1, 4)
        crops = torch.cat([transforms, whole], 1)  # (B, K + 1, 4)
        looks = self.combine(
            self.embed(pooled_crop_features(trunk_maps, crops)),
            colour_histogram(images, crops, self.anchors, self.skin_weight),
        )
        return looks[:, :-1], looks[:, -1]
