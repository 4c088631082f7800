"""Hubness reduction at search time, measured on validation (issue 24): does a search that discounts
the products every query lands near spread the answers without losing the look?

    python bench/look_hubness.py --checkpoint weights/ccp-attention.pt \
        --products $FASHION_DATA_DIR/fashion-product --out reports/look_hubness.json

The committed look head and colour weight (model.look_training.LookConfig), the products' look
vectors, and per label index (the products of one category) four ways to score a query against it:

- ``none``: the inner product, as the service searches today;
- ``centred``: each side centred by its own mean (the catalogue's by the index's products, the
  queries' by the re-shot training views of those products, a street query's stand-in), then
  normalised;
- ``csls``: CSLS-style local scaling, 2 q.x - r_x, r_x the mean similarity of product x to its
  CSLS_K nearest re-shot training views of other products (a hub, near many queries, pays for it;
  a product's own views are left out, or a training product would pay for being re-shot where a
  validation product is not);
- ``whitened``: the index's products PCA-whitened (covariance shrunk halfway to its mean
  eigenvalue: an index may hold fewer products than dimensions), queries through the same map.

Each is scored as bench/look_validation.py scores a setting: the validation products' re-shot
retrieval (the exact product's rank in its category's index, r1/r10) and the CCP validation photos'
parts answered from the catalogue (colour agreement, the largest share of a group's answers its top
product takes, distinct products, P@1, coverage). Validation only: nothing here touches a test
photo or a held-out product.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.look_validation import TARGETS, ccp_validation, margin, shop_the_look  # noqa: E402
from model.checkpoint import load_checkpoint  # noqa: E402
from model.data import ClothingCoParsing, data_dir  # noqa: E402
from model.look_training import (  # noqa: E402
    LookConfig,
    catalogue_looks,
    fit_look_head,
    head_cache,
    label_pools,
    look_data,
    look_vectors,
    street_photos,
)
from model.progress import configure_logging  # noqa: E402

log = logging.getLogger("bench.look_hubness")
VARIANTS = ("none", "centred", "csls", "whitened")
CSLS_K = 10
SHRINK = 0.5  # of the covariance, replaced by its mean eigenvalue times the identity


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class Search:
    """One variant's scoring of queries against each label's products."""

    def __init__(
        self,
        variant: str,
        catalogue: np.ndarray,
        pools: dict[str, np.ndarray],
        reference: dict[str, np.ndarray],
        owners: dict[str, np.ndarray],
    ) -> None:
        self.variant, self.catalogue, self.pools = variant, catalogue, pools
        self.sides: dict[str, tuple[np.ndarray, Any]] = {}
        for label, pool in pools.items():
            products = catalogue[pool]
            queries = reference.get(label, products)  # a label no training product re-shot: its products stand in
            if variant == "centred":
                mean_q = queries.mean(0)
                self.sides[label] = (unit(products - products.mean(0)), mean_q)
            elif variant == "csls":
                similarity = products @ queries.T
                if label in owners:  # a product's own re-shot views leave its r_x: a validation product has none
                    similarity[pool[:, None] == owners[label][None, :]] = -np.inf
                k = min(CSLS_K, similarity.shape[1])
                r = np.sort(similarity, axis=1)[:, -k:].mean(1)
                r = np.where(np.isfinite(r), r, 0.0)  # fewer than k others' views: no scaling
                self.sides[label] = (products, r)
            elif variant == "whitened":
                mean = products.mean(0)
                cov = np.cov((products - mean).T) if len(products) > 1 else np.eye(products.shape[1])
                cov = (1 - SHRINK) * cov + SHRINK * np.trace(cov) / len(cov) * np.eye(len(cov))
                values, vectors = np.linalg.eigh(cov)
                w = vectors @ np.diag(1 / np.sqrt(np.maximum(values, 1e-12))) @ vectors.T
                self.sides[label] = (unit((products - mean) @ w), (mean, w))
            else:
                self.sides[label] = (products, None)

    def __call__(self, label: str, query: np.ndarray) -> np.ndarray:
        products, extra = self.sides[label]
        if self.variant == "centred":
            return products @ unit(query - extra)
        if self.variant == "csls":
            return 2 * products @ query - extra
        if self.variant == "whitened":
            mean, w = extra
            return products @ unit((query - mean) @ w)
        return products @ query


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--products", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache/look"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("reports/look_hubness.json"))
    args = parser.parse_args()
    configure_logging()
    cfg = LookConfig()
    model, payload = load_checkpoint(args.checkpoint)
    ccp = ClothingCoParsing(data_dir(args.data) / "ccp")
    data = look_data(model, args.checkpoint, args.products, street_photos(args.data), cfg, args.cache_dir, args.workers)
    head, _ = fit_look_head(
        model, data.features, data.train_owner, cfg, cfg.region, head_cache(args.cache_dir, data.key, cfg, cfg.region)
    )
    catalogue = catalogue_looks(
        head, data.features["catalogue"], colour_weight=cfg.colour_weight, whole_share=cfg.whole_share
    )
    train, val = data.features["train"], data.features["validation"]
    train_queries = look_vectors(head, train.crop, train.crop_colour, cfg.colour_weight)
    val_queries = look_vectors(head, val.crop, val.crop_colour, cfg.colour_weight)
    pools = label_pools(data.products)
    owners = data.train_owner.numpy()
    reference = {
        label: train_queries[np.isin(owners, pool)] for label, pool in pools.items() if np.isin(owners, pool).any()
    }
    reference_owners = {label: owners[np.isin(owners, pool)] for label, pool in pools.items() if label in reference}
    metadata, val_samples, parts, colours = ccp_validation(model, payload, ccp, args.products, data.products)

    rows = []
    for variant in VARIANTS:
        search = Search(variant, catalogue, pools, reference, reference_owners)
        found = []
        for query, truth in zip(val_queries, data.val_truth, strict=True):
            label = data.products[int(truth)].category
            pool = pools[label]
            scores = search(label, query)
            found.append(int((scores > scores[np.flatnonzero(pool == truth)[0]]).sum()))
        ranks = np.asarray(found)
        reshot = {"r1": float(np.mean(ranks < 1)), "r10": float(np.mean(ranks < 10)), "queries": len(ranks)}
        row: dict[str, Any] = {
            "variant": variant,
            "reshot": reshot,
            "ccp": shop_the_look(
                head, catalogue, data.products, metadata, val_samples, parts, colours, cfg.colour_weight, search
            ),
        }
        row["margin"] = margin(row)
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = {
        "checkpoint": str(args.checkpoint),
        "settings": {
            "region": cfg.region,
            "whole_share": cfg.whole_share,
            "colour_weight": cfg.colour_weight,
            "csls_k": CSLS_K,
            "shrink": SHRINK,
        },
        "targets": TARGETS,
        "rows": rows,
        "ccp_validation_photos": len(val_samples),
        "validation_products": len(data.val_rows),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
