from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from model.config import ModelConfig

SHARED_DATA = Path(os.environ.get("FASHION_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tiny_config(**overrides: object) -> ModelConfig:
    """A small random-init network that runs in milliseconds on a CPU."""
    values: dict[str, object] = dict(
        labels=["red", "green", "blue"],
        trunk="efficientnet_lite0",
        pretrained=False,
        image_height=64,
        image_width=48,
        channels=8,
        steps=3,
        crop_height=3,
        crop_width=2,
        codewords=4,
        hidden=16,
    )
    values.update(overrides)
    return ModelConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
def ccp_root() -> Path:
    root = SHARED_DATA / "ccp"
    if not root.is_dir():
        pytest.skip(f"CCP data not found at {root} (set FASHION_DATA_DIR)")
    return root
