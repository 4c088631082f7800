"""Checkpoints that carry everything needed to rebuild and use the model."""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from model.config import ModelConfig
from model.errors import CheckpointError
from model.network import PartAttentionNetwork

FORMAT_VERSION = 2  # 2: multi-level trunk, content-placed crops, crop-scored labels
TRUNK_PREFIX = "trunk."
# What save_checkpoint writes itself; anything else in a payload (metrics…) is the caller's extra.
CHECKPOINT_KEYS = ("format_version", "config", "labels", "input_size", "normalisation", "state_dict", "trunk_stored")


def save_checkpoint(
    path: str | os.PathLike[str],
    model: PartAttentionNetwork,
    with_trunk: bool = True,
    half: bool = False,
    **extra: Any,
) -> Path:
    """Write atomically: config, labels, input size, normalisation, weights and ``extra`` (metrics…).

    ``with_trunk=False`` leaves out the trunk's weights, for a trunk that was not trained: loading
    takes them from where the config says (the ImageNet weights' package). ``half`` stores floating
    weights as float16 (loaded back into float32): together they make a frozen-trunk model's
    checkpoint a quarter of its size."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    state = {
        name: tensor.half() if half and tensor.is_floating_point() else tensor
        for name, tensor in model.state_dict().items()
        if with_trunk or not name.startswith(TRUNK_PREFIX)
    }
    payload = {
        "format_version": FORMAT_VERSION,
        "config": asdict(cfg),
        "labels": list(cfg.labels),
        "input_size": [cfg.image_height, cfg.image_width],
        "normalisation": {"mean": list(cfg.mean or ()), "std": list(cfg.std or ())},
        "state_dict": state,
        "trunk_stored": with_trunk,
        **extra,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def resave_checkpoint(
    path: str | os.PathLike[str], model: PartAttentionNetwork, payload: dict[str, Any], metrics: dict[str, Any]
) -> Path:
    """Write ``model`` to ``path`` with ``payload``'s extras (what the caller of save_checkpoint
    added) and ``metrics`` in place of its metrics: a checkpoint given a new head, in float16, its
    trunk stored or not as before."""
    kept = {k: v for k, v in payload.items() if k not in CHECKPOINT_KEYS and k != "metrics"}
    return save_checkpoint(
        path, model, with_trunk=payload.get("trunk_stored", True), half=True, metrics=metrics, **kept
    )


def load_checkpoint(path: str | os.PathLike[str], device: str = "cpu") -> tuple[PartAttentionNetwork, dict[str, Any]]:
    """Rebuild the model from the checkpoint (and, when it holds no trunk, the trunk's ImageNet weights
    from their local package; nothing is downloaded); eval mode."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)  # plain tensors and dicts: no code runs
    except Exception as exc:  # torch.load raises many kinds for a file that is not a checkpoint
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"cannot load the checkpoint {path}: {first_line}") from exc
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        version = payload.get("format_version") if isinstance(payload, dict) else None
        raise CheckpointError(f"{path} has checkpoint format {version}, expected {FORMAT_VERSION}")
    # Checkpoints written before the whole-map scores existed have none.
    recorded = {"whole_scores": False, **payload["config"]}
    # Until look_whole_share (2026-12-07) a catalogue photo's look was its crop's or its whole photo's, by name.
    if "look_product_region" in recorded:
        region = recorded.pop("look_product_region")
        if region not in ("crop", "whole"):
            raise CheckpointError(f"{path} names an unknown look_product_region {region!r}")
        recorded.setdefault("look_whole_share", 1.0 if region == "whole" else 0.0)
    if payload.get("trunk_stored", True):
        config = ModelConfig(**{**recorded, "pretrained": False, "trunk_weights": None})
    else:
        config = ModelConfig(**recorded)
        if not (config.pretrained or config.trunk_weights):
            raise CheckpointError(f"{path} holds no trunk weights and its config names none to load")
    model = PartAttentionNetwork(config)
    missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    missing = [name for name in missing if payload.get("trunk_stored", True) or not name.startswith(TRUNK_PREFIX)]
    if missing or unexpected:
        raise CheckpointError(f"{path} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.config = ModelConfig(**recorded)  # keep the recorded provenance of the trunk
    return model.to(device).eval(), payload


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
