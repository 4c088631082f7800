"""Shop the look, measured: CCP test photos as queries against a product catalogue bundle.

    python -m indexer.evaluate --checkpoint checkpoints/attention/best.pt --bundles bundles \
        --out reports/shop_the_look.json --figure docs/shop_the_look.png

Per returned part, the product's ``articleType`` is mapped to a CCP label and a coarse group by the
table below; it is right when that label (group) is one of the query photo's true labels (groups).
Reported per query and averaged: precision@1 over parts, coverage (share of the photo's true
labels / groups that got a right product), distinct items and labels. Beside it, the global
baseline: the N nearest products to one whole-image embedding, N = the parts returned.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from indexer.article_types import ARTICLE_TYPE_TO_LABEL
from indexer.bundle import Bundle, BundleStore
from indexer.search import Match, QueryPart, recommend_global, recommend_parts
from model.checkpoint import load_checkpoint
from model.data import ClothingCoParsing, Sample, data_dir
from model.imaging import decode_image, fit_to_input
from model.labels import group_of
from model.network import PartAttentionNetwork, select_parts
from model.visualize import PALETTE, draw_boxes, tile

log = logging.getLogger("indexer.evaluate")


def product_label(metadata: dict[str, object]) -> str | None:
    return ARTICLE_TYPE_TO_LABEL.get(str(metadata.get("articleType", "")))


@dataclass
class QueryResult:
    labels: list[str]  # the photo's true labels
    products: list[str | None]  # mapped label of each returned product
    item_ids: list[str]

    def scores(self, level: str) -> dict[str, float]:
        to = (lambda x: x) if level == "labels" else group_of
        truth = {to(label) for label in self.labels}
        got = [to(p) if p else None for p in self.products]
        right = [g for g in got if g is not None and g in truth]
        return {
            "precision_at_1": len(right) / len(got) if got else 0.0,
            "coverage": len(set(right)) / len(truth) if truth else 0.0,
            "distinct": float(len({g for g in got if g is not None})),
        }


def summarise(results: Sequence[QueryResult]) -> dict[str, object]:
    out: dict[str, object] = {
        "queries": len(results),
        "returned_per_query": float(np.mean([len(r.products) for r in results])),
        "distinct_items_per_query": float(np.mean([len(set(r.item_ids)) for r in results])),
    }
    for level in ("labels", "groups"):
        per_query = [r.scores(level) for r in results]
        out[level] = {key: float(np.mean([q[key] for q in per_query])) for key in per_query[0]}
        # micro precision: over all returned parts, not per query
        total = sum(len(r.products) for r in results)
        out[level]["precision_at_1_micro"] = (  # type: ignore[index]
            sum(q["precision_at_1"] * len(r.products) for q, r in zip(per_query, results, strict=True)) / max(total, 1)
        )
    return out


@torch.inference_mode()
def run_queries(
    model: PartAttentionNetwork,
    bundle: Bundle,
    samples: Sequence[Sample],
    max_parts: int,
    threshold: float,
    candidates: int,
) -> tuple[list[QueryResult], list[QueryResult], list[list[tuple[QueryPart, Match | None]]]]:
    size = (model.config.image_height, model.config.image_width)
    parts_results, global_results, shown = [], [], []
    for start in range(0, len(samples), 16):
        batch = samples[start : start + 16]
        fitted = [fit_to_input(decode_image(s.image), size) for s in batch]
        out = model(torch.stack([x for x, _ in fitted]))
        for row, (sample, (_, placement)) in enumerate(zip(batch, fitted, strict=True)):
            parts = select_parts(model, out, row, placement, threshold=threshold, max_parts=max_parts)
            query = [QueryPart(p.label, p.score, p.embedding.numpy(), p.box) for p in parts]
            matches = [m for m in recommend_parts(bundle, query, candidates) if m.match is not None]
            parts_results.append(
                QueryResult(
                    sample.labels,
                    [product_label(m.match.metadata) for m in matches if m.match],
                    [m.match.item_id for m in matches if m.match],
                )
            )
            shown.append([(m.part, m.match) for m in matches])
            nearest = recommend_global(bundle, out.global_embedding[row].numpy(), max(1, len(matches)))
            global_results.append(
                QueryResult(sample.labels, [product_label(m.metadata) for m in nearest], [m.item_id for m in nearest])
            )
    return parts_results, global_results, shown


def draw_shop_the_look(
    samples: Sequence[Sample], shown: Sequence[Sequence[tuple[QueryPart, Match | None]]], images_dir: Path, path: Path
) -> None:
    """Each query photo with its part boxes, and under it the product returned for each part."""
    panels = []
    for sample, matches in zip(samples, shown, strict=True):
        with Image.open(sample.image) as photo:
            boxed = draw_boxes(photo.convert("RGB"), [(p.box, p.label) for p, _ in matches if p.box], height=360)
        thumbs = []
        for i, (_, match) in enumerate(matches):
            thumb = Image.new("RGB", (96, 112), "white")
            if match is not None:
                product = images_dir / f"{match.item_id}.jpg"
                if product.is_file():
                    with Image.open(product) as im:
                        thumb.paste(im.convert("RGB").resize((92, 92)), (2, 2))
                draw = ImageDraw.Draw(thumb)
                draw.rectangle((0, 0, 95, 95), outline=PALETTE[i % len(PALETTE)], width=3)
                draw.text((2, 97), str(match.metadata.get("articleType", ""))[:15], fill="black")
            thumbs.append(thumb)
        grid_cols = max(1, boxed.width // 96)
        rows = (len(thumbs) + grid_cols - 1) // grid_cols
        panel = Image.new("RGB", (boxed.width, boxed.height + rows * 112), "white")
        panel.paste(boxed, (0, 0))
        for i, thumb in enumerate(thumbs):
            panel.paste(thumb, ((i % grid_cols) * 96, boxed.height + (i // grid_cols) * 112))
        panels.append(panel)
    tile(panels).save(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--bundles", type=Path, default=Path("bundles"))
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--max-parts", type=int, default=5, help="parts per query at most")
    parser.add_argument("--threshold", type=float, default=0.05, help="a part's label probability at least")
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("reports/shop_the_look.json"))
    parser.add_argument("--figure", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    model, _ = load_checkpoint(args.checkpoint)
    bundle = BundleStore(args.bundles).open()
    _, test = ClothingCoParsing(data_dir(args.data) / "ccp").split()
    parts, whole, shown = run_queries(model, bundle, test, args.max_parts, args.threshold, args.candidates)
    report = {
        "bundle": bundle.version,
        "checkpoint": str(args.checkpoint),
        "settings": {"max_parts": args.max_parts, "threshold": args.threshold, "candidates": args.candidates},
        "parts": summarise(parts),
        "global_baseline": summarise(whole),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(format_report(report))
    if args.figure:
        picks = [0, 3, 7, 12]
        images_dir = Path(str(bundle.manifest["catalogue"]["source"])).parent / "images"
        draw_shop_the_look([test[i] for i in picks], [shown[i] for i in picks], images_dir, args.figure)


def format_report(report: dict[str, object]) -> str:
    rows = [
        "method          | level  | precision@1 | coverage | distinct labels | items/query",
        "----------------|--------|-------------|----------|-----------------|------------",
    ]
    for name in ("parts", "global_baseline"):
        r = report[name]
        for level in ("labels", "groups"):
            s = r[level]  # type: ignore[index]
            rows.append(
                f"{name:<16}| {level:<7}| {s['precision_at_1']:11.3f} | {s['coverage']:8.3f} | "
                f"{s['distinct']:15.2f} | {r['distinct_items_per_query']:.2f}"
            )  # type: ignore[index]
    return "\n".join(rows)


if __name__ == "__main__":
    main()
