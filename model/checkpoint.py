"""Checkpoints that carry everything needed to rebuild and use the model."""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from model.config import ModelConfig
from model.network import PartAttentionNetwork

FORMAT_VERSION = 2  # 2: multi-level trunk, content-placed crops, crop-scored labels


def save_checkpoint(path: str | os.PathLike[str], model: PartAttentionNetwork, **extra: Any) -> Path:
    """Write atomically: config, labels, input size, normalisation, weights and ``extra`` (metrics…)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    payload = {
        "format_version": FORMAT_VERSION,
        "config": asdict(cfg),
        "labels": list(cfg.labels),
        "input_size": [cfg.image_height, cfg.image_width],
        "normalisation": {"mean": list(cfg.mean or ()), "std": list(cfg.std or ())},
        "state_dict": model.state_dict(),
        **extra,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | os.PathLike[str], device: str = "cpu") -> tuple[PartAttentionNetwork, dict[str, Any]]:
    """Rebuild the model from the checkpoint alone (no trunk weights are fetched); eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    payload = torch.load(path, map_location=device, weights_only=True)  # plain tensors and dicts: no code runs
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} has checkpoint format {payload.get('format_version')}, expected {FORMAT_VERSION}")
    config = ModelConfig(**{**payload["config"], "pretrained": False, "trunk_weights": None})
    model = PartAttentionNetwork(config)
    model.load_state_dict(payload["state_dict"])
    model.config = ModelConfig(**payload["config"])  # keep the recorded provenance of the trunk
    return model.to(device).eval(), payload


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
