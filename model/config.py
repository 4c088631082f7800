"""The network's configuration: stored in every checkpoint, the model is rebuilt from it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from model.backbones import TRUNKS

# Input normalisation each trunk was trained with (EfficientNet-Lite uses the TF-Lite convention).
TRUNK_NORMALISATION: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "efficientnet_lite0": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "efficientnet_lite1": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "efficientnet_lite2": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "resnet18": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "resnet34": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "resnet50": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "stylenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
ARCHITECTURES = ("attention", "global")
CLASSIFICATIONS = ("softmax", "sigmoid", "asymmetric")
ANCHOR_LAYOUTS = ("grid", "ring")


# The fields that describe the heads fitted after training on the frozen trunk (model.products,
# model.look_training): model.train --heads-from copies them with the heads' weights.
HEAD_FIELDS = (
    "product_labels",
    "look_dim",
    "look_hidden",
    "look_colour_weight",
    "look_whole_share",
    "look_skin_weight",
)


@dataclass
class ModelConfig:
    labels: list[str] = field(default_factory=list)  # item label names, in score order
    architecture: str = "attention"  # "attention" (the paper) or "global" (pooled baseline)
    trunk: str = "efficientnet_lite0"  # see model.backbones.TRUNKS
    pretrained: bool = True  # ImageNet weights for the trunk where it has them
    trunk_weights: str | None = None  # a local trunk weights file, overriding `pretrained`
    image_height: int = 384  # the paper's input size
    image_width: int = 256
    mean: tuple[float, float, float] | None = None  # None: the trunk's own normalisation
    std: tuple[float, float, float] | None = None
    multiscale: bool = True  # add the trunk's stride-32 map (where it has one) to the stride-16 grid
    channels: int = 128  # D: channels after the 1x1 reduction of the trunk maps
    steps: int = 9  # K: attention steps after the whole-map step 0
    crop_height: int = 6  # size of the grid each attended crop is resampled to
    crop_width: int = 4
    codewords: int = 32  # Deep TEN codewords per crop; part embedding = codewords * channels
    hidden: int = 512  # LSTM hidden size
    anchors: str = "grid"  # where crops start (and L_loc pulls them): "grid" over the photo, or RDAR's "ring"
    anchor_radius: float = 0.5  # radius of the "ring" anchors
    initial_scale: float = 0.34  # half-size of each crop at the start, in [-1, 1] map units (a 3x3 grid cell)
    min_scale: float = 0.05  # bounds of a crop's half-size: small enough for a shoe, up to the whole map
    max_scale: float = 1.0
    box_sharpness: float = 12.0  # slope of the soft box edges of the attention maps (per unit of [-1, 1])
    dropout: float = 0.2  # on the LSTM input
    # Score labels on the whole map too (RDAR's step 0, a linear layer on its pooled features) and
    # fuse: s = (s_whole + max_k s_k) / 2. The part of a label is still the crop that scores it highest.
    whole_scores: bool = True
    product_labels: list[str] = field(default_factory=list)  # product-photo categories (model.products); [] none
    # The look head (model.look): > 0 gives the part vectors (learnt part of this length, trained by
    # model.look_training, and a colour histogram with this share of the squared length); 0: the
    # crops' texture encodings are the part vectors, as in the paper.
    look_dim: int = 0
    look_hidden: int = 1024
    look_colour_weight: float = 0.0
    # A catalogue photo's look: its whole photo's and its category crop's look vectors mixed, the
    # whole photo with this share (1: the whole photo alone; 0: the crop alone), unit length again.
    look_whole_share: float = 0.0
    # The weight a skin-coloured pixel keeps in a look's colour histogram (1: as any other pixel).
    look_skin_weight: float = 1.0
    # "sigmoid": BCE per label (chosen on validation); "softmax": the paper's L_cls; "asymmetric":
    # sigmoid scores trained with the asymmetric loss (model.losses.asymmetric_loss)
    classification: str = "sigmoid"

    def __post_init__(self) -> None:
        if self.trunk not in TRUNKS:
            raise ValueError(f"unknown trunk {self.trunk!r}; choose one of {', '.join(TRUNKS)}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.architecture!r}; choose one of {ARCHITECTURES}")
        if self.anchors not in ANCHOR_LAYOUTS:
            raise ValueError(f"unknown anchors {self.anchors!r}; choose one of {ANCHOR_LAYOUTS}")
        if self.classification not in CLASSIFICATIONS:
            raise ValueError(f"unknown classification {self.classification!r}; choose one of {CLASSIFICATIONS}")
        if not self.labels:
            raise ValueError("a model needs at least one label")
        if not 0 <= self.look_whole_share <= 1:
            raise ValueError("look_whole_share is a share: in [0, 1]")
        if not 0 <= self.look_skin_weight <= 1:
            raise ValueError("look_skin_weight is a weight: in [0, 1]")
        if self.image_height % 16 or self.image_width % 16:
            raise ValueError("image height and width must be multiples of 16 (the trunk's stride)")
        for name in ("channels", "steps", "crop_height", "crop_width", "codewords", "hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        default_mean, default_std = TRUNK_NORMALISATION[self.trunk]
        self.mean = tuple(self.mean or default_mean)  # type: ignore[assignment]
        self.std = tuple(self.std or default_std)  # type: ignore[assignment]

    @property
    def embedding_dim(self) -> int:
        """Length of one texture encoding: the global embedding's (and the part vector's without a look head)."""
        return self.codewords * self.channels

    @property
    def global_dim(self) -> int:
        """Length of the whole-image embedding the global baseline searches."""
        return self.embedding_dim if self.architecture == "attention" else self.channels

    @property
    def part_dim(self) -> int:
        """Length of a part vector: the look vector's (model.look), else the crop's texture encoding."""
        if self.look_dim > 0:
            from model.look import PALETTE_LEVELS

            return self.look_dim + PALETTE_LEVELS**3
        return self.embedding_dim

    def part_label_of(self, category: str) -> str | None:
        """The part label a product head's category is indexed under: itself when it is an item
        label of the model, else None (``other`` and the like join no part index)."""
        return category if category in self.labels else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
