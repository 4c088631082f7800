"""The part-attention network of Verma, Anand, Arora, Rai, "Diversity in Fashion Recommendation
Using Semantic Parsing", ICIP 2018, and its global-pooling baseline.

trunk (stride 16, and stride 32 where it has one) -> 1x1 conv of each map to D, summed on the
stride-16 grid, + BN + ReLU -> head. The attention head (RDAR-style recurrent
spatial transformer + LSTM, Deep TEN texture encoding per crop) fuses label scores as the max over
steps; the part embedding of label c is the encoding of the crop that scored c highest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.attention import RecurrentAttention
from model.backbones import build_trunk
from model.config import ModelConfig
from model.imaging import Placement
from model.labels import group_names, group_of, group_probabilities
from model.look import LookHead


@dataclass
class NetworkOutput:
    scores: torch.Tensor  # (B, C) fused label scores (logits)
    global_embedding: torch.Tensor  # (B, E) L2-normalised whole-image embedding
    crop_scores: torch.Tensor | None = None  # (B, C) max over the crops of s_k (attention only)
    whole_scores: torch.Tensor | None = None  # (B, C) the whole map's scores (attention with whole_scores)
    step_scores: torch.Tensor | None = None  # (B, K, C) per-step scores (attention only)
    part_embeddings: torch.Tensor | None = None  # (B, K, E) per-step crop embeddings
    transforms: torch.Tensor | None = None  # (B, K, 4) (s_x, s_y, t_x, t_y) per step
    maps: torch.Tensor | None = None  # (B, K, h, w) attention maps
    codeword_share: torch.Tensor | None = None  # (codewords,) mean soft assignment of the cells
    product_scores: torch.Tensor | None = None  # (B, P) a product photo's category logits (model.products)
    part_looks: torch.Tensor | None = None  # (B, K, L) the crops' look vectors (model.look), the part vectors
    whole_look: torch.Tensor | None = None  # (B, L) the whole photo's look vector

    def per_photo(self) -> list[NetworkOutput]:
        """One output per photo of the batch (batch dim kept, of size 1), float32 on the CPU: what a
        batched forward hands back to each request. The codeword share describes the batch: each keeps it."""
        size = self.scores.shape[0]
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return [
            NetworkOutput(
                **{
                    name: value if value is None or name == "codeword_share" else value[i : i + 1].float().cpu()
                    for name, value in values.items()
                }
            )
            for i in range(size)
        ]


def pooled_last_level(trunk_maps: list[torch.Tensor]) -> torch.Tensor:
    """(B, C) global average of the trunk's coarsest map: what the product head reads."""
    return trunk_maps[-1].float().mean((-2, -1))


class FeatureFusion(nn.Module):
    """Trunk maps -> one (B, D, h, w) map on the finest grid: each level projected to D channels
    (1x1 conv), coarser levels upsampled bilinearly, summed, then BN + ReLU."""

    def __init__(self, in_channels: list[int], channels: int) -> None:
        super().__init__()
        self.project = nn.ModuleList(nn.Conv2d(c, channels, 1, bias=False) for c in in_channels)
        self.norm = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU())

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        size = maps[0].shape[-2:]
        fused = self.project[0](maps[0])
        for project, level in zip(self.project[1:], maps[1:], strict=True):
            fused = fused + F.interpolate(project(level), size=size, mode="bilinear", align_corners=False)
        return self.norm(fused)


class AttentionHead(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.attention = RecurrentAttention(config)
        self.whole = GlobalPoolHead(config) if config.whole_scores else None

    def forward(self, x: torch.Tensor) -> NetworkOutput:
        out = self.attention(x)
        crop_scores = out.scores.amax(1)  # max over k >= 1 of s_k
        whole_scores = self.whole(x).scores if self.whole is not None else None
        return NetworkOutput(
            scores=crop_scores if whole_scores is None else (crop_scores + whole_scores) / 2,
            crop_scores=crop_scores,
            whole_scores=whole_scores,
            global_embedding=out.whole_embedding,
            step_scores=out.scores,
            part_embeddings=out.embeddings,
            transforms=out.transforms,
            maps=out.maps,
            codeword_share=out.codeword_share,
        )


class GlobalPoolHead(nn.Module):
    """The baseline: global average pooling and a linear multi-label classifier."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.dropout = nn.Dropout(config.dropout)
        self.classify = nn.Linear(config.channels, len(config.labels))

    def forward(self, x: torch.Tensor) -> NetworkOutput:
        pooled = x.mean((-2, -1))  # (B, D)
        return NetworkOutput(scores=self.classify(self.dropout(pooled)), global_embedding=F.normalize(pooled, dim=-1))


class PartAttentionNetwork(nn.Module):
    """Photo -> label scores, part embeddings and boxes. ``head_forward`` runs on cached trunk maps."""

    mean: torch.Tensor  # buffers (the trunk's input normalisation)
    std: torch.Tensor

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.trunk, trunk_channels = build_trunk(
            config.trunk, config.pretrained, config.trunk_weights, config.multiscale
        )
        self.reduce = FeatureFusion(trunk_channels, config.channels)
        self.head = AttentionHead(config) if config.architecture == "attention" else GlobalPoolHead(config)
        # A product photo's category, from the trunk's last map pooled (fitted by model.products).
        self.product_head = nn.Linear(trunk_channels[-1], len(config.product_labels)) if config.product_labels else None
        # The part vectors that describe the item's look (model.look), trained after the rest.
        self.look = LookHead(config, trunk_channels) if config.look_dim > 0 else None
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)

    def trunk_forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) images in [0, 1] -> trunk maps, (B, C_0, H/16, W/16) first."""
        return self.trunk((images - self.mean) / self.std)

    def features(self, trunk_maps: list[torch.Tensor]) -> torch.Tensor:
        """Trunk maps -> the (B, D, H/16, W/16) map the heads read."""
        return self.reduce(trunk_maps)

    def head_forward(self, trunk_maps: list[torch.Tensor]) -> NetworkOutput:
        out: NetworkOutput = self.head(self.features(trunk_maps))
        if self.product_head is not None:
            out.product_scores = self.product_head(pooled_last_level(trunk_maps))
        return out

    def forward(self, images: torch.Tensor) -> NetworkOutput:
        trunk_maps = self.trunk_forward(images)
        out = self.head_forward(trunk_maps)
        if self.look is not None and out.transforms is not None:
            out.part_looks, out.whole_look = self.look(trunk_maps, images, out.transforms)
        return out

    def product_categories(self, images: torch.Tensor) -> list[str]:
        """The product head's category of each product photo of (B, 3, H, W) ``images`` (only the
        trunk and the head run)."""
        if self.product_head is None:
            raise ValueError("the model has no product head (python -m model.products adds one)")
        scores = self.product_head(pooled_last_level(self.trunk_forward(images)))
        return [self.config.product_labels[i] for i in scores.argmax(-1).tolist()]

    def probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """Label probabilities in the form the model was trained with."""
        if self.config.classification == "softmax":
            return scores.softmax(-1)
        return scores.sigmoid()

    @property
    def attention(self) -> RecurrentAttention:
        """The recurrent attention of an attention model (the global baseline has none)."""
        if not isinstance(self.head, AttentionHead):
            raise ValueError("the global-pooling baseline has no attention")
        return self.head.attention

    def head_parameters(self) -> list[nn.Parameter]:
        return [*self.reduce.parameters(), *self.head.parameters()]


@dataclass
class Part:
    label: str
    score: float  # probability of the label (query_parts: of the label's group)
    box: tuple[float, float, float, float] | None  # x0, y0, x1, y1 in the photo's pixels (None: no placement)
    step: int  # which attention step found it (0-based, over steps 1..K)
    embedding: torch.Tensor  # (E,)
    # query_parts: the label whose index answers the part (``label`` itself, or the most probable
    # label of its group that the catalogue has), and whether its group reached the part threshold.
    index_label: str | None = None
    confident: bool = True


def transform_to_box(transform: torch.Tensor, width: float, height: float) -> tuple[float, float, float, float]:
    """(s_x, s_y, t_x, t_y) in [-1, 1] map coordinates -> box in a frame of width x height pixels."""
    sx, sy, tx, ty = (float(v) for v in transform)
    x0, x1 = ((tx - abs(sx) + 1) / 2 * width, (tx + abs(sx) + 1) / 2 * width)
    y0, y1 = ((ty - abs(sy) + 1) / 2 * height, (ty + abs(sy) + 1) / 2 * height)
    return (max(0.0, x0), max(0.0, y0), min(width, x1), min(height, y1))


def part_box(transform: torch.Tensor, placement: Placement) -> tuple[float, float, float, float]:
    """A crop's transform -> its box in the photo's pixels, through the letterbox placement."""
    return placement.box_to_photo(transform_to_box(transform, placement.frame_width, placement.frame_height))


# A shopper's photo's part: its group's probability at least (FASHION_PART_THRESHOLD; chosen on
# validation with the model, by bench/any_photo.py --choose: CCP's photos and the product set's).
# 2026-12-07, seventh session (0.55 before): reports/any_photo_validation_rechoose.json
DEFAULT_PART_THRESHOLD = 0.575
# When no group reaches the threshold, the most probable one is still answered, marked not
# confident, unless even it is below this floor: then the photo has nothing to wear in it and the
# answer is empty (FASHION_PART_FLOOR; chosen on validation with bench/any_photo.py).
DEFAULT_PART_FLOOR = 0.2  # 0.1 with the model of before 2026-12-07
# A wide photo (seen at several places in the frame: a half-body shot) shows its items cut at the
# frame's edge, and the network is less sure of them: its groups are kept from this probability
# (FASHION_WIDE_PART_THRESHOLD; chosen on validation with bench/any_photo.py --choose --wide-threshold).
# 2026-12-07, seventh session (0.35 before): reports/any_photo_validation_rechoose.json
DEFAULT_WIDE_PART_THRESHOLD = 0.4
# A catalogue item placed by its predicted street labels (no category known): a label's probability
# at least (FASHION_ITEM_LABEL_THRESHOLD); low, since max fusion over crops makes present labels score high.
DEFAULT_ITEM_LABEL_THRESHOLD = 0.05


def select_parts(
    model: PartAttentionNetwork,
    out: NetworkOutput,
    index: int,
    placement: Placement | None = None,
    threshold: float = 0.0,
    max_parts: int | None = None,
    labels: list[str] | None = None,
) -> list[Part]:
    """The parts of one image of a batch, one per label: labels above ``threshold``, best first.

    The part of label c is the step k* = argmax_k s_k[c]; its embedding and box are crop k*'s.
    ``labels`` names the parts to take instead (e.g. a catalogue item's known category), whatever
    their scores. Boxes are in the photo's pixels when its letterbox ``placement`` is given.
    """
    probs = _label_probabilities(model, out, index)
    if labels is not None:
        chosen = [model.config.labels.index(name) for name in labels]
    else:
        order = [c for c in torch.argsort(probs, descending=True).tolist() if float(probs[c]) >= threshold]
        chosen = order[:max_parts] if max_parts is not None else order
    return [_part(model, out, index, c, float(probs[c]), placement) for c in chosen]


def query_parts(
    model: PartAttentionNetwork,
    out: NetworkOutput,
    index: int,
    placement: Placement | None = None,
    threshold: float = DEFAULT_PART_THRESHOLD,
    max_parts: int | None = None,
    searchable: Collection[str] | None = None,
    floor: float | None = DEFAULT_PART_FLOOR,
) -> list[Part]:
    """The parts of a shopper's photo seen once (``photo_parts`` of one view)."""
    return photo_parts(model, [(out, index, placement)], threshold, max_parts, searchable, floor)


def photo_parts(
    model: PartAttentionNetwork,
    views: Sequence[tuple[NetworkOutput, int, Placement | None]],
    threshold: float = DEFAULT_PART_THRESHOLD,
    max_parts: int | None = None,
    searchable: Collection[str] | None = None,
    floor: float | None = DEFAULT_PART_FLOOR,
    wide_threshold: float | None = None,
) -> list[Part]:
    """The parts of a shopper's photo: one per item group (footwear, bags, tops…), best first.

    ``views``: the photo as the network saw it, (output, row of the batch, letterbox placement),
    once or at several places in the frame (a wide photo: model.imaging.load_pixel_views); a
    label's probability is its highest over the views, and its part is read from that view. A
    group's probability is then that of its labels so merged: shoes seen in one view and heels in
    another make footwear surer than either view alone (the part threshold was chosen on
    validation with this rule).

    A group's probability is that of any of its labels: the sum of softmax probabilities, or
    1 - prod(1 - p) of independent sigmoids. Labels of one group mostly name one item twice (CCP's
    two label sets call the same shoes `heels` and `shoes`), so ranking labels one by one spends
    several parts on one item and splits its evidence; one part per group does neither (on
    validation, group P@1 / coverage 0.822 / 0.612 with 3.8 parts a photo, against 0.728 / 0.578
    with 4.5 by labels: bench/part_threshold.py). Groups scoring at least ``threshold`` are kept,
    ``max_parts`` at most; for a photo of several views (a wide one), at least ``wide_threshold``
    (None: ``threshold``). A group's part is its most probable label, found by that label's crop;
    its ``index_label`` is its most probable label among ``searchable`` (those the catalogue has
    products for; None: all): a "blouse" is answered from the "top" index of a shop that files its
    blouses as tops. A group with no searchable label is left out.

    When no group reaches that bar, the most probable group is still answered, marked not
    ``confident``, if its probability is at least ``floor`` (None: no fallback).
    """
    if not views:
        raise ValueError("a photo's parts need at least one view of it")
    per_view = np.stack([_label_probabilities(model, out, i).float().cpu().numpy() for out, i, _ in views])
    probs, seen_in = per_view.max(0), per_view.argmax(0)
    names = model.config.labels
    grouped = group_probabilities(probs[None], names, model.config.classification)[0]
    scored = []
    for group, group_probability in zip(group_names(names), grouped.tolist(), strict=True):
        members = [c for c, name in enumerate(names) if group_of(name) == group]
        usable = [c for c in members if searchable is None or names[c] in searchable]
        if usable:
            best = max(members, key=lambda c: float(probs[c]))
            scored.append((group_probability, best, max(usable, key=lambda c: float(probs[c]))))
    scored.sort(reverse=True)
    bar = wide_threshold if wide_threshold is not None and len(views) > 1 else threshold
    chosen = [entry for entry in scored if entry[0] >= bar]
    confident = bool(chosen)
    if not chosen and floor is not None and scored and scored[0][0] >= floor:
        chosen = scored[:1]
    chosen = chosen[:max_parts] if max_parts is not None else chosen
    parts = []
    for score, c, answering in chosen:
        out, index, placement = views[int(seen_in[c])]
        part = _part(model, out, index, c, min(score, 1.0), placement)
        part.index_label, part.confident = names[answering], confident
        parts.append(part)
    return parts


def _label_probabilities(model: PartAttentionNetwork, out: NetworkOutput, index: int) -> torch.Tensor:
    if out.step_scores is None or (out.part_embeddings is None and out.part_looks is None) or out.transforms is None:
        raise ValueError("parts need the attention architecture")
    return model.probabilities(out.scores[index]).detach()


def _part(
    model: PartAttentionNetwork, out: NetworkOutput, index: int, c: int, score: float, placement: Placement | None
) -> Part:
    """Label c's part: the crop k* = argmax_k s_k[c], its box and embedding."""
    assert out.step_scores is not None and out.transforms is not None
    vectors = out.part_looks if out.part_looks is not None else out.part_embeddings
    assert vectors is not None
    k = int(out.step_scores[index, :, c].argmax())
    return Part(
        label=model.config.labels[c],
        score=score,
        box=part_box(out.transforms[index, k], placement) if placement is not None else None,
        step=k,
        embedding=vectors[index, k],
    )


def product_parts(model: PartAttentionNetwork, out: NetworkOutput, i: int) -> list[str] | None:
    """The part label of product photo ``i`` by the product head: its category, or none for a
    category with no item label (``other``); None when the model has no product head."""
    if out.product_scores is None:
        return None
    label = model.config.part_label_of(model.config.product_labels[int(out.product_scores[i].argmax())])
    return [label] if label is not None else []
