"""The model learns product photos too: each catalogue product's category from its own photo, so a
shop without category metadata still gets one part index per product.

    python -m model.products --checkpoint checkpoints/attention/best.pt --products $FASHION_DATA_DIR/fashion-product

(``model.train --products DIR`` runs it after training.) Products are the Kaggle layout (``styles.csv``
+ ``images/``); the category is the product's ``articleType`` as a CCP label, or ``other`` where it has
none (perfume, watches…). A seeded 10% of the products is held out and never trained on; a further
10% chooses. The head is a logistic regression on the frozen trunk's last map, pooled (cached once),
written into the checkpoint as ``product_head``, with its figures.

A shop's own photos are not the product set's studio shots, so the head may also be fitted on
(SOURCES) the training products re-photographed as another shop would (model.photography: laid
flat, hung, set down, on white with a shadow, in other light) and on CCP's item crops (an item of a
street photo cut by its mask's box, as in bench/new_shop.py) of the odd-numbered training photos
outside CCP's validation photos. Which sources, and C, are chosen on the validation products (as
shot and re-photographed) and the validation photos' item crops (CHOICE_RULE); the even-numbered
(test) photos are never used here. CCP's folder is needed beside the product set
($FASHION_DATA_DIR/ccp, or ``--data``).
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader, Dataset

from model.article_types import ARTICLE_TYPE_TO_LABEL
from model.checkpoint import load_checkpoint, resave_checkpoint
from model.data import CROP_MARGIN, MIN_CROP_PIXELS, VALIDATION_FRACTION, ClothingCoParsing, data_dir
from model.errors import run_command
from model.features import trunk_digest, trunk_features, trunk_runner
from model.imaging import decode_image, letterbox, to_input
from model.labels import group_of
from model.network import PartAttentionNetwork
from model.photography import SurfaceWindow, draw_style, fabric_surface, shop_photo, street_surfaces
from model.progress import configure_logging, progress

log = logging.getLogger("model.products")

OTHER = "other"  # a product type with no CCP counterpart: it joins no part index
HELD_OUT = 0.1  # of the products: the test set, never trained on
VALIDATION = 0.1  # of the products: chooses C
C_VALUES = (0.01, 0.1, 1.0)
SEED = 0
SOURCES = ("catalogue", "shop", "ccp")  # the product photos as shot, re-photographed, CCP's item crops
SOURCE_CHOICES = (("catalogue",), ("catalogue", "shop"), ("catalogue", "shop", "ccp"))  # chosen on validation
CCP_WEIGHTS = (1.0, 3.0)  # an item crop's weight in the fit beside a product photo's (1): chosen on validation
SHOP_VIEWS = 1  # re-photographed views of each training product
VALIDATION_VIEW = 100  # the first view number of the other splits' products (apart from the training views)
FABRIC_SHARE = 0.35  # of the re-photographed views on a surface: on another product's fabric (a bed)
VIEWS_FORMAT = 2  # bump when a view's pixels change (model.photography, ClothingCoParsing.item_crops)


# The product set's master categories whose photos show the product alone (shoes, bags, watches on
# white; checked by eye on 64 random ones), not worn with other clothes as apparel is.
ALONE = ("Footwear", "Accessories")


class Product(NamedTuple):
    id: str
    image: Path
    category: str  # its CCP label, or OTHER
    alone: bool  # the photo shows the product alone (ALONE)


def read_products(root: Path) -> list[Product]:
    """Every product with an image, its category its CCP label or ``other``."""
    out = []
    with open(root / "styles.csv", newline="", encoding="utf-8", errors="replace") as handle:
        for row in csv.DictReader(handle):
            image = root / "images" / f"{row['id']}.jpg"
            if image.is_file():
                category = ARTICLE_TYPE_TO_LABEL.get(row.get("articleType", ""), OTHER)
                out.append(Product(row["id"], image, category, row.get("masterCategory", "") in ALONE))
    return out


def split_products(count: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded (train, validation, held-out) row indices."""
    order = np.random.default_rng(seed).permutation(count)
    held, val = int(round(count * HELD_OUT)), int(round(count * VALIDATION))
    return order[held + val :], order[held : held + val], order[:held]


SPLITS = ("train", "validation", "held_out")


def product_split(root: Path, labels: list[str], split: str) -> list[Product]:
    """The products of one tenth of ``split_products`` ("train": the other eight) whose category
    is one of the model's ``labels``."""
    products = read_products(root)
    rows = split_products(len(products))[SPLITS.index(split)]
    return [products[i] for i in sorted(rows.tolist()) if products[i].category in labels]


def accuracy(categories: list[str], truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Top-1 label and group accuracy (``other`` is its own group)."""
    names = np.array(categories)
    groups = np.array([group_of(name) for name in categories])
    return {
        "label_top1": float(np.mean(names[truth] == names[predicted])),
        "group_top1": float(np.mean(groups[truth] == groups[predicted])),
        "products": int(len(truth)),
    }


class ShopViews(Dataset[torch.Tensor]):
    """Products re-photographed as another shop would (model.photography), as the model's input:
    view ``view`` of each product, seeded by (SEED, product row, view)."""

    def __init__(
        self,
        products: list[Product],
        rows: Sequence[int],
        view: int,
        streets: list[SurfaceWindow],
        fabrics: Sequence[int],
        size: tuple[int, int],
    ) -> None:
        self.products, self.rows, self.view, self.streets, self.fabrics, self.size = (
            products,
            list(rows),
            view,
            streets,
            list(fabrics),
            size,
        )

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> torch.Tensor:
        row = self.rows[i]
        rng = np.random.default_rng([SEED, row, self.view])
        style = draw_style(rng)
        surface = None
        if style != "on-white":
            if rng.random() < FABRIC_SHARE:
                other = self.products[self.fabrics[int(rng.integers(len(self.fabrics)))]]
                surface = fabric_surface(decode_image(other.image), rng)
            else:
                path, box = self.streets[int(rng.integers(len(self.streets)))]
                with Image.open(path) as street:
                    surface = street.convert("RGB").crop(box)
        photo = shop_photo(decode_image(self.products[row].image), surface, style, rng)
        return to_input(letterbox(photo, self.size)[0])


class Crops(Dataset[torch.Tensor]):
    def __init__(self, crops: Sequence[Image.Image], size: tuple[int, int]) -> None:
        self.crops, self.size = list(crops), size

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, i: int) -> torch.Tensor:
        return to_input(letterbox(self.crops[i], self.size)[0])


@torch.inference_mode()
def pooled_views(
    model: PartAttentionNetwork,
    views: Dataset[torch.Tensor],
    name: str,
    spec: object,
    cache_dir: Path,
    workers: int,
    device: str = "cpu",
) -> np.ndarray:
    """(N, C) float32: the product head's input (the trunk's last map, averaged) of each view,
    cached by the trunk (its weights and input) and ``spec`` (what the views are: their photos'
    names and how they are made)."""
    cfg = model.config
    trunk = (cfg.trunk, trunk_digest(model), cfg.image_height, cfg.image_width, cfg.mean, cfg.std)
    key = zlib.crc32(repr((trunk, VIEWS_FORMAT, spec)).encode())
    path = cache_dir / f"product-{name}-{key:08x}.npy"
    if path.is_file():
        return np.load(path)
    run = trunk_runner(model, device)
    loader = DataLoader(views, batch_size=32, num_workers=workers)
    count = len(views)  # type: ignore[arg-type]
    chunks = [
        run(images)[-1].astype(np.float32).mean((-2, -1))
        for images in progress(loader, len(loader), f"{name}: {count} views", "batches")
    ]
    out = np.concatenate(chunks)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, out)
    tmp.replace(path)  # a killed run never leaves a half-written cache entry
    return out


@dataclass
class Views:
    """The product head's inputs and their categories (rows of ``categories``), by source and split."""

    x: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # (source, split) -> (N, C)
    y: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)

    def add(self, source: str, split: str, x: np.ndarray, y: np.ndarray) -> None:
        self.x[source, split], self.y[source, split] = x, y


def product_head_views(
    model: PartAttentionNetwork, root: Path, data: Path | None, cache_dir: Path, workers: int, device: str
) -> tuple[list[str], Views]:
    """Every source's views of the training, validation and held-out products (held-out: the
    catalogue and its re-photographed views only, for the report) and of CCP's item crops."""
    products = read_products(root)
    ccp = ClothingCoParsing(data_dir(data) / "ccp")
    # CCP's validation photos as training holds them out with its default seed (TrainConfig.seed, 0)
    fit_photos, val_photos = ccp.validation_split(VALIDATION_FRACTION, SEED)
    photos = {
        "train": [s.image for s in fit_photos if s.source == "pixel-level"],
        "validation": [s.image for s in val_photos],
    }
    # (crop, label, photo) of each item of a model's label
    crops = {
        split: [
            (image, label, photo.stem)
            for photo in found
            for image, label in ccp.item_crops(ccp.mask_path(photo))
            if label in model.config.labels
        ]
        for split, found in photos.items()
    }
    categories = sorted({p.category for p in products} | {label for found in crops.values() for _, label, _ in found})
    y_products = np.array([categories.index(p.category) for p in products])
    pooled = trunk_features(model, [p.image for p in products], cache_dir, workers=workers, device=device, pooled=True)
    catalogue = pooled[-1][:, 0].float().numpy()  # the last level, unmirrored
    rows = dict(zip(SPLITS, (sorted(r.tolist()) for r in split_products(len(products))), strict=True))
    streets = street_surfaces(ccp, [s.image for s in fit_photos if s.source == "pixel-level"])
    size = (model.config.image_height, model.config.image_width)
    views = Views()
    for split in SPLITS:
        views.add("catalogue", split, catalogue[rows[split]], y_products[rows[split]])
        # the training products re-photographed SHOP_VIEWS times; the others once, with views of their own
        shots = range(SHOP_VIEWS) if split == "train" else [VALIDATION_VIEW + SPLITS.index(split)]
        xs = [
            pooled_views(
                model,
                ShopViews(products, rows[split], shot, streets, rows["train"], size),
                f"shop-{split}-{shot}",
                ([products[r].id for r in rows[split]], shot, streets, [products[r].id for r in rows["train"]]),
                cache_dir,
                workers,
                device,
            )
            for shot in shots
        ]
        views.add("shop", split, np.concatenate(xs), np.tile(y_products[rows[split]], len(xs)))
    for split, found in crops.items():
        spec = ([(photo, label) for _, label, photo in found], MIN_CROP_PIXELS, CROP_MARGIN)
        x = pooled_views(model, Crops([c for c, _, _ in found], size), f"ccp-{split}", spec, cache_dir, workers, device)
        views.add("ccp", split, x, np.array([categories.index(label) for _, label, _ in found]))
    return categories, views


def fit_product_head(
    model: PartAttentionNetwork,
    root: Path,
    cache_dir: Path,
    workers: int = 2,
    device: str = "cpu",
    data: Path | None = None,
) -> tuple[PartAttentionNetwork, dict[str, Any]]:
    """A copy of ``model`` with a product head fitted on ``root``'s products (as the catalogue
    shows them, re-photographed, and CCP's training item crops), and its figures. Which sources
    and which C are chosen on validation (CHOICE_RULE)."""
    categories, views = product_head_views(model, root, data, cache_dir, workers, device)
    fits = {}
    for sources in SOURCE_CHOICES:
        x = np.concatenate([views.x[s, "train"] for s in sources])
        y = np.concatenate([views.y[s, "train"] for s in sources])
        scaler = StandardScaler().fit(x)
        for crop_weight in CCP_WEIGHTS if "ccp" in sources else (1.0,):
            # each item crop counts `crop_weight` times: they are few (1,400) beside 15,000 product photos
            sample_weight = np.concatenate(
                [np.full(len(views.y[s, "train"]), crop_weight if s == "ccp" else 1.0) for s in sources]
            )
            name = "+".join(sources) + (f" (crops x{crop_weight:g})" if "ccp" in sources else "")
            for c in C_VALUES:
                fitted = LogisticRegression(C=c, max_iter=3000).fit(scaler.transform(x), y, sample_weight=sample_weight)
                figures = {
                    source: accuracy(
                        categories,
                        views.y[source, "validation"],
                        fitted.predict(scaler.transform(views.x[source, "validation"])),
                    )
                    for source in SOURCES
                }
                fits[name, c] = (scaler, fitted, figures)
                log.info("%s, C=%g: validation %s", name, c, figures)
    chosen = choose(fits)
    scaler, classifier, _ = fits[chosen]
    held_out = {
        source: accuracy(
            categories, views.y[source, "held_out"], classifier.predict(scaler.transform(views.x[source, "held_out"]))
        )
        for source in ("catalogue", "shop")
    }
    log.info("chosen %s, C=%g; held-out products: %s", *chosen, held_out)

    config = replace(model.config, product_labels=categories)
    with_head = PartAttentionNetwork(replace(config, pretrained=False, trunk_weights=None))
    # every weight but an earlier product head's (its categories may differ)
    kept = {k: v for k, v in model.state_dict().items() if not k.startswith("product_head.")}
    with_head.load_state_dict(kept, strict=False)
    with_head.config = config
    # The scaler folds into the linear layer: w' = w / sigma, b' = b - w' . mu. A category with no
    # training example (it may fall in the held-out tenth only) is never predicted.
    weight = np.zeros((len(categories), scaler.mean_.shape[0]))
    bias = np.full(len(categories), -1e4)
    weight[classifier.classes_] = classifier.coef_ / scaler.scale_
    bias[classifier.classes_] = classifier.intercept_ - weight[classifier.classes_] @ scaler.mean_
    head = with_head.product_head
    if head is None:  # product_labels is never empty here (every product has a category)
        raise ValueError("no product categories found")
    head.weight.data = torch.tensor(weight, dtype=torch.float32)
    head.bias.data = torch.tensor(bias, dtype=torch.float32)
    report = {
        "categories": categories,
        "train_examples": {source: int(len(views.y[source, "train"])) for source in SOURCES},
        "sources": chosen[0],
        "c": chosen[1],
        "rule": CHOICE_RULE,
        "validation": {f"{sources}, C={c}": figures for (sources, c), (_, _, figures) in fits.items()},
        "held_out": held_out["catalogue"],
        "held_out_shop_photos": held_out["shop"],
        "features": "trunk's last map, global average (frozen ImageNet trunk)",
    }
    return with_head.eval(), report


CHOICE_RULE = (
    "the highest mean group top-1 of the validation products re-photographed and the validation CCP item "
    "crops, among the fits whose catalogue-photo group top-1 is within 0.005 of the best catalogue-only fit's"
)


def choose(fits: dict[tuple[str, float], tuple[Any, Any, dict[str, dict[str, float]]]]) -> tuple[str, float]:
    """CHOICE_RULE over the fits' validation figures."""
    floor = max(f["catalogue"]["group_top1"] for (sources, _), (_, _, f) in fits.items() if sources == "catalogue")
    eligible = [key for key, (_, _, f) in fits.items() if f["catalogue"]["group_top1"] >= floor - 0.005]
    return max(eligible, key=lambda key: (fits[key][2]["shop"]["group_top1"] + fits[key][2]["ccp"]["group_top1"]) / 2)


def add_product_head(
    checkpoint: Path, root: Path, cache_dir: Path, workers: int = 2, device: str = "cpu", data: Path | None = None
) -> Path:
    """Fit the product head and write it into ``checkpoint`` (its other contents kept)."""
    model, payload = load_checkpoint(checkpoint, device)
    with_head, report = fit_product_head(model, root, cache_dir, workers, device, data)
    return resave_checkpoint(checkpoint, with_head, payload, {**payload.get("metrics", {}), "products": report})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--products", type=Path, required=True, help="Kaggle layout: styles.csv and images/")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache/features"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", type=Path, default=None, help="data root, for CCP (default $FASHION_DATA_DIR)")
    args = parser.parse_args(argv)
    configure_logging()
    add_product_head(args.checkpoint, args.products, args.cache_dir, args.workers, args.device, args.data)


if __name__ == "__main__":
    sys.exit(run_command(main))
