"""Choose the look head's settings on validation (never on test): where a catalogue photo is pooled
for training (its category's crop or the whole photo), how its indexed look mixes the two, and the
colour histogram's share of the look vector.

    python bench/look_validation.py --checkpoint checkpoints/attention/best.pt \
        --products $FASHION_DATA_DIR/fashion-product --out reports/look_validation.json \
        [--reshots 2 6] [--weight-decays 1e-4 0.05] [--input-dropouts 0 0.3] [--incumbent CHECKPOINT]

For each training setting (re-shot views per training product, weight decay, input dropout) and
each region a projection is trained (model.look_training); each whole share and colour weight is
then scored
by the validation products' re-shot retrieval (r1, r10 of the exact product in its category's
index of the whole catalogue) and by the CCP validation photos' parts answered from the catalogue's
look vectors, as indexer.evaluate scores the service (colour agreement, the largest share of a
group's answers its top product takes, distinct products). ``choose`` picks the setting that
clears the issue's targets by the widest margin; its values become model.look_training.LookConfig's.
``--incumbent`` scores another checkpoint's look head (same trunk and attention, e.g. one taken over
with ``model.train --heads-from``) on the same views, as one more candidate.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import itertools
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from indexer.evaluate import QueryResult, item_colours, summarise
from indexer.evaluate import returned as evaluated
from indexer.search import DEFAULT_MAX_PARTS, Match
from model.checkpoint import load_checkpoint
from model.data import ClothingCoParsing, Sample, data_dir
from model.evaluate import validation_split
from model.imaging import load_input
from model.look import LookHead, colour_histogram, palette, pooled_crop_features
from model.look_training import (
    REGIONS,
    LookConfig,
    LookData,
    catalogue_looks,
    fit_look_head,
    head_cache,
    label_pools,
    look_data,
    look_vectors,
    retrieval,
    street_photos,
)
from model.network import DEFAULT_PART_THRESHOLD, PartAttentionNetwork, query_parts
from model.products import Product
from model.progress import configure_logging
from model.train import HEAD_PREFIXES

log = logging.getLogger("bench.look_validation")
Score = Callable[[str, np.ndarray], np.ndarray]
COLOUR_WEIGHTS = (0.0, 0.15, 0.3, 0.45, 0.6)
WHOLE_SHARES = (0.0, 0.5, 0.6, 0.7, 1.0)  # of an indexed product's look, its whole photo's (the rest its crop's)
SKIN_WEIGHTS = (0.5, 0.3)  # a skin-coloured pixel's weight in the colour histograms (1: as any other)
# The look issue's targets: re-shot r1 and r10 at least, colour agreement at least, the largest
# group top share at most.
TARGETS = {"r1": 0.6, "r10": 0.85, "colour_agreement": 0.40, "max_group_top_share": 0.10}


@dataclass
class StreetPart:
    label: str
    index_label: str
    features: np.ndarray  # (F,) pooled at the part's crop
    colour: np.ndarray  # (P,)


@torch.inference_mode()
def street_parts(
    model: PartAttentionNetwork, samples: Sequence[Sample], searchable: set[str], skin_weight: float = 1.0
) -> list[list[StreetPart]]:
    """The parts the service would find in each street photo (its defaults), pooled at their crops,
    their colours with skin-coloured pixels weighted by ``skin_weight``."""
    size = (model.config.image_height, model.config.image_width)
    anchors = palette()
    out = []
    for sample in samples:
        x, placement = load_input(sample.image, size)
        maps = model.trunk_forward(x[None])
        head = model.head_forward(maps)
        assert head.transforms is not None
        parts = query_parts(model, head, 0, placement, DEFAULT_PART_THRESHOLD, DEFAULT_MAX_PARTS, searchable)
        transforms = head.transforms[0, [p.step for p in parts]][None]  # (1, parts, 4)
        pooled = pooled_crop_features(maps, transforms)[0] if parts else torch.zeros(0)
        colours = colour_histogram(x[None], transforms, anchors, skin_weight)[0] if parts else torch.zeros(0)
        out.append(
            [
                StreetPart(p.label, str(p.index_label), pooled[i].half().numpy(), colours[i].numpy())
                for i, p in enumerate(parts)
            ]
        )
    return out


def shop_the_look(
    head: LookHead,
    catalogue: np.ndarray,
    products: list[Product],
    metadata: list[dict[str, str]],
    samples: Sequence[Sample],
    parts: list[list[StreetPart]],
    colours: list[dict[str, str | None]],
    colour_weight: float,
    score: Score | None = None,
) -> dict[str, Any]:
    """Street photos' parts answered from the catalogue's look vectors (one distinct product per
    part, from its index label's products), scored as indexer.evaluate scores the service; ``score``
    (label, query) -> the label's products' scores replaces the inner product (bench/look_hubness.py)."""
    pools = label_pools(products)
    results = []
    for sample, photo_parts, photo_colours in zip(samples, parts, colours, strict=True):
        taken: set[int] = set()
        returned = []
        if photo_parts:
            queries = look_vectors(
                head,
                np.stack([p.features for p in photo_parts]),
                np.stack([p.colour for p in photo_parts]),
                colour_weight,
            )
            for part, query in zip(photo_parts, queries, strict=True):
                pool = pools[part.index_label]
                scores = catalogue[pool] @ query if score is None else score(part.index_label, query)
                for row in pool[np.argsort(-scores)]:
                    if int(row) not in taken:
                        taken.add(int(row))
                        match = Match(products[int(row)].id, 0.0, metadata[int(row)])
                        returned.append(evaluated(match, part.label))
                        break
        results.append(QueryResult(sample.labels, returned, photo_colours))
    report = summarise(results)
    return {
        "p_at_1": report["groups"]["precision_at_1"],  # type: ignore[index]
        "coverage": report["groups"]["coverage"],  # type: ignore[index]
        "colour_agreement": report["colour"]["agreement"],  # type: ignore[index]
        "distinct_products": report["across_queries"]["distinct_products"],  # type: ignore[index]
        "max_group_top_share": report["across_queries"]["max_group_top_share"],  # type: ignore[index]
    }


def margins(row: dict[str, Any]) -> list[float]:
    """How far a setting clears each target (negative: how far it misses)."""
    return [
        row["reshot"]["r1"] - TARGETS["r1"],
        row["reshot"]["r10"] - TARGETS["r10"],
        row["ccp"]["colour_agreement"] - TARGETS["colour_agreement"],
        TARGETS["max_group_top_share"] - row["ccp"]["max_group_top_share"],
    ]


def margin(row: dict[str, Any]) -> float:
    """The rule, fixed before any test run: the least of a setting's margins; the widest wins, and
    among settings tied on it (the same r1 can miss by the same count of queries), the widest sum."""
    return min(margins(row))


def choose(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return max(rows, key=lambda r: (round(r["margin"], 9), sum(margins(r))))


# A fitted head's other whole share must beat its own by this much in re-shot r1 (the head's seed
# spread on validation), and may cost this much colour agreement and top share at most (150 photos).
SHARE_R1_GAIN, SHARE_COLOUR_TOLERANCE, SHARE_TOP_SHARE_TOLERANCE = 0.014, 0.02, 0.03


def choose_share(own: dict[str, Any], others: list[dict[str, Any]]) -> dict[str, Any]:
    """The rule for a fitted head's whole share (docs/research-log.md, 2026-12-07): of the other
    shares whose re-shot r1 beats ``own``'s by SHARE_R1_GAIN, whose r10 is not lower, whose colour
    agreement is lower by SHARE_COLOUR_TOLERANCE and largest top share higher by
    SHARE_TOP_SHARE_TOLERANCE at most, the highest r1 (a tie: the widest margin, ``choose``'s);
    none: ``own``."""
    kept = [
        r
        for r in others
        if r["reshot"]["r1"] >= own["reshot"]["r1"] + SHARE_R1_GAIN
        and r["reshot"]["r10"] >= own["reshot"]["r10"]
        and r["ccp"]["colour_agreement"] >= own["ccp"]["colour_agreement"] - SHARE_COLOUR_TOLERANCE
        and r["ccp"]["max_group_top_share"] <= own["ccp"]["max_group_top_share"] + SHARE_TOP_SHARE_TOLERANCE
    ]
    return max(kept, key=lambda r: (round(r["reshot"]["r1"], 9), round(r["margin"], 9))) if kept else own


# A fitted head's skin weight other than its own must raise CCP colour agreement by this much, and
# may cost this much re-shot r1 and r10 and this much more top share at most (docs/research-log.md,
# the eighth session of 2026-12-07).
SKIN_COLOUR_GAIN, SKIN_R1_TOLERANCE, SKIN_R10_TOLERANCE = 0.015, 0.007, 0.01


def choose_skin(own: dict[str, Any], others: list[dict[str, Any]]) -> dict[str, Any]:
    """The rule for a fitted head's skin weight: of the other weights whose colour agreement beats
    ``own``'s by SKIN_COLOUR_GAIN, whose re-shot r1 and r10 are lower by SKIN_R1_TOLERANCE and
    SKIN_R10_TOLERANCE at most and whose largest top share is higher by SHARE_TOP_SHARE_TOLERANCE at
    most, the highest colour agreement (a tie: the widest margin); none: ``own``."""
    kept = [
        r
        for r in others
        if r["ccp"]["colour_agreement"] >= own["ccp"]["colour_agreement"] + SKIN_COLOUR_GAIN
        and r["reshot"]["r1"] >= own["reshot"]["r1"] - SKIN_R1_TOLERANCE
        and r["reshot"]["r10"] >= own["reshot"]["r10"] - SKIN_R10_TOLERANCE
        and r["ccp"]["max_group_top_share"] <= own["ccp"]["max_group_top_share"] + SHARE_TOP_SHARE_TOLERANCE
    ]
    return max(kept, key=lambda r: (round(r["ccp"]["colour_agreement"], 9), round(r["margin"], 9))) if kept else own


def scored(
    head: LookHead,
    data: LookData,
    whole_share: float,
    colour_weight: float,
    ccp: tuple[list[dict[str, str]], list[Sample], list[list[StreetPart]], list[dict[str, str | None]]],
) -> dict[str, Any]:
    """A look head at a whole share and colour weight: the validation products' re-shot retrieval,
    the CCP validation photos' answers, and the rule's margin."""
    metadata, samples, parts, colours = ccp
    catalogue = catalogue_looks(head, data.features["catalogue"], colour_weight=colour_weight, whole_share=whole_share)
    row: dict[str, Any] = {
        "whole_share": whole_share,
        "colour_weight": colour_weight,
        "reshot": retrieval(head, catalogue, data.features["validation"], data.val_truth, data.products, colour_weight),
        "ccp": shop_the_look(head, catalogue, data.products, metadata, samples, parts, colours, colour_weight),
    }
    row["margin"] = margin(row)
    return row


def same_parts(model: PartAttentionNetwork, other: PartAttentionNetwork) -> None:
    """Refuse a model whose parts differ from ``model``'s: a look head is scored here on ``model``'s
    pooled features, which hold for another head only under the same trunk and attention."""
    mine, theirs = model.state_dict(), other.state_dict()
    shared = [k for k in mine if not k.startswith(HEAD_PREFIXES)]  # the trunk's weights among them
    differ = [k for k in shared if k not in theirs or not torch.equal(mine[k], theirs[k])]
    if differ:
        raise SystemExit(f"--incumbent has another trunk or attention than --checkpoint ({differ[:3]}…)")


def ccp_validation(
    model: PartAttentionNetwork,
    payload: dict[str, Any],
    ccp: ClothingCoParsing,
    root: Path,
    products: list[Product],
    skin_weight: float = 1.0,
) -> tuple[list[dict[str, str]], list[Sample], list[list[StreetPart]], list[dict[str, str | None]]]:
    """The products' metadata, and the CCP validation photos (as the checkpoint's training held them
    out) with the parts the service would find in them and their items' colours."""
    _, samples = validation_split(ccp, payload.get("training", {}))
    searchable = {p.category for p in products} & set(model.config.labels)
    parts = street_parts(model, samples, searchable, skin_weight)
    return read_metadata(root, products), samples, parts, [item_colours(ccp, s) for s in samples]


def read_metadata(root: Path, products: list[Product]) -> list[dict[str, str]]:
    with open(root / "styles.csv", newline="", encoding="utf-8", errors="replace") as handle:
        rows = {row["id"]: row for row in csv.DictReader(handle)}
    return [rows.get(p.id, {}) for p in products]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--products", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("reports/look_validation.json"))
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache/look"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reshots", type=int, nargs="+", default=[LookConfig.reshots], help="views per product")
    parser.add_argument("--weight-decays", type=float, nargs="+", default=[LookConfig.weight_decay])
    parser.add_argument("--input-dropouts", type=float, nargs="+", default=[LookConfig.input_dropout])
    parser.add_argument(
        "--incumbent",
        type=Path,
        default=None,
        help="a checkpoint with the same trunk and attention whose look head (at its own whole share and "
        "colour weight) is scored beside the trained ones and may be chosen",
    )
    parser.add_argument(
        "--only-incumbent",
        action="store_true",
        help="train nothing: score --incumbent alone (e.g. a refitted checkpoint as --checkpoint and --incumbent)",
    )
    parser.add_argument(
        "--incumbent-whole-shares",
        type=float,
        nargs="*",
        default=None,
        help="also score --incumbent's head with its products indexed at these whole shares (its own colour "
        f"weight; no values: {WHOLE_SHARES}), each a candidate for the rule",
    )
    parser.add_argument(
        "--incumbent-skin-weights",
        type=float,
        nargs="*",
        default=None,
        help="also score --incumbent's head with skin-coloured pixels weighted by these in every colour "
        f"histogram (its own whole share and colour weight; no values: {SKIN_WEIGHTS}), each a candidate",
    )
    args = parser.parse_args()
    if args.incumbent_whole_shares is not None and args.incumbent_skin_weights is not None:
        parser.error("--incumbent-whole-shares and --incumbent-skin-weights: one choice at a time")
    if args.incumbent_skin_weights is not None and not args.only_incumbent:
        parser.error("--incumbent-skin-weights goes with --only-incumbent (a fitted head's colours, alone)")
    if any(not 0 <= w <= 1 for w in args.incumbent_skin_weights or []):
        parser.error("--incumbent-skin-weights: weights in [0, 1]")
    if args.only_incumbent and args.incumbent is None:
        parser.error("--only-incumbent needs --incumbent")
    if args.incumbent_whole_shares is not None and not args.only_incumbent:
        parser.error("--incumbent-whole-shares goes with --only-incumbent (a fitted head's indexing, alone)")
    if min(args.reshots) < 1:
        parser.error("--reshots: a head is trained on at least one re-shot view per product")
    configure_logging()
    model, payload = load_checkpoint(args.checkpoint)
    ccp = ClothingCoParsing(data_dir(args.data) / "ccp")
    streets = street_photos(args.data)
    rows: list[dict[str, Any]] = []
    # Scoring a fitted head alone needs no training views (each re-shot number is minutes to compute).
    for reshots in [0] if args.only_incumbent else args.reshots:
        data = look_data(
            model, args.checkpoint, args.products, streets, LookConfig(reshots=reshots), args.cache_dir, args.workers
        )
        if not rows:
            metadata, val_samples, parts, colours = ccp_validation(model, payload, ccp, args.products, data.products)
        if args.only_incumbent:
            break
        for weight_decay, input_dropout in itertools.product(args.weight_decays, args.input_dropouts):
            cfg = LookConfig(reshots=reshots, weight_decay=weight_decay, input_dropout=input_dropout)
            for region in REGIONS:
                cached = head_cache(args.cache_dir, data.key, cfg, region)
                head, history = fit_look_head(model, data.features, data.train_owner, cfg, region, cached)
                ccp_views = (metadata, val_samples, parts, colours)
                for whole_share, colour_weight in itertools.product(WHOLE_SHARES, COLOUR_WEIGHTS):
                    row: dict[str, Any] = {
                        "reshots": reshots,
                        "weight_decay": weight_decay,
                        "input_dropout": input_dropout,
                        "region": region,
                        **scored(head, data, whole_share, colour_weight, ccp_views),
                        "final_loss": history[-1],
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    if args.incumbent is not None:
        incumbent, incumbent_payload = load_checkpoint(args.incumbent)
        if incumbent.look is None:
            raise SystemExit(f"--incumbent {args.incumbent} has no look head")
        same_parts(model, incumbent)
        own = incumbent.config
        trained = incumbent_payload.get("metrics", {}).get("look", {}).get("settings", {})
        shares = [own.look_whole_share]
        if args.incumbent_whole_shares is not None:
            shares = list(dict.fromkeys([*shares, *(args.incumbent_whole_shares or WHOLE_SHARES)]))
        skins = [own.look_skin_weight]
        if args.incumbent_skin_weights is not None:
            skins = list(dict.fromkeys([*skins, *(args.incumbent_skin_weights or SKIN_WEIGHTS)]))
        for whole_share, skin_weight in itertools.product(shares, skins):
            ccp_views = (metadata, val_samples, parts, colours)
            skin_data = data
            if skin_weight != 1:  # the colours of every view and every CCP part, taken again
                cfg = LookConfig(reshots=0, skin_weight=skin_weight)
                skin_data = look_data(model, args.checkpoint, args.products, streets, cfg, args.cache_dir, args.workers)
                ccp_views = ccp_validation(model, payload, ccp, args.products, data.products, skin_weight)
            row = {
                "incumbent": str(args.incumbent),
                "reshots": trained.get("reshots"),
                "weight_decay": trained.get("weight_decay"),
                "input_dropout": trained.get("input_dropout", 0.0),
                "region": trained.get("region"),
                "skin_weight": skin_weight,
                **scored(incumbent.look, skin_data, whole_share, own.look_colour_weight, ccp_views),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    tried: dict[str, Any] = {}
    if args.incumbent_whole_shares is not None:
        # only the incumbent's rows here (--only-incumbent), its own share first
        chosen = choose_share(rows[0], rows[1:])
        tried = {"incumbent_whole_share": shares}
    elif args.incumbent_skin_weights is not None:
        chosen = choose_skin(rows[0], rows[1:])  # its own skin weight first
        tried = {"incumbent_skin_weight": skins}
    else:
        chosen = choose(rows)
        if not args.only_incumbent:
            tried = {
                "reshots": args.reshots,
                "weight_decay": args.weight_decays,
                "input_dropout": args.input_dropouts,
                "region": REGIONS,
                "whole_share": WHOLE_SHARES,
                "colour_weight": COLOUR_WEIGHTS,
            }
    print("chosen:", json.dumps(chosen))
    report = {
        "checkpoint": str(args.checkpoint),
        "settings": dataclasses.asdict(LookConfig()),  # LookConfig's defaults when run (before the choice)
        "tried": tried,
        "targets": TARGETS,
        "chosen": chosen,
        "rows": rows,
        "products": {"train": len(data.train_rows), "validation": len(data.val_rows)},
        "ccp_validation_photos": len(val_samples),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
