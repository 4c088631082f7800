"""Which embedding describes a product photo best against street-photo parts: the crop of its
category (what the indexer stores) or the whole product photo through the same encoding. Chosen
on validation (never on test).

    python bench/product_embedding.py --checkpoint weights/ccp-attention.pt --bundles bundles \
        --out reports/product_embedding_validation.json

Both sides come from one built bundle: the "whole photo" catalogue puts each product's whole-photo
embedding (the bundle's global index) into the same part index its crop is in, so only the
product-side embedding differs. Each is scored as `indexer.evaluate` scores the test split, for
the parts and for the control (the street photo's whole-photo embedding in each part's index).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import faiss
import numpy as np

from indexer.bundle import Bundle, BundleStore
from indexer.evaluate import query_photos, run_queries, summarise, type_colours
from indexer.search import DEFAULT_CANDIDATES, DEFAULT_MAX_PARTS
from model.checkpoint import load_checkpoint
from model.data import ClothingCoParsing, data_dir
from model.evaluate import validation_split
from model.network import DEFAULT_PART_THRESHOLD
from model.progress import configure_logging


def whole_photo_indexes(bundle: Bundle) -> dict[str, faiss.Index]:
    """Each part index's products, by their whole-photo embeddings instead of their crops'."""
    indexes = {}
    for label, index in bundle.part_indexes.items():
        keys = faiss.vector_to_array(faiss.downcast_index(index).id_map)
        vectors = np.stack([bundle.global_index.reconstruct(int(k)) for k in keys]) if len(keys) else None
        flat = faiss.IndexIDMap2(faiss.IndexFlatL2(bundle.global_index.d))
        if vectors is not None:
            flat.add_with_ids(vectors.astype(np.float32), keys)
        indexes[label] = flat
    return indexes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("weights/ccp-attention.pt"))
    parser.add_argument("--bundles", type=Path, default=Path("bundles"))
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("reports/product_embedding_validation.json"))
    args = parser.parse_args()
    configure_logging(logging.WARNING)

    model, payload = load_checkpoint(args.checkpoint)
    run = payload.get("training", {})
    bundle = BundleStore(args.bundles).open(mmap=False)
    ccp = ClothingCoParsing(data_dir(args.data) / "ccp")
    _, val = validation_split(ccp, run)
    colours = type_colours(bundle)
    report: dict[str, object] = {"validation_photos": len(val), "bundle": bundle.version}
    print("| product embedding | query | group P@1 | group coverage | colour agreement | same-type chance |")
    print("|---|---|---|---|---|---|")
    crops = dict(bundle.part_indexes)
    for name, indexes in (("category crop", crops), ("whole product photo", whole_photo_indexes(bundle))):
        bundle.part_indexes = indexes
        runs = run_queries(
            model, bundle, query_photos(model, ccp, val), DEFAULT_MAX_PARTS, DEFAULT_PART_THRESHOLD, DEFAULT_CANDIDATES
        )
        for query, results in (("parts", runs.parts), ("control (whole street photo)", runs.control)):
            scores = summarise(results, colours)
            groups, colour = scores["groups"], scores["colour"]  # type: ignore[index]
            report[f"{name} / {query}"] = scores
            print(
                f"| {name} | {query} | {groups['precision_at_1']:.3f} | {groups['coverage']:.3f} | "  # type: ignore[index]
                f"{colour['agreement']:.3f} | {colour['same_type_chance']:.3f} |",  # type: ignore[index]
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
