"""Where a part's vector loses the look: measured on validation before anything is changed.

    python bench/look_diagnosis.py --checkpoint weights/ccp-attention.pt --bundles bundles \
        --out reports/look_diagnosis.json

On the CCP validation photos (odd-numbered, with masks) and the catalogue bundle of the model:
- same space: each item's part vector against the same network's vector of the item's own mask
  crop (cut out and put on white, as a product photo is, and embedded as the catalogue is): their
  cosine, whether the part finds its own crop among the other items' crops of its group (R@1),
  and how far apart the street parts and the products sit (the cosine of their means, and the
  share of a vector's length that the common direction of its side takes);
- hubness: how many times each product is a part's nearest (N_1) or among its 10 nearest (N_10)
  in the part's index: the skew of N_10 and the share of each group's answers its top product takes;
- colour: how well a linear probe reads the colour family from the vectors (the products': their
  ``baseColour``; the parts': their mask's pixels), against the same probe on an HSV histogram of
  the same pixels (5-fold cross-validation, balanced accuracy).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch
from PIL import Image
from scipy.stats import skew
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from indexer.bundle import BundleStore
from indexer.colours import family_of_name, family_of_pixels
from indexer.faiss_index import exact_contents, is_exact
from model.checkpoint import load_checkpoint
from model.data import ClothingCoParsing, data_dir
from model.evaluate import validation_split
from model.imaging import letterbox, load_input, to_input
from model.labels import group_of
from model.network import select_parts

HSV_BINS = (8, 4, 4)


def hsv_histogram(pixels: np.ndarray) -> np.ndarray:
    """(N, 3) RGB pixels -> a normalised HSV histogram (HSV_BINS)."""
    hsv = np.asarray(Image.fromarray(pixels[None].astype(np.uint8)).convert("HSV"))[0].astype(np.float64)
    hist, _ = np.histogramdd(hsv, bins=HSV_BINS, range=[(0, 256)] * 3)
    return (hist / max(1, hist.sum())).ravel()


def probe(x: np.ndarray, y: list[str]) -> float:
    """Balanced accuracy of a logistic regression reading ``y`` from ``x`` (5-fold CV); families
    with fewer than 10 examples left out."""
    counts = Counter(y)
    keep = [i for i, name in enumerate(y) if counts[name] >= 10]
    scores = cross_val_score(
        LogisticRegression(max_iter=2000, C=1.0), x[keep], np.array(y)[keep], cv=5, scoring="balanced_accuracy"
    )
    return float(scores.mean())


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("weights/ccp-attention.pt"))
    parser.add_argument("--bundles", type=Path, default=Path("bundles"))
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("reports/look_diagnosis.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    model, payload = load_checkpoint(args.checkpoint)
    size = (model.config.image_height, model.config.image_width)
    bundle = BundleStore(args.bundles).open(mmap=False)
    ccp = ClothingCoParsing(data_dir(args.data) / "ccp")
    _, val = validation_split(ccp, payload.get("training", {}))

    # Each validation item: its part vector, its own crop's vector, its colour family, its pixels' histogram.
    items: list[dict[str, Any]] = []
    for sample in val:
        assert sample.mask is not None
        mask = ccp.read_mask(sample.mask)
        with Image.open(sample.image) as opened:
            photo = opened.convert("RGB")
        pixels = np.asarray(photo)
        x, _ = load_input(sample.image, size)
        labels = [label for label in sample.labels if label in bundle.part_indexes]
        if not labels:
            continue
        crops = []
        for label in labels:
            item = ccp.item_mask(mask, label)
            ys, xs = np.nonzero(item)
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            cut = np.where(item[..., None], pixels, 255).astype(np.uint8)[y0:y1, x0:x1]  # the item alone, on white
            crops.append(to_input(letterbox(Image.fromarray(cut), size)[0]))
            items.append(
                {
                    "label": label,
                    "photo": sample.image.stem,
                    "colour": family_of_pixels(pixels[item][:: max(1, int(item.sum()) // 5000)]),
                    "hsv": hsv_histogram(pixels[item]),
                }
            )
        out = model(torch.stack([x, *crops]))
        parts = select_parts(model, out, 0, labels=labels)
        for k, part in enumerate(parts):
            items[len(items) - len(labels) + k]["part"] = part.embedding.numpy()
            items[len(items) - len(labels) + k]["own_crop"] = out.global_embedding[1 + k].numpy()

    part_vectors = np.stack([i["part"] for i in items])
    crop_vectors = np.stack([i["own_crop"] for i in items])
    cosines = (part_vectors * crop_vectors).sum(1)
    own_found = []
    by_group: dict[str, list[int]] = defaultdict(list)
    for n, item in enumerate(items):
        by_group[group_of(item["label"])].append(n)
    for n, item in enumerate(items):
        same = by_group[group_of(item["label"])]
        if len(same) > 1:
            similarity = crop_vectors[same] @ part_vectors[n]
            own_found.append(same[int(np.argmax(similarity))] == n)

    # The catalogue's vectors, by label (exact indexes: their vectors read back as stored).
    products: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for label, index in bundle.part_indexes.items():
        if is_exact(index):
            products[label] = exact_contents(index)  # type: ignore[arg-type]
    all_products = np.concatenate([v for v, _ in products.values()])
    street_mean, product_mean = part_vectors.mean(0), all_products.mean(0)

    def common_share(vectors: np.ndarray) -> float:
        direction = vectors.mean(0) / np.linalg.norm(vectors.mean(0))
        return float(np.mean((vectors @ direction) ** 2))

    # Hubness of each label's index under the street parts.
    n1: dict[str, Counter[int]] = defaultdict(Counter)
    n10: dict[str, Counter[int]] = defaultdict(Counter)
    for item in items:
        vectors, keys = products[item["label"]]
        _, nearest = faiss.knn(item["part"][None].astype(np.float32), vectors, min(10, len(vectors)))
        n1[group_of(item["label"])][int(keys[nearest[0, 0]])] += 1
        for j in nearest[0]:
            n10[item["label"]][int(keys[j])] += 1
    hubness = {}
    for group, counts in sorted(n1.items()):
        total = sum(counts.values())
        if total >= 10:
            hubness[group] = {"answers": total, "distinct": len(counts), "top_share": max(counts.values()) / total}
    n10_skew = {}
    for label, counts in n10.items():
        vectors, _ = products[label]
        occurrences = np.zeros(len(vectors))
        occurrences[: len(counts)] = sorted(counts.values(), reverse=True)
        if sum(counts.values()) >= 100:
            n10_skew[label] = float(skew(occurrences))

    # Colour: a linear probe on the products' vectors and on their photos' HSV histograms.
    product_colour, product_x, product_hsv = [], [], []
    for label, (vectors, keys) in products.items():
        for vector, key in zip(vectors, keys, strict=True):
            record = bundle.items[int(key)]
            family = family_of_name(record.metadata.get("baseColour", ""))
            if (
                family is None
                or len(product_colour) >= 3000
                or label not in ("t-shirt", "shirt", "shoes", "bag", "top")
            ):
                continue
            with Image.open(record.image) as opened:
                photo = np.asarray(opened.convert("RGB")).reshape(-1, 3)
            product_colour.append(family)
            product_x.append(vector)
            product_hsv.append(hsv_histogram(photo[photo.min(1) < 238]))
    street_colour = [i["colour"] for i in items]
    report = {
        "checkpoint": str(args.checkpoint),
        "bundle": bundle.version,
        "validation_items": len(items),
        "same_space": {
            "part_vs_own_crop_cosine_mean": float(cosines.mean()),
            "part_finds_own_crop_r1": float(np.mean(own_found)),
            "chance_r1": float(np.mean([1 / len(by_group[group_of(i["label"])]) for i in items])),
            "street_mean_vs_product_mean_cosine": float(
                street_mean @ product_mean / np.linalg.norm(street_mean) / np.linalg.norm(product_mean)
            ),
            "common_direction_share_street": common_share(part_vectors),
            "common_direction_share_products": common_share(all_products),
            "part_to_nearest_product_cosine": float(
                np.mean([np.max(products[i["label"]][0] @ i["part"]) for i in items])
            ),
            "own_crop_to_nearest_product_cosine": float(
                np.mean([np.max(products[i["label"]][0] @ i["own_crop"]) for i in items])
            ),
        },
        "hubness": {"n1_by_group": hubness, "n10_skew_by_label": n10_skew},
        "colour_probe_balanced_accuracy": {
            "products_vector": probe(np.stack(product_x), product_colour),
            "products_hsv_histogram": probe(np.stack(product_hsv), product_colour),
            "street_part_vector": probe(part_vectors, [str(c) for c in street_colour]),
            "street_hsv_histogram": probe(np.stack([i["hsv"] for i in items]), [str(c) for c in street_colour]),
            "products": len(product_colour),
            "street_items": len(items),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
