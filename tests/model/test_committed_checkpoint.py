"""The committed model (weights/ccp-attention.pt): it loads with the current code, is compact, and
still scores on its validation photos what its training run recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from app.settings import Settings
from model.checkpoint import load_checkpoint
from model.data import ClothingCoParsing, label_vector, load_image
from model.labels import to_groups
from model.metrics import multilabel_report, per_label_ap
from model.products import read_products, split_products
from tests.helpers import SHARED_DATA

COMMITTED = Path(__file__).resolve().parents[2] / "weights" / "ccp-attention.pt"
MAX_BYTES = 20 * 1024 * 1024


def test_committed_checkpoint_is_the_served_default_and_compact() -> None:
    assert Settings().checkpoint == Path("weights/ccp-attention.pt")
    assert COMMITTED.is_file() and COMMITTED.stat().st_size <= MAX_BYTES


def test_committed_checkpoint_reproduces_its_validation_figures(ccp_root: Path) -> None:
    model, payload = load_checkpoint(COMMITTED)
    recorded = payload["metrics"]["validation"]
    names = set(payload["validation_photos"])
    train, _ = ClothingCoParsing(ccp_root).split()
    samples = [s for s in train if s.image.name in names]
    assert len(samples) == len(names) == 150
    labels, size = model.config.labels, (model.config.image_height, model.config.image_width)
    probabilities = []
    with torch.inference_mode():
        for i in range(0, len(samples), 16):
            images = torch.stack([load_image(s.image, size) for s in samples[i : i + 16]])
            probabilities.append(model.probabilities(model(images).scores))
    targets = torch.stack([label_vector(s, labels) for s in samples]).numpy()
    scores = torch.cat(probabilities).numpy()
    report = multilabel_report(targets, scores, labels, model.config.classification)
    # float16 weights, trunk run afresh rather than cached: a little drift
    assert np.isclose(report["labels"]["map"], recorded["labels"]["map"], atol=0.5), (report, recorded)  # type: ignore[index]
    # groups as the figures were recorded: a checkpoint from before 2026-11-28 took a sigmoid group's max
    rule = recorded.get("group_score", "sum" if model.config.classification == "softmax" else "max")
    groups_map = 100 * np.nanmean(per_label_ap(to_groups(targets, labels), to_groups(scores, labels, rule)))
    assert np.isclose(groups_map, recorded["groups"]["map"], atol=0.5), (rule, groups_map, recorded)


def test_committed_product_head_classifies_its_held_out_products() -> None:
    products_root = SHARED_DATA / "fashion-product"
    if not (products_root / "styles.csv").is_file():
        pytest.skip(f"product data not found at {products_root}")
    model, payload = load_checkpoint(COMMITTED)
    recorded = payload["metrics"]["products"]["held_out"]
    products = read_products(products_root)
    assert model.config.product_labels == payload["metrics"]["products"]["categories"]
    assert recorded["products"] == len(split_products(len(products))[2])
    sample = split_products(len(products))[2][:200]  # part of the held-out tenth, run afresh
    size = (model.config.image_height, model.config.image_width)
    predicted = []
    with torch.inference_mode():
        for i in range(0, len(sample), 25):
            images = torch.stack([load_image(products[j][1], size) for j in sample[i : i + 25]])
            scores = model(images).product_scores
            assert scores is not None
            predicted += [model.config.product_labels[k] for k in scores.argmax(1).tolist()]
    hits = np.mean([p == products[j][2] for p, j in zip(predicted, sample, strict=True)])
    assert hits >= recorded["label_top1"] - 0.08, (hits, recorded)  # a 200-product sample of the 958
