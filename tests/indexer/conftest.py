from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.checkpoint import save_checkpoint
from model.network import PartAttentionNetwork
from tests.conftest import tiny_config

COLOURS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (230, 200, 40), (200, 40, 200), (40, 200, 200)]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny model: enough to exercise the indexer's plumbing."""
    import torch

    torch.manual_seed(0)
    model = PartAttentionNetwork(tiny_config()).eval()
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", model)


def make_catalogue(folder: Path, count: int = 12, bad: bool = False) -> Path:
    """``count`` coloured product images with a metadata CSV; ``bad`` adds every kind of broken entry."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    rows = []
    for i in range(count):
        image = np.full((48, 48, 3), 255, dtype=np.uint8)
        image[8:40, 8:40] = COLOURS[i % len(COLOURS)]
        image = np.clip(image.astype(int) + rng.integers(-20, 20, image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / "images" / f"p{i}.jpg")
        rows.append({"id": f"p{i}", "name": f"product {i}", "colour": str(COLOURS[i % len(COLOURS)])})
    if bad:
        (folder / "images" / "empty.jpg").write_bytes(b"")
        (folder / "images" / "text.jpg").write_bytes(b"hello, not an image")
        noise = Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8))
        noise.save(folder / "images" / "truncated.jpg")
        whole = (folder / "images" / "truncated.jpg").read_bytes()
        (folder / "images" / "truncated.jpg").write_bytes(whole[: len(whole) // 2])  # cut inside the scan
        Image.new("L", (8000, 6000)).save(folder / "images" / "huge.png")  # 48 Mpx: over the pixel limit
        rows += [{"id": name, "name": name, "colour": ""} for name in ("empty", "text", "truncated", "huge")]
        rows += [{"id": "missing", "name": "no file", "colour": ""}, {"id": "p1", "name": "duplicate", "colour": ""}]
    with open(folder / "metadata.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "name", "colour"])
        writer.writeheader()
        writer.writerows(rows)
    return folder
