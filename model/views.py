"""Training views: every training photo seen as shot, mirrored and reframed (model.framing), the
product set's photos as a second source, and windows of street with nothing to wear; each view
with the labels it keeps and, in frozen-trunk training, its trunk maps, computed once and kept on
disk (memory-mapped: tens of thousands of views do not fit in memory as tensors).

Partial labels: a view's ``known`` says which of its targets are known.
- A CCP photo knows all its labels as shot. Reframed, an item that stays (KEPT_PIXELS and
  ``kept_share`` of it, KEPT_SHARE unless the training says otherwise) is present, one that leaves
  is absent, one cut in part is unknown; a photo labelled without masks (the image-level tags)
  keeps its labels only when the reframing keeps nearly all of it.
- A reframed photo as wide as the service makes wide is drawn at the frame's top, middle or bottom,
  as the service draws it (``as_served``, with ``Strength.wide_fill``).
- A product photo knows its own category present. A footwear or accessory photo shows the product
  alone (checked by eye on 64 random ones: all were), so every other group is known absent; an
  apparel photo (a model wearing the product with other clothes) knows nothing else.
- A street window with no item in it knows every label absent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from model.data import REGION_CELL, Sample
from model.features import trunk_digest, trunk_runner
from model.framing import (
    KEPT_PIXELS,
    KEPT_SHARE,
    NOTHING_LEFT_PIXELS,
    TRAIN_KINDS,
    FrameMap,
    Reframe,
    Strength,
    as_shot,
    background_window,
    frame_map,
    random_reframe,
    region_box,
    surviving_pixels,
)
from model.imaging import WIDE_ALIGNS, decode_image, frame_fill, letterbox, to_input
from model.labels import group_of
from model.losses import Item
from model.network import PartAttentionNetwork
from model.products import Product
from model.progress import progress

log = logging.getLogger(__name__)

NEARLY_WHOLE = 0.9  # a reframing that keeps this share of a photo's width and height keeps its tags
PRODUCT_KINDS = ("whole", "zoomout")  # a product photo's reframings: its product stays in the photo


@dataclass(frozen=True)
class View:
    image: Path
    reframe: Reframe | None  # None: as shot
    targets: torch.Tensor  # (C,) 1 where the label is present
    known: torch.Tensor  # (C,) 1 where the target is known
    items: tuple[Item, ...] = ()  # item boxes (and regions) on the view's input frame, for box supervision


@dataclass
class Example:
    """One training photo, seen in one of its views each epoch."""

    source: str  # "image-level", "pixel-level" (CCP), "product", "background"
    views: list[int] = field(default_factory=list)  # rows of TrainingViews.views
    tagged: bool = False  # labelled by CCP's image-level taggers


@dataclass
class TrainingViews:
    views: list[View] = field(default_factory=list)
    examples: list[Example] = field(default_factory=list)

    def add(self, source: str, views: Sequence[View], tagged: bool = False) -> None:
        start = len(self.views)
        self.views.extend(views)
        self.examples.append(Example(source, list(range(start, start + len(views))), tagged))

    def of(self, source: str) -> list[Example]:
        return [e for e in self.examples if e.source == source]


def photo_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def region_on_frame(region: np.ndarray, to_source: FrameMap, size: tuple[int, int]) -> torch.Tensor:
    """An item's coarse photo region (REGION_CELL pixels a cell) resampled onto the network
    input's frame, one cell per REGION_CELL input pixels: (H', W') in [0, 1]."""
    rows, cols = size[0] // REGION_CELL, size[1] // REGION_CELL
    region_h, region_w = (n * REGION_CELL for n in region.shape)
    # frame cell centres -> source pixels -> the region's [-1, 1] sampling coordinates
    xs = (to_source.scale_x * (torch.arange(cols) + 0.5) / cols + to_source.shift_x) / region_w
    ys = (to_source.scale_y * (torch.arange(rows) + 0.5) / rows + to_source.shift_y) / region_h
    grid = torch.stack(torch.meshgrid(xs * 2 - 1, ys * 2 - 1, indexing="xy"), -1)[None]  # (1, rows, cols, 2)
    source = torch.from_numpy(region).float()[None, None]
    return F.grid_sample(source, grid.float(), align_corners=False)[0, 0]


def as_served(reframe: Reframe, size: tuple[int, int], rng: np.random.Generator, strength: Strength) -> Reframe:
    """``reframe`` drawn at a random one of the places in the frame where the service draws a photo
    as wide as it makes (model.imaging.load_pixel_views); a photo that is not wide stays centred."""
    if strength.wide_fill <= 0 or frame_fill(*reframe.size, size) > strength.wide_fill:
        return reframe
    return replace(reframe, align=float(rng.choice(WIDE_ALIGNS)))


def ccp_view(
    sample: Sample, labels: list[str], size: tuple[int, int], reframe: Reframe | None, kept_share: float = KEPT_SHARE
) -> View:
    """A CCP training photo as ``reframe`` makes it, with the labels and item boxes it keeps."""
    width, height = photo_size(sample.image)
    to_source = frame_map(reframe, (width, height), size)
    index = {name: i for i, name in enumerate(labels)}
    targets, known = torch.zeros(len(labels)), torch.ones(len(labels))
    whole = reframe is None or reframe.keeps_whole(width, height)
    crop = reframe.crop if reframe is not None else (0.0, 0.0, float(width), float(height))
    nearly_whole = (crop[2] - crop[0]) >= NEARLY_WHOLE * width and (crop[3] - crop[1]) >= NEARLY_WHOLE * height
    items: list[Item] = []
    for name in sample.labels:
        if name not in index:
            continue
        c = index[name]
        region, box = sample.regions.get(name), sample.boxes.get(name)
        if whole:
            present = True
        elif region is not None:
            pixels, share = surviving_pixels(region, REGION_CELL, crop)
            present = pixels >= KEPT_PIXELS and share >= kept_share
            if present:
                box = region_box(region, REGION_CELL, crop, box)
            elif pixels >= NOTHING_LEFT_PIXELS:
                known[c] = 0.0  # cut in part: neither present nor absent
        elif nearly_whole and sample.source != "pixel-level":
            present, box = True, None  # a tag of a photo whose edges alone were cut
        else:
            present, known[c] = False, 0.0
        if not present:
            continue
        targets[c] = 1.0
        if box is not None:
            on_frame = region_on_frame(region, to_source, size) if region is not None else None
            items.append((c, torch.tensor(to_source.box_to_unit(box), dtype=torch.float32), on_frame))
    return View(sample.image, reframe, targets, known, tuple(items))


def background_view(sample: Sample, labels: list[str], window: tuple[float, float, float, float]) -> View:
    """A window of a street photo with no item in it: every label known absent."""
    return View(sample.image, Reframe(window), torch.zeros(len(labels)), torch.ones(len(labels)))


def product_view(product: Product, labels: list[str], reframe: Reframe | None) -> View:
    """A product photo: its category present; with the product alone, every other group absent."""
    targets, known = torch.zeros(len(labels)), torch.zeros(len(labels))
    c = labels.index(product.category)
    targets[c], known[c] = 1.0, 1.0
    if product.alone:
        own = group_of(product.category)
        for i, name in enumerate(labels):
            if group_of(name) != own:
                known[i] = 1.0
    return View(product.image, reframe, targets, known)


def ccp_views(
    sample: Sample,
    labels: list[str],
    size: tuple[int, int],
    rng: np.random.Generator,
    count: int,
    strength: Strength,
    kept_share: float = KEPT_SHARE,
) -> list[View]:
    """As shot, mirrored, and ``count`` random reframings (kinds taken in turn from a shuffled list);
    a reframed item is present where ``kept_share`` of it stays (and KEPT_PIXELS)."""
    width, height = photo_size(sample.image)
    views = [ccp_view(sample, labels, size, None), ccp_view(sample, labels, size, as_shot(width, height, True))]
    kinds = list(rng.permutation(TRAIN_KINDS))
    boxes = [box for name, box in sample.boxes.items() if name in labels]
    for i in range(count):
        kind = str(kinds[i % len(kinds)])
        focus = boxes[int(rng.integers(len(boxes)))] if boxes and kind == "closeup" else None
        reframe = as_served(random_reframe(rng, width, height, kind, strength, focus), size, rng, strength)
        views.append(ccp_view(sample, labels, size, reframe, kept_share))
    return views


def product_views(
    product: Product,
    labels: list[str],
    size: tuple[int, int],
    rng: np.random.Generator,
    count: int,
    strength: Strength,
) -> list[View]:
    """As shot and ``count`` random reframings that keep the product in the photo."""
    width, height = photo_size(product.image)
    views = [product_view(product, labels, None)]
    for i in range(count):
        kind = PRODUCT_KINDS[i % len(PRODUCT_KINDS)]
        reframe = as_served(random_reframe(rng, width, height, kind, strength), size, rng, strength)
        views.append(product_view(product, labels, reframe))
    return views


def background_views(sample: Sample, labels: list[str], rng: np.random.Generator) -> list[View]:
    """At most one street window with nothing to wear from a photo whose item regions are known."""
    width, height = photo_size(sample.image)
    window = background_window(rng, sample.regions, REGION_CELL, width, height)
    return [background_view(sample, labels, window)] if window is not None else []


# --- Trunk maps of the views, on disk

VIEWS_FORMAT = 1  # bump when a view's pixels change for the same reframing (Reframe.apply, the letterbox)


class ViewPixels(Dataset[torch.Tensor]):
    """A view's network input: the photo decoded, reframed, letterboxed."""

    def __init__(self, views: Sequence[tuple[Path, Reframe | None]], size: tuple[int, int]) -> None:
        self.views, self.size = list(views), size

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, i: int) -> torch.Tensor:
        return view_input(*self.views[i], self.size)


def view_input(image: Path, reframe: Reframe | None, size: tuple[int, int]) -> torch.Tensor:
    """(3, H, W) input in [0, 1] of a photo as ``reframe`` makes it (None: as served)."""
    photo = decode_image(image)
    if reframe is not None:
        photo = reframe.apply(photo)
    return to_input(letterbox(photo, size, align=reframe.align if reframe is not None else 0.5)[0])


def _views_key(model: PartAttentionNetwork, views: Sequence[tuple[Path, Reframe | None]]) -> str:
    cfg = model.config
    spec = {
        "format": VIEWS_FORMAT,
        "trunk": cfg.trunk,
        "weights": trunk_digest(model),
        "size": [cfg.image_height, cfg.image_width],
        "mean": cfg.mean,
        "std": cfg.std,
        "multiscale": cfg.multiscale,
        "views": [[str(path.resolve()), repr(reframe)] for path, reframe in views],
    }
    return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:16]


DONE = "done.json"  # written last: its presence marks a whole cache entry


def view_maps(
    model: PartAttentionNetwork,
    views: Sequence[tuple[Path, Reframe | None]],
    cache_dir: Path,
    batch_size: int = 32,
    workers: int = 2,
    device: str = "cpu",
) -> list[np.ndarray]:
    """Per trunk level, (N, C, h, w) float16 trunk maps of the views, memory-mapped from a cache
    folder keyed by the trunk, the input size and every view (photo and reframing)."""
    folder = cache_dir / f"views-{model.config.trunk}-{_views_key(model, views)}"
    if not (folder / DONE).is_file():
        _compute_view_maps(model, views, folder, batch_size, workers, device)
    else:
        log.info("trunk maps of %d views from cache %s", len(views), folder)
    levels = json.loads((folder / DONE).read_text())["levels"]
    return [np.load(folder / f"level{i}.npy", mmap_mode="r") for i in range(levels)]


def _compute_view_maps(
    model: PartAttentionNetwork,
    views: Sequence[tuple[Path, Reframe | None]],
    folder: Path,
    batch_size: int,
    workers: int,
    device: str,
) -> None:
    size = (model.config.image_height, model.config.image_width)
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    run = trunk_runner(model, device)
    loader = DataLoader(ViewPixels(views, size), batch_size=batch_size, num_workers=workers)
    stores: list[np.ndarray] = []
    row = 0
    for images in progress(loader, len(loader), f"trunk maps of {len(views)} views", "batches"):
        maps = run(images)
        if not stores:
            stores = [
                np.lib.format.open_memmap(
                    staging / f"level{i}.npy", mode="w+", dtype=np.float16, shape=(len(views), *level.shape[1:])
                )
                for i, level in enumerate(maps)
            ]
        for store, level in zip(stores, maps, strict=True):
            store[row : row + len(level)] = level
        row += len(images)
    for store in stores:
        store.flush()  # type: ignore[attr-defined]
    del stores
    (staging / DONE).write_text(json.dumps({"levels": len(list(staging.glob("level*.npy"))), "views": len(views)}))
    shutil.rmtree(folder, ignore_errors=True)
    staging.replace(folder)  # a killed run leaves a .partial folder, never a half-written entry
