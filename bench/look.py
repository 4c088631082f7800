"""The look, measured on test once: does each part's product resemble its item?

    python bench/look.py --checkpoint weights/ccp-attention.pt --bundles bundles \
        --before-checkpoint /tmp/before/weights/ccp-attention.pt --before-bundles /tmp/before-bundles \
        --out reports/look.json --figure docs/look.png

Three systems in one run, each searched in per-label indexes of the whole 9,583-product catalogue:
- ``new``: the checkpoint's part vectors, its bundle (as ``make serve`` indexes the catalogue);
- ``before``: the committed model of before and its bundle, with the service's settings of before
  (part threshold 0.6, no low-confidence fallback);
- ``rival``: no training at all: ImageNet EfficientNet-Lite0 features (its last map) averaged inside
  the part's box (the new model's boxes) beside an HSV histogram of the box's pixels (the white
  backdrop left out), a product by its whole photo the same way, in exact per-label indexes built
  here; the histogram's weight is RIVAL_COLOUR_WEIGHT (an even split, fixed beforehand, not tuned).

- ``reshot``: the held-out tenth of the products (``model.products.split_products``, never trained
  on), those of a category with a part index, each re-shot once (``model.framing.reshoot``: crop,
  turn, perspective, light, blur, JPEG, 256 px, on a street region of a CCP test photo). Its query
  vector is its group's part (the crop of the group's most probable label, as served), searched in
  the index of its category: the exact product's rank, r1 and r10.
- ``ccp``: the 502 CCP test photos through indexer.evaluate's queries (the parts as served): colour
  agreement, the largest share of a group's answers its top product takes (groups with 20 answers
  or more), distinct products, group P@1 and coverage.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import sys
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer.bundle import Bundle, BundleStore  # noqa: E402
from indexer.evaluate import (  # noqa: E402
    QueryPhoto,
    QueryResult,
    query_photos,
    run_queries,
    summarise,
    type_colours,
)
from indexer.evaluate import (
    returned as evaluated,
)
from indexer.search import DEFAULT_CANDIDATES, DEFAULT_MAX_PARTS, Match  # noqa: E402
from model.checkpoint import load_checkpoint  # noqa: E402
from model.data import ClothingCoParsing, data_dir  # noqa: E402
from model.features import trunk_features  # noqa: E402
from model.framing import reshoot, street_region  # noqa: E402
from model.imaging import letterbox, to_input  # noqa: E402
from model.labels import group_of  # noqa: E402
from model.network import DEFAULT_PART_FLOOR, DEFAULT_PART_THRESHOLD, NetworkOutput, PartAttentionNetwork, query_parts  # noqa: E402
from model.products import SPLITS, Product, read_products, split_products  # noqa: E402
from model.visualize import PALETTE, draw_boxes, tile  # noqa: E402

RIVAL_COLOUR_WEIGHT = 0.5  # the rival's HSV histogram share of its vector: an even split, fixed, not tuned
HSV_BINS = (8, 4, 4)
BACKDROP_MIN = 238  # the rival leaves out pixels this bright in every channel (the white backdrop)
RESHOT_SEED = 7  # the test re-shots' random stream (the training and validation ones are model.look_training's)


def hsv_histogram(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 pixels -> unit-length square-rooted HSV histogram of the non-backdrop pixels."""
    flat = pixels.reshape(-1, 3)
    kept = flat[flat.min(1) < BACKDROP_MIN]
    if not len(kept):
        kept = flat
    hsv = np.asarray(Image.fromarray(kept[None].astype(np.uint8)).convert("HSV"))[0].astype(np.float64)
    hist, _ = np.histogramdd(hsv, bins=HSV_BINS, range=[(0, 256)] * 3)
    vector = np.sqrt(hist.ravel() / max(1.0, hist.sum()))
    return vector / max(np.linalg.norm(vector), 1e-9)


def rival_vector(pooled: np.ndarray, pixels: np.ndarray, colour_weight: float = RIVAL_COLOUR_WEIGHT) -> np.ndarray:
    """The untrained rival: pooled ImageNet features (unit length) and the HSV histogram, weighted."""
    features = pooled / max(np.linalg.norm(pooled), 1e-9)
    return np.concatenate([features * np.sqrt(1 - colour_weight), hsv_histogram(pixels) * np.sqrt(colour_weight)])


def box_pixels(image: torch.Tensor, transform: torch.Tensor) -> np.ndarray:
    """The letterboxed input's pixels inside a crop (s_x, s_y, t_x, t_y), (h, w, 3) uint8."""
    _, height, width = image.shape
    sx, sy, tx, ty = (float(v) for v in transform)
    x0, x1 = int((tx - abs(sx) + 1) / 2 * width), int(np.ceil((tx + abs(sx) + 1) / 2 * width))
    y0, y1 = int((ty - abs(sy) + 1) / 2 * height), int(np.ceil((ty + abs(sy) + 1) / 2 * height))
    crop = image[:, max(0, y0) : max(y0 + 1, y1), max(0, x0) : max(x0 + 1, x1)]
    return (crop.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def box_pooled(last_map: torch.Tensor, transform: torch.Tensor) -> np.ndarray:
    """The trunk's last map averaged inside a crop (sampled on a 6 x 4 grid)."""
    from model.attention import crop_grid

    grid = crop_grid(transform[None], 6, 4)
    return F.grid_sample(last_map[None].float(), grid, align_corners=False).mean((-2, -1))[0].numpy()


def group_part_step(model: PartAttentionNetwork, out: NetworkOutput, category: str) -> tuple[int, Any]:
    """The step (crop) of a product's group part as served, and the part."""
    names = model.config.labels
    members = [c for c, name in enumerate(names) if group_of(name) == group_of(category)]
    probabilities = model.probabilities(out.scores[0])
    best = max(members, key=lambda c: float(probabilities[c]))
    assert out.step_scores is not None
    return int(out.step_scores[0, :, best].argmax()), best


class RivalIndex:
    """The rival's exact per-label indexes of the catalogue: a product by its whole photo."""

    def __init__(self, model: PartAttentionNetwork, products: list[Product], cache: Path, colour_weight: float) -> None:
        self.colour_weight = colour_weight
        pooled = trunk_features(model, [p.image for p in products], cache, pooled=True)[-1][:, 0].float().numpy()
        size = (model.config.image_height, model.config.image_width)
        vectors = []
        for product, features in zip(products, pooled, strict=True):
            with Image.open(product.image) as opened:
                pixels = letterbox(opened.convert("RGB"), size)[0]
            vectors.append(rival_vector(features, pixels, colour_weight))
        self.vectors = np.stack(vectors).astype(np.float32)
        self.rows: dict[str, np.ndarray] = {}
        for row, product in enumerate(products):
            self.rows.setdefault(product.category, []).append(row)  # type: ignore[arg-type]
        self.rows = {label: np.asarray(rows) for label, rows in self.rows.items()}

    def ranked(self, label: str, query: np.ndarray) -> np.ndarray:
        """The catalogue rows of ``label``'s index, nearest first."""
        rows = self.rows.get(label, np.zeros(0, dtype=np.int64))
        return rows[np.argsort(-(self.vectors[rows] @ query), kind="stable")]


def bundle_rank(bundle: Bundle, label: str, query: np.ndarray, product_id: str, k: int = 10) -> int:
    """The rank of ``product_id`` among ``label``'s index's ``k`` nearest to ``query`` (k: not in them)."""
    index = bundle.part_indexes.get(label)
    if index is None:
        return k
    _, keys = index.search(np.ascontiguousarray(query[None], dtype=np.float32), k)
    ids = [bundle.items[int(key)].id for key in keys[0] if key >= 0]
    return ids.index(product_id) if product_id in ids else k


@torch.inference_mode()
def reshot_ranks(
    new: PartAttentionNetwork,
    new_bundle: Bundle,
    before: PartAttentionNetwork,
    before_bundle: Bundle,
    rival: RivalIndex,
    products: list[Product],
    rows: Sequence[int],
    streets: Sequence[Path],
) -> dict[str, dict[str, float]]:
    """Each held-out product re-shot once; its rank under each system."""
    size = (new.config.image_height, new.config.image_width)
    ranks: dict[str, list[int]] = {"new": [], "before": [], "rival": []}
    for start in range(0, len(rows), 16):
        batch = list(rows[start : start + 16])
        images = []
        for row in batch:
            rng = np.random.default_rng([RESHOT_SEED, row])
            street = streets[zlib.crc32(str(row).encode()) % len(streets)]
            with Image.open(products[row].image) as photo, Image.open(street) as scene:
                shot = reshoot(photo.convert("RGB"), street_region(scene.convert("RGB"), rng), rng)
            images.append(to_input(letterbox(shot, size)[0]))
        x = torch.stack(images)
        maps = new.trunk_forward(x)  # both models' trunks are the same frozen ImageNet one
        outs = {"new": new.head_forward(maps), "before": before.head_forward(maps)}
        assert new.look is not None and outs["new"].transforms is not None
        outs["new"].part_looks, _ = new.look(maps, x, outs["new"].transforms)
        for i, row in enumerate(batch):
            product = products[row]
            for name, model, bundle in (("new", new, new_bundle), ("before", before, before_bundle)):
                out = _one(outs[name], i)
                step, _ = group_part_step(model, out, product.category)
                vectors = out.part_looks if out.part_looks is not None else out.part_embeddings
                assert vectors is not None
                ranks[name].append(bundle_rank(bundle, product.category, vectors[0, step].numpy(), product.id))
            out = _one(outs["new"], i)
            step, _ = group_part_step(new, out, product.category)
            assert out.transforms is not None
            transform = out.transforms[0, step]
            query = rival_vector(box_pooled(maps[-1][i], transform), box_pixels(x[i], transform), rival.colour_weight)
            ranked = rival.ranked(product.category, query)
            position = np.flatnonzero(ranked == row)
            ranks["rival"].append(int(position[0]) if len(position) else len(ranked))
    return {
        name: {"r1": float(np.mean(np.array(r) < 1)), "r10": float(np.mean(np.array(r) < 10)), "queries": len(r)}
        for name, r in ranks.items()
    }


def _one(out: NetworkOutput, i: int) -> NetworkOutput:
    """Photo ``i`` of a batched output, batch dimension kept."""
    values = {name: getattr(out, name) for name in out.__dataclass_fields__}
    return NetworkOutput(
        **{name: v if v is None or name == "codeword_share" else v[i : i + 1] for name, v in values.items()}
    )


def ccp_report(
    runs_parts: list[QueryResult], colours: dict[str, dict[str, int]], label_sizes: dict[str, int]
) -> dict[str, Any]:
    summary = summarise(runs_parts, colours, label_sizes)
    return {
        "p_at_1": summary["groups"]["precision_at_1"],  # type: ignore[index]
        "coverage": summary["groups"]["coverage"],  # type: ignore[index]
        "colour_agreement": summary["colour"]["agreement"],  # type: ignore[index]
        "same_type_chance": summary["colour"].get("same_type_chance"),  # type: ignore[union-attr]
        "max_group_top_share": summary["across_queries"]["max_group_top_share"],  # type: ignore[index]
        # the least it could be with these answers' labels and the catalogue's products of each label
        "max_group_top_share_floor": summary["across_queries"]["max_group_top_share_floor"],  # type: ignore[index]
        "distinct_products": summary["across_queries"]["distinct_products"],  # type: ignore[index]
        "answers": int(round(summary["returned_per_query"] * summary["queries"])),  # type: ignore[operator]
        "groups": summary["across_queries"]["groups"],  # type: ignore[index]
    }


@torch.inference_mode()
def rival_ccp(
    new: PartAttentionNetwork,
    photos: Sequence[QueryPhoto],
    rival: RivalIndex,
    products: list[Product],
    metadata: dict[str, dict[str, str]],
    searchable: set[str],
) -> list[QueryResult]:
    """The CCP photos' parts as served (the new model's), answered by the rival's vectors."""
    size = (new.config.image_height, new.config.image_width)
    results = []
    for photo in photos:
        with Image.open(photo.sample.image) as opened:
            x = to_input(letterbox(opened.convert("RGB"), size)[0])
        maps = new.trunk_forward(x[None])
        parts = query_parts(
            new,
            photo.out,
            0,
            photo.placement,
            DEFAULT_PART_THRESHOLD,
            DEFAULT_MAX_PARTS,
            searchable,
            DEFAULT_PART_FLOOR,
        )
        taken: set[int] = set()
        returned = []
        for part in parts:
            assert photo.out.transforms is not None
            transform = photo.out.transforms[0, part.step]
            query = rival_vector(box_pooled(maps[-1][0], transform), box_pixels(x, transform), rival.colour_weight)
            for row in rival.ranked(str(part.index_label), query):
                if int(row) not in taken:
                    taken.add(int(row))
                    product = products[int(row)].id
                    returned.append(evaluated(Match(product, 0.0, metadata.get(product, {})), part.label))
                    break
        results.append(QueryResult(photo.sample.labels, returned, photo.colours))
    return results


def draw(photos: Sequence[QueryPhoto], shown: Sequence[Any], images_dir: Path, path: Path) -> None:
    """Eight CCP test photos: each with its part boxes, and under it each part's product, framed in
    its part's colour."""
    panels = []
    for photo, matches in zip(photos, shown, strict=True):
        with Image.open(photo.sample.image) as opened:
            boxed = draw_boxes(opened.convert("RGB"), [(p.box, p.label) for p, _ in matches if p.box], height=330)
        rows = (len(matches) + 1) // 2
        strip = Image.new("RGB", (boxed.width, rows * 112), "white")
        for i, (_, match) in enumerate(matches):
            x, y = (i % 2) * (boxed.width // 2), (i // 2) * 112
            if match is not None and (images_dir / f"{match.item_id}.jpg").is_file():
                with Image.open(images_dir / f"{match.item_id}.jpg") as product:
                    strip.paste(product.convert("RGB").resize((92, 92)), (x + 2, y + 2))
                draw_ = ImageDraw.Draw(strip)
                draw_.rectangle((x, y, x + 95, y + 95), outline=PALETTE[i % len(PALETTE)], width=3)
                caption = f"{match.metadata.get('baseColour', '')} {match.metadata.get('articleType', '')}"
                draw_.text((x + 2, y + 97), caption[:18], fill="black")
        panel = Image.new("RGB", (boxed.width, boxed.height + strip.height), "white")
        panel.paste(boxed, (0, 0))
        panel.paste(strip, (0, boxed.height))
        panels.append(panel)
    top, bottom = tile(panels[:4]), tile(panels[4:8])
    sheet = Image.new("RGB", (max(top.width, bottom.width), top.height + bottom.height + 10), "white")
    sheet.paste(top, (0, 0))
    sheet.paste(bottom, (0, top.height + 10))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("weights/ccp-attention.pt"))
    parser.add_argument("--bundles", type=Path, default=Path("bundles"))
    parser.add_argument("--before-checkpoint", type=Path, required=True)
    parser.add_argument("--before-bundles", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache/features"))
    parser.add_argument("--out", type=Path, default=Path("reports/look.json"))
    parser.add_argument("--figure", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    new, _ = load_checkpoint(args.checkpoint)
    before, _ = load_checkpoint(args.before_checkpoint)
    new_bundle, before_bundle = BundleStore(args.bundles).open(), BundleStore(args.before_bundles).open()
    root = data_dir(args.data)
    products = read_products(root / "fashion-product")
    with open(root / "fashion-product" / "styles.csv", newline="", encoding="utf-8", errors="replace") as handle:
        metadata = {row["id"]: row for row in csv.DictReader(handle)}
    ccp = ClothingCoParsing(root / "ccp")
    _, test = ccp.split()
    streets = sorted(s.image for s in test)  # the test re-shots stand on test photos' streets
    held = [
        int(r)
        for r in sorted(split_products(len(products))[SPLITS.index("held_out")])
        if products[int(r)].category in new_bundle.part_indexes
    ]
    rival = RivalIndex(new, products, args.cache_dir, RIVAL_COLOUR_WEIGHT)
    reshot = reshot_ranks(new, new_bundle, before, before_bundle, rival, products, held, streets)

    colours = type_colours(new_bundle)
    sizes = dict(Counter(p.category for p in products))  # each label's index holds the products of it
    new_photos = query_photos(new, ccp, test)
    new_runs = run_queries(new, new_bundle, new_photos, DEFAULT_MAX_PARTS, DEFAULT_PART_THRESHOLD, DEFAULT_CANDIDATES)
    before_runs = run_queries(
        before, before_bundle, query_photos(before, ccp, test), DEFAULT_MAX_PARTS, 0.6, DEFAULT_CANDIDATES, floor=None
    )
    searchable = new_bundle.searchable_labels
    rival_results = rival_ccp(new, new_photos, rival, products, metadata, searchable)
    report: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, no GPU",
        "checkpoint": str(args.checkpoint),
        "bundle": new_bundle.version,
        "before": {"checkpoint": str(args.before_checkpoint), "bundle": before_bundle.version},
        "rival_colour_weight": RIVAL_COLOUR_WEIGHT,
        "reshot": reshot["new"],
        "ccp": ccp_report(new_runs.parts, colours, sizes),
        "control_whole_photo_look_in_part_indexes": ccp_report(new_runs.control, colours, sizes),
        "before_results": {"reshot": reshot["before"], "ccp": ccp_report(before_runs.parts, colours, sizes)},
        "rival_results": {"reshot": reshot["rival"], "ccp": ccp_report(rival_results, colours, sizes)},
    }
    # the flat keys beside the nested ones
    for system in ("before", "rival"):
        for key, value in report[f"{system}_results"]["reshot"].items():
            report[f"{system}.reshot.{key}"] = value
        for key in ("colour_agreement", "max_group_top_share", "distinct_products", "p_at_1", "coverage"):
            report[f"{system}.ccp.{key}"] = report[f"{system}_results"]["ccp"][key]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if "." in k or k in ("reshot",)}, indent=1))
    print(json.dumps({k: v for k, v in report["ccp"].items() if k != "groups"}, indent=1))
    if args.figure is not None:
        picks = [0, 3, 7, 12, 20, 33, 41, 57]
        images_dir = root / "fashion-product" / "images"
        draw([new_photos[i] for i in picks], [new_runs.shown[i] for i in picks], images_dir, args.figure)


if __name__ == "__main__":
    main()
