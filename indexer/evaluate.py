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
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from indexer.bundle import Bundle, BundleStore
from indexer.colours import family_of_name, family_of_pixels
from indexer.search import DEFAULT_CANDIDATES, DEFAULT_MAX_PARTS, Match, QueryPart, recommend_global, recommend_parts
from model.article_types import ARTICLE_TYPE_TO_LABEL
from model.checkpoint import load_checkpoint
from model.data import ClothingCoParsing, Sample, data_dir
from model.errors import run_command
from model.imaging import Placement, load_input
from model.labels import group_of
from model.network import (
    DEFAULT_PART_FLOOR,
    DEFAULT_PART_THRESHOLD,
    NetworkOutput,
    PartAttentionNetwork,
    query_parts,
    select_parts,
)
from model.progress import configure_logging
from model.visualize import PALETTE, draw_boxes, tile

log = logging.getLogger("indexer.evaluate")


def product_label(metadata: dict[str, object]) -> str | None:
    return ARTICLE_TYPE_TO_LABEL.get(str(metadata.get("articleType", "")))


@dataclass(frozen=True)
class Returned:
    """One returned product, as the scoring sees it."""

    item_id: str
    part_label: str | None  # the label of the part it answers; None for the global baseline
    product_label: str | None  # the product's category as a CCP label (None: no counterpart)
    colour: str | None = None  # the product's colour family (indexer.colours)
    article_type: str = ""


@dataclass
class QueryResult:
    labels: list[str]  # the photo's true labels
    returned: list[Returned]
    colours: dict[str, str | None] = field(default_factory=dict)  # true label -> colour family of its pixels

    @property
    def item_ids(self) -> list[str]:
        return [r.item_id for r in self.returned]

    def right_for_its_part(self, r: Returned) -> bool:
        """The spec's rule: the product's group is the group of the part it answers, and that group is
        among the photo's true groups (the baseline, having no part, is held to the second half)."""
        if r.product_label is None:
            return False
        group = group_of(r.product_label)
        part_group = group_of(r.part_label) if r.part_label is not None else group
        return group == part_group and group in {group_of(label) for label in self.labels}

    def scores(self) -> dict[str, float]:
        """Per part: precision@1 and group coverage by the spec's rule."""
        groups = {group_of(label) for label in self.labels}
        right = [r for r in self.returned if self.right_for_its_part(r)]
        return {
            "precision_at_1": len(right) / len(self.returned) if self.returned else 0.0,
            "coverage": len({group_of(r.product_label) for r in right if r.product_label}) / len(groups)
            if groups
            else 0.0,
        }

    def any_label_scores(self, level: str) -> dict[str, float]:
        """The looser figure: a product counts when its label (group) is any of the photo's, whatever
        part it was returned for."""
        to = (lambda x: x) if level == "labels" else group_of
        truth = {to(label) for label in self.labels}
        got = [to(r.product_label) if r.product_label else None for r in self.returned]
        right = [g for g in got if g is not None and g in truth]
        return {
            "precision_at_1": len(right) / len(got) if got else 0.0,
            "coverage": len(set(right)) / len(truth) if truth else 0.0,
            "distinct": float(len({g for g in got if g is not None})),
        }

    def colour_pairs(self) -> list[tuple[Returned, str]]:
        """(product, colour family of the photo's item it is compared with) for every product of a
        group the photo has: the part's own item where it is there, else the photo's first item of
        that group."""
        pairs = []
        for r in self.returned:
            if r.product_label is None or r.colour is None:
                continue
            group = group_of(r.product_label)
            same_group = [label for label in self.labels if group_of(label) == group and self.colours.get(label)]
            if not same_group:
                continue
            target = r.part_label if r.part_label in same_group else same_group[0]
            pairs.append((r, str(self.colours[target])))
        return pairs


def summarise(
    results: Sequence[QueryResult],
    type_colours: dict[str, dict[str, int]] | None = None,
    label_sizes: Mapping[str, int] | None = None,
) -> dict[str, object]:
    """Means over queries (and micro figures over all returned products). ``type_colours``
    (articleType -> colour family -> products) gives the colour agreement a random product of the
    same type would reach; ``label_sizes`` (label -> the catalogue's products of it) the least top
    share each group could have (group_hubs)."""
    out: dict[str, object] = {
        "queries": len(results),
        "returned_per_query": float(np.mean([len(r.returned) for r in results])),
        "distinct_items_per_query": float(np.mean([len(set(r.item_ids)) for r in results])),
    }
    per_query = [r.scores() for r in results]
    total = sum(len(r.returned) for r in results)
    out["groups"] = {key: float(np.mean([q[key] for q in per_query])) for key in per_query[0]}
    out["groups"]["precision_at_1_micro"] = (  # type: ignore[index]
        sum(sum(map(r.right_for_its_part, r.returned)) for r in results) / max(total, 1)
    )
    out["any_label"] = {
        level: {
            key: float(np.mean([r.any_label_scores(level)[key] for r in results]))
            for key in ("precision_at_1", "coverage", "distinct")
        }
        for level in ("labels", "groups")
    }
    pairs = [pair for r in results for pair in r.colour_pairs()]
    colour: dict[str, float] = {"pairs": float(len(pairs))}
    colour["agreement"] = float(np.mean([r.colour == target for r, target in pairs])) if pairs else 0.0
    if type_colours is not None and pairs:
        chance = []
        for r, target in pairs:
            counts = type_colours.get(r.article_type, {})
            chance.append(counts.get(target, 0) / max(1, sum(counts.values())))
        colour["same_type_chance"] = float(np.mean(chance))
    out["colour"] = colour
    # Over all queries: does one product answer everyone's shoes (a hub of the embedding space)?
    counts = Counter(item for r in results for item in r.item_ids)
    out["across_queries"] = {
        "distinct_products": len(counts),
        "top_product_share": max(counts.values()) / total if counts else 0.0,
        **group_hubs(results, label_sizes),
    }
    return out


HUB_MIN_ANSWERS = 20  # a group's top share is counted where the group has this many answers


def group_hubs(results: Sequence[QueryResult], label_sizes: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Per item group of the returned products (with HUB_MIN_ANSWERS answers at least): the share
    of the group's answers its most returned product takes, and the largest of those shares.

    With ``label_sizes`` (label -> the catalogue's products of that label), also the least top share
    any search could reach with these answers' labels (``top_share_floor``): a label's answers spread
    evenly over its products, its most returned one takes ceil(answers / products) of them. A
    catalogue with two necklaces cannot spread twenty necklace answers thinner than ten each. The
    bound assumes each product answers from the index of its own label (a catalogue placed by its
    metadata); where the model placed the products (`--labels-from ''`) it is only indicative."""
    by_group: dict[str, Counter[str]] = {}
    by_label: dict[str, Counter[str]] = {}
    for result in results:
        for r in result.returned:
            if r.product_label is not None:
                by_group.setdefault(group_of(r.product_label), Counter())[r.item_id] += 1
                by_label.setdefault(group_of(r.product_label), Counter())[r.product_label] += 1
    shares: dict[str, dict[str, Any]] = {}
    for group, counts in sorted(by_group.items()):
        total = sum(counts.values())
        if total < HUB_MIN_ANSWERS:
            continue
        shares[group] = {"answers": total, "distinct": len(counts), "top_share": round(max(counts.values()) / total, 4)}
        if label_sizes is not None:
            # a label the catalogue has no products of (answers from another index) bounds nothing
            least = max(
                (-(-n // label_sizes[label]) for label, n in by_label[group].items() if label_sizes.get(label)),
                default=0,
            )
            shares[group]["top_share_floor"] = round(least / total, 4)
    out: dict[str, Any] = {
        "max_group_top_share": max((g["top_share"] for g in shares.values()), default=0.0),
        "groups": shares,
    }
    if label_sizes is not None:
        out["max_group_top_share_floor"] = max((g["top_share_floor"] for g in shares.values()), default=0.0)
    return out


def returned(match: Match, part_label: str | None) -> Returned:
    return Returned(
        match.item_id,
        part_label,
        product_label(match.metadata),
        family_of_name(match.metadata.get("baseColour", "")),
        str(match.metadata.get("articleType", "")),
    )


def item_colours(ccp: ClothingCoParsing, sample: Sample, max_pixels: int = 5000) -> dict[str, str | None]:
    """The colour family of each labelled item of a test photo, from its mask's pixels."""
    if sample.mask is None:
        return {}
    mask = ccp.read_mask(sample.mask)
    with Image.open(sample.image) as image:
        pixels = np.asarray(image.convert("RGB"))
    if pixels.shape[:2] != mask.shape:
        return {}
    rng = np.random.default_rng(0)
    colours: dict[str, str | None] = {}
    for label in sample.labels:
        ys, xs = np.nonzero(ccp.item_mask(mask, label))
        if len(ys) > max_pixels:
            keep = rng.choice(len(ys), max_pixels, replace=False)
            ys, xs = ys[keep], xs[keep]
        colours[label] = family_of_pixels(pixels[ys, xs])
    return colours


@dataclass
class Runs:
    parts: list[QueryResult] = field(default_factory=list)  # one product per part, by the part's embedding
    control: list[QueryResult] = field(default_factory=list)  # the same parts' indexes, by the whole-photo embedding
    whole: list[QueryResult] = field(default_factory=list)  # the global baseline: nearest to the whole photo
    shown: list[list[tuple[QueryPart, Match | None]]] = field(default_factory=list)


PART_RULES = ("group", "label")  # how a photo's parts are chosen (run_queries)


@dataclass
class QueryPhoto:
    sample: Sample
    out: NetworkOutput  # the network's output for this photo alone (batch of one)
    placement: Placement
    colours: dict[str, str | None]  # the photo's items' colour families, by label


@torch.inference_mode()
def query_photos(model: PartAttentionNetwork, ccp: ClothingCoParsing, samples: Sequence[Sample]) -> list[QueryPhoto]:
    """The network's output for each query photo, computed once for any number of part settings."""
    size = (model.config.image_height, model.config.image_width)
    photos = []
    for start in range(0, len(samples), 16):
        batch = samples[start : start + 16]
        fitted = [load_input(s.image, size) for s in batch]
        outs = model(torch.stack([x for x, _ in fitted])).per_photo()
        for sample, out, (_, placement) in zip(batch, outs, fitted, strict=True):
            photos.append(QueryPhoto(sample, out, placement, item_colours(ccp, sample)))
    return photos


def run_queries(
    model: PartAttentionNetwork,
    bundle: Bundle,
    photos: Sequence[QueryPhoto],
    max_parts: int,
    threshold: float,
    candidates: int,
    rule: str = "group",
    floor: float | None = DEFAULT_PART_FLOOR,
) -> Runs:
    """``rule``: how a photo's parts are chosen: "group", as served (query_parts, with ``floor``),
    or "label", one part per label by label probability (the service's rule before, kept for
    comparison)."""
    if rule not in PART_RULES:
        raise ValueError(f"unknown part rule {rule!r}; choose one of {', '.join(PART_RULES)}")
    searchable = bundle.searchable_labels
    runs = Runs()
    for photo in photos:
        sample, out, placement, colours = photo.sample, photo.out, photo.placement, photo.colours
        if rule == "group":
            parts = query_parts(model, out, 0, placement, threshold, max_parts, searchable, floor)
        else:
            parts = select_parts(model, out, 0, placement, threshold=threshold, max_parts=max_parts)
        query = [QueryPart(p.label, p.score, p.embedding.numpy(), p.box, p.index_label, p.confident) for p in parts]
        matches = [m for m in recommend_parts(bundle, query, candidates) if m.match is not None]
        runs.parts.append(
            QueryResult(sample.labels, [returned(m.match, m.part.label) for m in matches if m.match], colours)
        )
        runs.shown.append([(m.part, m.match) for m in matches])
        # the control: the whole photo's vector (its look, with a look head) in each part's index
        whole = (out.whole_look if out.whole_look is not None else out.global_embedding)[0].numpy()
        control = [QueryPart(p.label, p.score, whole, p.box, p.index_label, p.confident) for p in parts]
        control_matches = [m for m in recommend_parts(bundle, control, candidates) if m.match is not None]
        runs.control.append(
            QueryResult(sample.labels, [returned(m.match, m.part.label) for m in control_matches if m.match], colours)
        )
        nearest = recommend_global(bundle, out.global_embedding[0].numpy(), max(1, len(matches)))
        runs.whole.append(QueryResult(sample.labels, [returned(m, None) for m in nearest], colours))
    return runs


def type_colours(bundle: Bundle) -> dict[str, dict[str, int]]:
    """articleType -> colour family -> products of the bundle."""
    counts: dict[str, dict[str, int]] = {}
    for record in bundle.items.values():
        family = family_of_name(record.metadata.get("baseColour", ""))
        if family is not None:
            per_type = counts.setdefault(str(record.metadata.get("articleType", "")), {})
            per_type[family] = per_type.get(family, 0) + 1
    return counts


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
    parser.add_argument("--max-parts", type=int, default=DEFAULT_MAX_PARTS, help="parts per query at most")
    parser.add_argument(
        "--threshold", type=float, default=DEFAULT_PART_THRESHOLD, help="a part's group probability at least"
    )
    parser.add_argument("--candidates", type=int, default=DEFAULT_CANDIDATES)
    parser.add_argument(
        "--rule", choices=PART_RULES, default="group", help="parts: one per group (served) or labels one by one"
    )
    parser.add_argument("--out", type=Path, default=Path("reports/shop_the_look.json"))
    parser.add_argument("--figure", type=Path, default=None)
    args = parser.parse_args(argv)
    configure_logging()

    model, _ = load_checkpoint(args.checkpoint)
    bundle = BundleStore(args.bundles).open()
    ccp = ClothingCoParsing(data_dir(args.data) / "ccp")
    _, test = ccp.split()
    runs = run_queries(
        model, bundle, query_photos(model, ccp, test), args.max_parts, args.threshold, args.candidates, args.rule
    )
    colours = type_colours(bundle)
    report = {
        "bundle": bundle.version,
        "checkpoint": str(args.checkpoint),
        "labels_from": bundle.manifest.get("options", {}).get("labels_from"),
        "settings": {
            "rule": args.rule,
            "max_parts": args.max_parts,
            "threshold": args.threshold,
            "candidates": args.candidates,
        },
        "parts": summarise(runs.parts, colours),
        "control_global_embedding_in_part_indexes": summarise(runs.control, colours),
        "global_baseline": summarise(runs.whole, colours),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(format_report(report))
    if args.figure:
        picks = [0, 3, 7, 12]
        images_dir = Path(str(bundle.manifest["catalogue"]["source"])).parent / "images"
        draw_shop_the_look([test[i] for i in picks], [runs.shown[i] for i in picks], images_dir, args.figure)


def format_report(report: dict[str, object]) -> str:
    """A markdown table: the spec's per-part group figures, the looser any-label ones, colour."""
    rows = [
        "| method | group P@1 | group coverage | any-label P@1, labels / groups | colour agreement | same-type chance"
        " | colour pairs | items / query | distinct products, all queries (top one's share) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    titles = {
        "parts": "parts",
        "control_global_embedding_in_part_indexes": "control: whole-photo embedding in each part's index",
        "global_baseline": "global baseline",
    }
    for name, title in titles.items():
        r: Any = report[name]
        loose, colour = r["any_label"], r["colour"]
        cells = [
            title,
            f"{r['groups']['precision_at_1']:.3f}",
            f"{r['groups']['coverage']:.3f}",
            f"{loose['labels']['precision_at_1']:.3f} / {loose['groups']['precision_at_1']:.3f}",
            f"{colour['agreement']:.3f}",
            f"{colour.get('same_type_chance', float('nan')):.3f}",
            f"{int(colour['pairs'])}",
            f"{r['distinct_items_per_query']:.2f}",
            f"{r['across_queries']['distinct_products']} ({r['across_queries']['top_product_share']:.3f})",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(run_command(main))
