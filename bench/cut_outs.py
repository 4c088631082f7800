"""A shop whose catalogue is cut-out PNGs (the white backdrop made transparent, its hidden pixels
black, as cut-out tools save them): what the service makes of it, against the same cut-outs as the
service saw them before it laid transparency on white (flattened on black), side by side in one run.

    python bench/cut_outs.py --products $FASHION_DATA_DIR/fashion-product --out reports/cut_outs.json

The first ``--count`` products of the product set's validation tenth that have a part label, each
cut out (near-white pixels connected to the photo's edge); two catalogues of them, the cut-out PNGs
and the same pixels flattened on black; each indexed with the model placing the products
(``--labels-from ''``, as for a shop without category metadata) and served in-process. Measured:
the share of products placed in their articleType's group, and of the products' own catalogue
photos (the JPEGs on white, as a shopper's photo of the very product) answered with that product.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image
from scipy import ndimage

from app.main import create_app
from app.settings import Settings
from indexer.build import IndexOptions, build_bundle
from indexer.bundle import BundleStore
from indexer.catalogue import load_catalogue
from model.article_types import ARTICLE_TYPE_TO_LABEL
from model.labels import group_of
from model.products import OTHER, SPLITS, read_products, split_products

NEAR_WHITE = 235  # a backdrop pixel: every channel at least this bright, connected to the edge


def cut_out(photo: Path) -> np.ndarray:
    """(H, W, 4) the photo with its backdrop transparent and black underneath."""
    rgb = np.asarray(Image.open(photo).convert("RGB"))
    regions, _ = ndimage.label((rgb >= NEAR_WHITE).all(-1))
    edge = np.unique(np.concatenate([regions[0], regions[-1], regions[:, 0], regions[:, -1]]))
    backdrop = np.isin(regions, edge[edge > 0])
    rgba = np.dstack([rgb, np.where(backdrop, 0, 255).astype(np.uint8)])
    rgba[backdrop, :3] = 0
    return rgba


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, default=Path("weights/ccp-attention.pt"))
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("reports/cut_outs.json"))
    args = parser.parse_args()
    products = read_products(args.products)
    with open(args.products / "styles.csv", newline="", encoding="utf-8", errors="replace") as handle:
        article_type = {row["id"]: row["articleType"] for row in csv.DictReader(handle)}
    rows = sorted(split_products(len(products))[SPLITS.index("validation")].tolist())
    chosen = [products[r] for r in rows if products[r].category != OTHER][: args.count]
    report: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "products": len(chosen),
        "command": "python bench/cut_outs.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
    }
    with tempfile.TemporaryDirectory() as scratch:
        for variant in ("on_black", "cut_out_png"):
            folder = Path(scratch) / variant
            folder.mkdir()
            for product in chosen:
                rgba = cut_out(product.image)
                if variant == "cut_out_png":
                    Image.fromarray(rgba, "RGBA").save(folder / f"{product.id}.png")
                else:  # what the service read of it before: the alpha dropped
                    Image.fromarray(rgba[..., :3]).save(folder / f"{product.id}.png")
            store = BundleStore(Path(scratch) / f"bundles-{variant}")
            started = time.monotonic()
            version = build_bundle(
                store, args.checkpoint, load_catalogue(folder), IndexOptions(labels_from="", workers=0)
            )
            bundle = store.open(version)
            own_group = [
                any(group_of(p) == group_of(ARTICLE_TYPE_TO_LABEL[article_type[r.id]]) for p in r.metadata["parts"])
                for r in bundle.items.values()
                if ARTICLE_TYPE_TO_LABEL.get(article_type[r.id])
            ]
            settings = Settings(checkpoint=args.checkpoint, bundles_dir=store.root, cache_ttl_s=0)
            with TestClient(create_app(settings)) as client:
                found = []
                for product in chosen:
                    with open(product.image, "rb") as photo:
                        answer = client.post("/recommend", files={"image": photo}).json()
                    found.append(any(part["item"]["id"] == product.id for part in answer["parts"]))
            report[variant] = {
                "own_group_rate": round(float(np.mean(own_group)), 4),
                "placed": len(own_group),
                "own_product_returned_rate": round(float(np.mean(found)), 4),
                "seconds": round(time.monotonic() - started, 1),
            }
            print(variant, report[variant], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
