"""Trunk feature cache for frozen-trunk training: the trunk runs once per photo (and its mirror)."""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from model.data import load_image
from model.network import PartAttentionNetwork
from model.progress import progress

log = logging.getLogger(__name__)


class ImageFiles(Dataset[torch.Tensor]):
    def __init__(self, paths: Sequence[Path], size: tuple[int, int]) -> None:
        self.paths, self.size = list(paths), size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return load_image(self.paths[i], self.size)


def trunk_digest(model: PartAttentionNetwork) -> str:
    """A digest of the trunk's weights and statistics: what its maps depend on besides the input."""
    trunk_state = hashlib.sha256()
    for name, tensor in sorted(model.trunk.state_dict().items()):
        trunk_state.update(name.encode())
        trunk_state.update(tensor.detach().cpu().numpy().tobytes())
    return trunk_state.hexdigest()


def _cache_key(model: PartAttentionNetwork, paths: Sequence[Path], flips: bool, pooled: bool = False) -> str:
    cfg = model.config
    spec = {
        "trunk": cfg.trunk,
        "weights": trunk_digest(model),
        "size": [cfg.image_height, cfg.image_width],
        "mean": cfg.mean,
        "std": cfg.std,
        "paths": [str(p.resolve()) for p in paths],
        "flips": flips,
        "multiscale": cfg.multiscale,
        "preprocess": "letterbox-v3",  # bump when model.imaging.load_pixels changes (v2: large JPEGs decoded
        # reduced; v3: transparency laid on white, 16-bit grey scaled)
        **({"pooled": True} if pooled else {}),
    }
    return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:16]


@torch.inference_mode()
def trunk_features(
    model: PartAttentionNetwork,
    paths: Sequence[Path],
    cache_dir: Path,
    flips: bool = False,
    batch_size: int = 16,
    workers: int = 2,
    device: str = "cpu",
    pooled: bool = False,
) -> list[torch.Tensor]:
    """Per trunk level, (N, F, C, h, w) float16 maps, F = 2 with mirrored copies; cached on disk by
    content key. ``pooled``: each map's spatial mean instead, (N, F, C)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    kind = "pooled" if pooled else "trunk"
    path = cache_dir / f"{kind}-{model.config.trunk}-{_cache_key(model, paths, flips, pooled)}.pt"
    if path.is_file():
        log.info("trunk features from cache %s", path)
        return torch.load(path, weights_only=True)
    run = trunk_runner(model, device)
    size = (model.config.image_height, model.config.image_width)
    loader = DataLoader(ImageFiles(paths, size), batch_size=batch_size, num_workers=workers)
    chunks: list[list[torch.Tensor]] = []
    for images in progress(loader, len(loader), f"trunk features of {len(paths)} photos", "batches"):
        views = [
            [torch.from_numpy(level) for level in run(v)] for v in ([images, images.flip(-1)] if flips else [images])
        ]
        if pooled:
            views = [[level.float().mean((-2, -1)) for level in view] for view in views]
        chunks.append([torch.stack([view[level].half().cpu() for view in views], 1) for level in range(len(views[0]))])
    features = [torch.cat(level) for level in zip(*chunks, strict=True)]
    tmp = path.with_suffix(".tmp")
    torch.save(features, tmp)
    tmp.replace(path)  # a killed run never leaves a half-written cache entry
    return features


TrunkRun = Callable[[torch.Tensor], list[np.ndarray]]  # (B, 3, H, W) inputs in [0, 1] -> float16 maps per level


def trunk_runner(model: PartAttentionNetwork, device: str = "cpu") -> TrunkRun:
    """The frozen trunk for caching its maps: on OpenVINO where it is installed and the device is the
    CPU (5.6x PyTorch's speed here, maps within 1e-4 of it), else PyTorch."""
    model = model.eval().to(device)
    if device == "cpu":
        try:
            return _openvino_trunk(model)
        except ImportError:
            log.info("OpenVINO is not installed: the trunk runs on PyTorch")

    @torch.inference_mode()
    def run(images: torch.Tensor) -> list[np.ndarray]:
        return [level.half().cpu().numpy() for level in model.trunk_forward(images.to(device))]

    return run


class _Trunk(torch.nn.Module):
    def __init__(self, model: PartAttentionNetwork) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.trunk_forward(images))


def _openvino_trunk(model: PartAttentionNetwork) -> TrunkRun:
    import openvino as ov

    size = (model.config.image_height, model.config.image_width)
    with warnings.catch_warnings():  # the tracer's notes on constants are expected
        warnings.simplefilter("ignore")
        converted = ov.convert_model(
            _Trunk(model).eval(), example_input=torch.rand(2, 3, *size), input=[(-1, 3, *size)]
        )
    compiled = ov.Core().compile_model(
        converted, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    )
    request = compiled.create_infer_request()

    def run(images: torch.Tensor) -> list[np.ndarray]:
        results = request.infer(np.ascontiguousarray(images.numpy()))
        return [results[output].astype(np.float16) for output in compiled.outputs]

    return run
