"""The product head: a product photo's category, learned from a Kaggle-layout product set."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from indexer.catalogue import CatalogueItem
from indexer.embed import ItemParts, embed_items
from model.checkpoint import load_checkpoint, save_checkpoint
from model.imaging import load_input
from model.network import PartAttentionNetwork
from model.products import (
    C_VALUES,
    CCP_WEIGHTS,
    OTHER,
    SOURCE_CHOICES,
    SOURCES,
    add_product_head,
    choose,
    read_products,
    split_products,
)
from tests.helpers import tiny_ccp, tiny_config

# articleType -> the colour of its generated product photo
TYPES = {"Handbags": (200, 30, 30), "Jeans": (30, 60, 200), "Perfume and Body Mist": (40, 180, 40)}


def product_set(root: Path, per_type: int = 40) -> Path:
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for t, (name, colour) in enumerate(TYPES.items()):
        for i in range(per_type):
            image = np.full((48, 48, 3), 255, dtype=np.uint8)
            image[10:38, 10:38] = np.clip(np.array(colour) + rng.integers(-25, 25, 3), 0, 255)
            Image.fromarray(image).save(root / "images" / f"{t}{i:03d}.jpg")
            rows.append({"id": f"{t}{i:03d}", "articleType": name, "baseColour": "Red"})
    # one product of a rare type, placed in the held-out tenth: a category with no training example
    Image.fromarray(np.full((48, 48, 3), 90, dtype=np.uint8)).save(root / "images" / "rare.jpg")
    held_row = int(split_products(len(rows) + 1)[2][0])
    rows.insert(held_row, {"id": "rare", "articleType": "Belts", "baseColour": "Grey"})
    with open(root / "styles.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "articleType", "baseColour"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_products_are_read_and_split_without_overlap(tmp_path: Path) -> None:
    products = read_products(product_set(tmp_path / "products", per_type=10))
    assert {p.category for p in products} == {"bag", "belt", "jeans", OTHER}
    train, val, held = split_products(len(products))
    assert len(held) == 3 and len(val) == 3 and len(train) == 25
    assert not (set(train) & set(held)) and not (set(val) & set(held))
    assert (split_products(len(products))[2] == held).all()  # seeded


def test_product_head_is_fitted_saved_and_used_by_the_indexer(tmp_path: Path) -> None:
    root = product_set(tmp_path / "products")
    tiny_ccp(tmp_path / "data" / "ccp")  # its bags' crops join the fit; its shoes are no label of the model's
    # an earlier head of other categories: the fit replaces it
    config = tiny_config(labels=["bag", "jeans", "hat"], pretrained=True, product_labels=["bag", OTHER])
    model = PartAttentionNetwork(config).eval()
    checkpoint = save_checkpoint(tmp_path / "best.pt", model, with_trunk=False, metrics={"validation": {"x": 1}})
    add_product_head(checkpoint, root, tmp_path / "cache", workers=0, data=tmp_path / "data")

    loaded, payload = load_checkpoint(checkpoint)
    assert loaded.config.product_labels == ["bag", "belt", "jeans", OTHER]
    report = payload["metrics"]["products"]
    assert payload["metrics"]["validation"] == {"x": 1}  # what was there is kept
    assert report["held_out"]["products"] == 12 and report["held_out"]["label_top1"] >= 0.9
    assert report["held_out_shop_photos"]["products"] == 12
    assert report["train_examples"] == {"catalogue": 97, "shop": 97, "ccp": 3}  # the fit's 3 odd photos' bags
    # every candidate was measured on all three validation sources, and one of them chosen by the rule
    assert len(report["validation"]) == len(SOURCE_CHOICES) * len(C_VALUES) + (len(CCP_WEIGHTS) - 1) * len(C_VALUES)
    assert all(set(figures) == set(SOURCES) for figures in report["validation"].values())
    assert f"{report['sources']}, C={report['c']:g}" in report["validation"]
    assert payload["trunk_stored"] is False

    items = [CatalogueItem(f"{t}000", root / "images" / f"{t}000.jpg") for t in range(3)]
    results = [
        r
        for r in embed_items(loaded, items, threshold=0.0, max_parts=3, workers=0, progress=False)
        if isinstance(r, ItemParts)
    ]
    assert [[label for label, _, _ in r.parts] for r in results] == [["bag"], ["jeans"], []]  # perfume: no part
    with torch.inference_mode():
        photos = torch.rand(2, 3, 64, 48)
        scores = loaded(photos).product_scores
        assert scores is not None and scores.shape == (2, 4)
        # the trunk-and-head path the indexer's dry run takes names what the full forward scores
        assert loaded.product_categories(photos) == [loaded.config.product_labels[int(i)] for i in scores.argmax(-1)]
        # and names each product photo's own category, in batch order
        batch = torch.stack([load_input(item.path, (64, 48))[0] for item in items])
        assert loaded.product_categories(batch) == ["bag", "jeans", OTHER]
        # a category joins its own label's index; one with no item label joins none
        assert [loaded.config.part_label_of(c) for c in ["bag", "jeans", OTHER]] == ["bag", "jeans", None]
        with pytest.raises(ValueError, match="no product head"):
            PartAttentionNetwork(tiny_config(labels=["bag"])).eval().product_categories(photos)


def test_the_choice_keeps_the_catalogue_and_then_takes_the_other_photography() -> None:
    def figures(catalogue: float, shop: float, ccp: float) -> tuple[None, None, dict[str, dict[str, float]]]:
        return (
            None,
            None,
            {"catalogue": {"group_top1": catalogue}, "shop": {"group_top1": shop}, "ccp": {"group_top1": ccp}},
        )

    fits = {
        ("catalogue", 0.01): figures(0.98, 0.70, 0.50),
        ("catalogue", 0.1): figures(0.97, 0.69, 0.49),
        ("catalogue+shop", 0.01): figures(0.978, 0.92, 0.50),
        ("catalogue+shop+ccp (crops x3)", 0.01): figures(0.96, 0.93, 0.80),  # the catalogue's photos lost
        ("catalogue+shop+ccp (crops x1)", 0.01): figures(0.976, 0.91, 0.74),
    }
    assert choose(fits) == ("catalogue+shop+ccp (crops x1)", 0.01)
