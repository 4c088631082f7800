"""Small generated models and catalogues shared by the tests."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from indexer.build import IndexOptions, build_bundle
from indexer.bundle import BundleStore
from indexer.catalogue import load_catalogue
from model.config import ModelConfig

SHARED_DATA = Path(os.environ.get("FASHION_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
COLOURS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (230, 200, 40), (200, 40, 200), (40, 200, 200)]


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


def make_catalogue(folder: Path, count: int = 12, bad: bool = False, prefix: str = "p") -> Path:
    """``count`` coloured product images with a metadata CSV; ``bad`` adds every kind of broken entry."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    rows = []
    for i in range(count):
        image = np.full((48, 48, 3), 255, dtype=np.uint8)
        image[8:40, 8:40] = COLOURS[i % len(COLOURS)]
        image = np.clip(image.astype(int) + rng.integers(-20, 20, image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / "images" / f"{prefix}{i}.jpg")
        rows.append({"id": f"{prefix}{i}", "name": f"product {i}", "colour": str(COLOURS[i % len(COLOURS)])})
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


def add_field(folder: Path, name: str, values: list[str]) -> Path:
    """Give a ``make_catalogue`` catalogue's items a metadata field, one value per item in order."""
    metadata = folder / "metadata.csv"
    with open(metadata, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row, value in zip(rows, values, strict=True):
        row[name] = value
    with open(metadata, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*rows[0]])
        writer.writeheader()
        writer.writerows(rows)
    return folder


TINY_CCP_LABELS = ["null", "bag", "skin", "shoes", "jeans"]


def tiny_ccp(root: Path, photos: int = 10) -> Path:
    """A Clothing Co-Parsing folder in miniature: ``photos`` pixel-level photos (160 x 120, a street
    of their own, a 45 x 50 bag in the upper right and 60 x 38 shoes at the bottom, placed anew in
    each, a 100-pixel patch of skin) with their masks, and two image-level photos. Returns ``root``."""
    import scipy.io

    for folder in ("photos", "annotations/image-level", "annotations/pixel-level"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    names = np.empty((1, len(TINY_CCP_LABELS)), dtype=object)
    names[0, :] = TINY_CCP_LABELS
    scipy.io.savemat(root / "label_list.mat", {"label_list": names})
    rng = np.random.default_rng(0)
    for n in range(1, photos + 1):
        # each photo its own street (a gradient of its own, noise) and its own placing of the items,
        # so that none is a near-copy of another (model.data.drop_near_copies)
        ramp = np.linspace(0, 1, 160)[None, :, None] * rng.integers(-120, 120, 3) + rng.integers(60, 190, 3)
        pixels = np.clip(ramp + rng.integers(-30, 30, (120, 160, 3)), 0, 255).astype(np.uint8)
        mask = np.zeros((120, 160), dtype=np.uint16)
        bx, by, sx = int(rng.integers(60, 115)), int(rng.integers(0, 30)), int(rng.integers(0, 50))
        mask[by : by + 50, bx : bx + 45] = TINY_CCP_LABELS.index("bag")  # 2,250 pixels
        mask[80:118, sx : sx + 60] = TINY_CCP_LABELS.index("shoes")  # 2,280 pixels
        mask[100:110, 140:150] = TINY_CCP_LABELS.index("skin")  # 100: a non-item
        pixels[mask == TINY_CCP_LABELS.index("bag")] = COLOURS[0]
        pixels[mask == TINY_CCP_LABELS.index("shoes")] = COLOURS[2]
        Image.fromarray(pixels).save(root / "photos" / f"{n:04d}.jpg")
        scipy.io.savemat(root / "annotations" / "pixel-level" / f"{n:04d}.mat", {"groundtruth": mask})
    for n in range(photos + 1, photos + 3):
        Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(root / "photos" / f"{n:04d}.jpg")
        tags = np.array([[TINY_CCP_LABELS.index("bag")]])
        scipy.io.savemat(root / "annotations" / "image-level" / f"{n:04d}.mat", {"tags": tags})
    return root


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    """``image`` saved as ``fmt``; HEIF by pillow-heif's encoder (a dev dependency: the service
    reads HEIC through pi-heif, which only decodes)."""
    buffer = io.BytesIO()
    if fmt == "HEIF":
        import pillow_heif  # not registered as a Pillow opener: pi-heif stays the one that decodes

        pillow_heif.from_pillow(image).save(buffer, **options)
    else:
        image.save(buffer, fmt, **options)
    return buffer.getvalue()


def slice_before_its_metadata(
    folder: Path, store: BundleStore, checkpoint: Path, options: IndexOptions, first: int
) -> dict[str, object]:
    """A first slice of ``folder`` (a ``make_catalogue`` folder) embedded while it had no metadata
    file, the file put back after: a shop adding one before the slice's completion ran. Returns
    the catalogue the slice's manifest records."""
    kept = folder.parent / f"{folder.name}-metadata.csv"
    (folder / "metadata.csv").rename(kept)
    build_bundle(store, checkpoint, load_catalogue(folder), options, first=first)
    kept.rename(folder / "metadata.csv")
    made_from: dict[str, object] = store.manifest()["catalogue"]
    return made_from
