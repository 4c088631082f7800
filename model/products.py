"""The model learns product photos too: each catalogue product's category from its own photo, so a
shop without category metadata still gets one part index per product.

    python -m model.products --checkpoint checkpoints/attention/best.pt --products $FASHION_DATA_DIR/fashion-product

(``model.train --products DIR`` runs it after training.) Products are the Kaggle layout (``styles.csv``
+ ``images/``); the category is the product's ``articleType`` as a CCP label, or ``other`` where it has
none (perfume, watches…). A seeded 10% of the products is held out and never trained on; a further
10% chooses the regularisation. The head is a logistic regression on the frozen trunk's last map,
pooled (cached once), written into the checkpoint as ``product_head``, with its figures.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from model.article_types import ARTICLE_TYPE_TO_LABEL
from model.checkpoint import load_checkpoint, save_checkpoint
from model.errors import run_command
from model.features import trunk_features
from model.labels import group_of
from model.network import PartAttentionNetwork
from model.progress import configure_logging

log = logging.getLogger("model.products")

OTHER = "other"  # a product type with no CCP counterpart: it joins no part index
HELD_OUT = 0.1  # of the products: the test set, never trained on
VALIDATION = 0.1  # of the products: chooses C
C_VALUES = (0.01, 0.1, 1.0)
SEED = 0


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


def fit_product_head(
    model: PartAttentionNetwork, root: Path, cache_dir: Path, workers: int = 2, device: str = "cpu"
) -> tuple[PartAttentionNetwork, dict[str, Any]]:
    """A copy of ``model`` with a product head fitted on ``root``'s products, and its figures."""
    products = read_products(root)
    categories = sorted({p.category for p in products})
    y = np.array([categories.index(p.category) for p in products])
    pooled = trunk_features(model, [p.image for p in products], cache_dir, workers=workers, device=device, pooled=True)
    x = pooled[-1][:, 0].float().numpy()  # the last level, unmirrored
    train, val, held = split_products(len(products))
    scaler = StandardScaler().fit(x[train])
    fits = {}
    for c in C_VALUES:
        fitted = LogisticRegression(C=c, max_iter=3000).fit(scaler.transform(x[train]), y[train])
        fits[c] = (fitted, accuracy(categories, y[val], fitted.predict(scaler.transform(x[val]))))
        log.info("C=%g: validation %s", c, fits[c][1])
    best = max(C_VALUES, key=lambda c: fits[c][1]["label_top1"])
    classifier = fits[best][0]
    held_out = accuracy(categories, y[held], classifier.predict(scaler.transform(x[held])))
    log.info("chosen C=%g; held-out products: %s", best, held_out)

    config = replace(model.config, product_labels=categories)
    with_head = PartAttentionNetwork(replace(config, pretrained=False, trunk_weights=None))
    with_head.load_state_dict(model.state_dict(), strict=False)
    with_head.config = config
    # The scaler folds into the linear layer: w' = w / sigma, b' = b - w' . mu. A category with no
    # training product (it may fall in the held-out tenth only) is never predicted.
    weight = np.zeros((len(categories), x.shape[1]))
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
        "train_products": int(len(train)),
        "c": best,
        "validation": fits[best][1],
        "held_out": held_out,
        "features": "trunk's last map, global average (frozen ImageNet trunk)",
    }
    return with_head.eval(), report


def add_product_head(checkpoint: Path, root: Path, cache_dir: Path, workers: int = 2, device: str = "cpu") -> Path:
    """Fit the product head and write it into ``checkpoint`` (its other contents kept)."""
    model, payload = load_checkpoint(checkpoint, device)
    with_head, report = fit_product_head(model, root, cache_dir, workers, device)
    kept = {
        k: v
        for k, v in payload.items()
        if k not in ("format_version", "config", "labels", "input_size", "normalisation", "state_dict", "trunk_stored")
    }
    metrics = {**kept.pop("metrics", {}), "products": report}
    return save_checkpoint(
        checkpoint, with_head, with_trunk=payload.get("trunk_stored", True), half=True, metrics=metrics, **kept
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--products", type=Path, required=True, help="Kaggle layout: styles.csv and images/")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache/features"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    configure_logging()
    add_product_head(args.checkpoint, args.products, args.cache_dir, args.workers, args.device)


if __name__ == "__main__":
    sys.exit(run_command(main))
