"""Any shopper's photo: parts found in photos framed unlike CCP's, posted to the running service.

    python bench/any_photo.py --checkpoint weights/ccp-attention.pt --bundles bundles \
        --before-root /tmp/before --before-bundles /tmp/before-bundles --out reports/any_photo.json \
        --figure docs/any_photo.png
    python bench/any_photo.py --split validation --choose ...   # the part threshold and floor, on validation

Query sets (test split; ``--split validation`` takes the validation counterparts, for choosing):
- ``held_out_products``: the product set's held-out tenth (``model.products.split_products``, never
  trained on), those of a category with a part index; each excludes its own id. Own group rate:
  a part of the product's own group is in the answer.
- ``ccp_reframed``: the 502 CCP test photos as shot and in four framings (``model.framing``): the
  top or bottom half, the long side 256 px, zoomed out onto a plain background. Group recall: of
  the groups of the items whose mask keeps at least 100 px in the framing, the share the answer
  has a part of.
- ``ccp``: the photos as shot, scored as ``indexer.evaluate`` scores them (group P@1, coverage).
- ``non_fashion``: nothing to wear: windows of CCP street with no person in them (of the split's
  own photos), scikit-learn's two sample photos, blank and noise images. Empty rate reported.

Each service is started from its checkout (``serve_latency.serving``) with its defaults, cache
off: the new one (this checkout, ``--checkpoint``, ``--bundles``) and the rivals: the service of
before (``--before-root``: a worktree of the commit before, with its committed model and bundle),
with ``--no-trim-rival``, this service with no photo cut to its content
(``FASHION_TRIM_MAX_AREA=0``), with ``--no-wide-rival``, this service with every photo seen once,
centred in the frame (``FASHION_WIDE_FILL=0``), and with ``--one-threshold-rival``, this service with
wide photos kept from the usual part threshold (``FASHION_WIDE_PART_THRESHOLD`` set to it).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import platform
import sys
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from serve_latency import serving  # noqa: E402

from indexer.evaluate import QueryResult, item_colours, summarise, type_colours  # noqa: E402
from indexer.evaluate import returned as evaluated  # noqa: E402
from indexer.search import DEFAULT_MAX_PARTS, Match  # noqa: E402
from model.checkpoint import load_checkpoint  # noqa: E402
from model.data import ClothingCoParsing, Sample, data_dir  # noqa: E402
from model.framing import EVAL_FRAMINGS, EXTRA_FRAMINGS, eval_reframe  # noqa: E402
from model.imaging import (  # noqa: E402
    DEFAULT_LIMITS,
    DEFAULT_TRIM_MAX_AREA,
    DEFAULT_WIDE_FILL,
    WIDE_ALIGNS,
    content_box,
    decode_image,
    load_input_views,
    load_pixel_views,
)
from model.labels import group_of  # noqa: E402
from model.network import DEFAULT_PART_THRESHOLD, photo_parts  # noqa: E402
from model.products import SPLITS, read_products, split_products  # noqa: E402
from tests.conftest import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KEPT_PIXELS = 100  # an item counts in a framing where its mask keeps this many pixels (CCP's test protocol)
EMPTY_TARGET = 0.02  # the issue's: at most this share of product photos answered empty
# A second, stricter truth for the framings, beside the (100 px kept): the items with a third
# of their pixels in the framing. A dress cut at the waist is not visible as a dress.
VISIBLE_SHARE = 1 / 3
JPEG_QUALITY = 92


@dataclass
class Query:
    name: str
    data: bytes
    groups: frozenset[str]  # the groups present (a product: its own)
    exclude: tuple[str, ...] = ()
    labels: list[str] = field(default_factory=list)  # CCP as shot: the true labels, for indexer.evaluate's scores
    colours: dict[str, str | None] = field(default_factory=dict)
    category: str = ""  # a product's articleType
    visible: frozenset[str] = frozenset()  # CCP framings: the groups of items with a third of their pixels kept


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def product_queries(root: Path, split: str, searchable: set[str]) -> list[Query]:
    """The product set's validation or held-out tenth, as photos a shopper posts."""
    products = read_products(root)
    rows = split_products(len(products))[SPLITS.index(split)]
    with open(root / "styles.csv", newline="", encoding="utf-8", errors="replace") as handle:
        types = {row["id"]: row.get("articleType", "") for row in csv.DictReader(handle)}
    out = []
    for i in sorted(rows.tolist()):
        product = products[i]
        if product.category in searchable:
            out.append(
                Query(
                    product.id,
                    product.image.read_bytes(),
                    frozenset({group_of(product.category)}),
                    (product.id,),
                    category=types.get(product.id, ""),
                )
            )
    return out


def ccp_queries(
    ccp: ClothingCoParsing, samples: Sequence[Sample], framings: Sequence[str] = EVAL_FRAMINGS + EXTRA_FRAMINGS
) -> dict[str, list[Query]]:
    """Each framing of each photo, with the groups of the items its mask keeps there."""
    out: dict[str, list[Query]] = defaultdict(list)
    for sample in samples:
        assert sample.mask is not None
        mask = ccp.read_mask(sample.mask)
        with Image.open(sample.image) as opened:
            photo = opened.convert("RGB")
        colours = item_colours(ccp, sample)
        for framing in framings:
            reframe = eval_reframe(framing, photo.width, photo.height)
            x0, y0, x1, y1 = (round(v) for v in reframe.crop)
            kept = ccp.mask_labels(mask[y0:y1, x0:x1])
            visible = [
                label
                for label in kept
                if ccp.item_mask(mask[y0:y1, x0:x1], label).sum() >= VISIBLE_SHARE * ccp.item_mask(mask, label).sum()
            ]
            out[framing].append(
                Query(
                    sample.image.stem,
                    jpeg(reframe.apply(photo)),
                    frozenset(group_of(label) for label in kept),
                    labels=sample.labels if framing == "full" else kept,
                    colours=colours if framing == "full" else {},
                    visible=frozenset(group_of(label) for label in visible),
                )
            )
    return out


def non_fashion_queries(ccp: ClothingCoParsing, samples: Sequence[Sample], count: int = 60) -> list[Query]:
    """Photos with nothing to wear in them: street windows with no person (no item, skin or hair
    pixel) from ``samples``' own masks, scikit-learn's sample photos, blank and noise images."""
    rng = np.random.default_rng(0)
    person = [ccp.all_labels.index(name) for name in ccp.all_labels if name and name != "null"]
    out = []
    for sample in samples:
        if len(out) >= count:
            break
        assert sample.mask is not None
        mask = ccp.read_mask(sample.mask)
        height, width = mask.shape
        for _ in range(30):
            w, h = int(rng.uniform(0.3, 0.5) * width), int(rng.uniform(0.2, 0.35) * height)
            x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
            if not np.isin(mask[y : y + h, x : x + w], person).any():
                with Image.open(sample.image) as opened:
                    out.append(
                        Query(f"street-{sample.image.stem}", jpeg(opened.crop((x, y, x + w, y + h))), frozenset())
                    )
                break
    from sklearn.datasets import load_sample_images

    for i, pixels in enumerate(load_sample_images().images):
        out.append(Query(f"sklearn-{i}", jpeg(Image.fromarray(pixels)), frozenset()))
    out.append(Query("blank-white", jpeg(Image.new("RGB", (400, 600), "white")), frozenset()))
    out.append(Query("blank-grey", jpeg(Image.new("RGB", (400, 600), (128, 128, 128))), frozenset()))
    noise = rng.integers(0, 256, (600, 400, 3), dtype=np.uint8)
    out.append(Query("noise", jpeg(Image.fromarray(noise)), frozenset()))
    return out


def ask(url: str, queries: Sequence[Query], clients: int = 4) -> list[dict[str, Any]]:
    """Each query posted to ``url``'s /recommend (its defaults; its own ids excluded)."""

    def post(query: Query) -> dict[str, Any]:
        params = [("exclude", i) for i in query.exclude]
        for _attempt in range(5):
            response = httpx.post(
                url + "/recommend", files={"image": ("photo.jpg", query.data, "image/jpeg")}, params=params, timeout=60
            )
            if response.status_code != 503:
                break
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(post, queries))


def part_groups(answer: dict[str, Any], confident_only: bool = False) -> list[str]:
    return [p["group"] for p in answer["parts"] if p.get("group") and (p.get("confident", True) or not confident_only)]


def held_out_report(queries: Sequence[Query], answers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    empty = [not a["parts"] for a in answers]
    own = [next(iter(q.groups)) in part_groups(a) for q, a in zip(queries, answers, strict=True)]
    own_confident = [next(iter(q.groups)) in part_groups(a, True) for q, a in zip(queries, answers, strict=True)]
    by_type: dict[str, list[bool]] = defaultdict(list)
    for q, hit in zip(queries, own, strict=True):
        by_type[q.category].append(hit)
    unsure = [bool(a["parts"]) and not any(p.get("confident", True) for p in a["parts"]) for a in answers]
    return {
        "queries": len(queries),
        "empty_rate": float(np.mean(empty)),
        "own_group_rate": float(np.mean(own)),
        "own_group_rate_confident_parts": float(np.mean(own_confident)),
        "low_confidence_only_rate": float(np.mean(unsure)),
        "parts_per_query": float(np.mean([len(a["parts"]) for a in answers])),
        "own_group_rate_by_type": {
            t: {"queries": len(hits), "rate": round(float(np.mean(hits)), 3)}
            for t, hits in sorted(by_type.items(), key=lambda kv: -len(kv[1]))
            if len(hits) >= 5
        },
    }


def group_recall(queries: Sequence[Query], answers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean over photos with a kept item of the share of their groups the answer has a part of."""
    recalls = [
        len(q.groups & set(part_groups(a))) / len(q.groups) for q, a in zip(queries, answers, strict=True) if q.groups
    ]
    precisions = [
        float(np.mean([g in q.groups for g in part_groups(a)]))
        for q, a in zip(queries, answers, strict=True)
        if q.groups and a["parts"]
    ]
    visible = [
        len(q.visible & set(part_groups(a))) / len(q.visible)
        for q, a in zip(queries, answers, strict=True)
        if q.visible
    ]
    found: dict[str, list[bool]] = defaultdict(list)
    for q, a in zip(queries, answers, strict=True):
        for group in q.groups:
            found[group].append(group in part_groups(a))
    return {
        "photos": len(recalls),
        "group_recall": float(np.mean(recalls)),
        "part_precision": float(np.mean(precisions)) if precisions else 0.0,
        "group_recall_visible": float(np.mean(visible)) if visible else 0.0,
        "by_group": {g: [len(hits), round(float(np.mean(hits)), 3)] for g, hits in sorted(found.items())},
        "empty_rate": float(np.mean([not a["parts"] for a in answers])),
        "parts_per_query": float(np.mean([len(a["parts"]) for a in answers])),
    }


def as_results(queries: Sequence[Query], answers: Sequence[dict[str, Any]]) -> list[QueryResult]:
    """The answers as indexer.evaluate scores them."""
    results = []
    for q, a in zip(queries, answers, strict=True):
        returned = []
        for part in a["parts"]:
            item = part.get("item")
            if item is None:
                continue
            returned.append(evaluated(Match(item["id"], item["distance"], item["metadata"]), part["label"]))
        results.append(QueryResult(q.labels, returned, q.colours))
    return results


def report_of(sets: dict[str, list[Query]], answers: dict[str, list[dict[str, Any]]], colours: Any) -> dict[str, Any]:
    ccp = summarise(as_results(sets["full"], answers["full"]), colours)
    return {
        "held_out_products": held_out_report(sets["products"], answers["products"]),
        "ccp_reframed": {f: group_recall(sets[f], answers[f]) for f in EVAL_FRAMINGS + EXTRA_FRAMINGS if f in sets},
        "ccp": {
            "p_at_1": ccp["groups"]["precision_at_1"],  # type: ignore[index]
            "coverage": ccp["groups"]["coverage"],  # type: ignore[index]
            "colour_agreement": ccp["colour"]["agreement"],  # type: ignore[index]
            "distinct_products": ccp["across_queries"]["distinct_products"],  # type: ignore[index]
            "parts_per_query": ccp["returned_per_query"],
        },
        "non_fashion": {
            "photos": len(sets["non_fashion"]),
            "empty_rate": float(np.mean([not a["parts"] for a in answers["non_fashion"]])),
            "parts_per_query": float(np.mean([len(a["parts"]) for a in answers["non_fashion"]])),
            "answered": [
                q.name for q, a in zip(sets["non_fashion"], answers["non_fashion"], strict=True) if a["parts"]
            ],
        },
    }


def ratios(report: dict[str, Any], framings: Sequence[str] = EVAL_FRAMINGS) -> dict[str, float]:
    full = report["ccp_reframed"]["full"]["group_recall"]
    return {f: report["ccp_reframed"][f]["group_recall"] / max(full, 1e-9) for f in framings if f != "full"}


def with_ratios(report: dict[str, Any]) -> dict[str, Any]:
    """``report`` with the issue's four framings' ratios, and apart those of the extra ones."""
    report["ccp_reframed_ratio_to_full"] = ratios(report)
    extra = [f for f in EXTRA_FRAMINGS if f in report["ccp_reframed"]]
    if extra:
        report["extra_framings_ratio_to_full"] = ratios(report, extra)
    return report


def cut_share(sets: dict[str, list[Query]], trim_max_area: float) -> dict[str, float]:
    """Per query set, the share of photos the service cuts to their content at ``trim_max_area``."""
    if trim_max_area <= 0:
        return {name: 0.0 for name in sets}
    return {
        name: float(np.mean([content_box(decode_image(q.data), trim_max_area) is not None for q in queries]))
        for name, queries in sets.items()
    }


def wide_share(
    sets: dict[str, list[Query]], size: tuple[int, int], trim_max_area: float, wide_fill: float
) -> dict[str, float]:
    """Per query set, the share of photos the service sees more than once (wide photos)."""
    return {
        name: float(
            np.mean(
                [
                    len(load_pixel_views(q.data, size, DEFAULT_LIMITS, None, trim_max_area, wide_fill)) > 1
                    for q in queries
                ]
            )
        )
        for name, queries in sets.items()
    }


def query_sets(args: argparse.Namespace, searchable: set[str]) -> dict[str, list[Query]]:
    ccp = ClothingCoParsing(data_dir(args.data) / "ccp")
    if args.split == "test":
        _, samples = ccp.split()
    else:
        from model.evaluate import validation_split

        samples = validation_split(ccp, {})[1]
    framings = EVAL_FRAMINGS if args.choose else EVAL_FRAMINGS + EXTRA_FRAMINGS
    sets: dict[str, list[Query]] = dict(ccp_queries(ccp, samples, framings))
    sets["products"] = product_queries(
        data_dir(args.data) / "fashion-product", "held_out" if args.split == "test" else "validation", searchable
    )
    sets["non_fashion"] = non_fashion_queries(ccp, samples)
    return sets


@torch.inference_mode()
def outputs_in_process(
    model: Any,
    sets: dict[str, list[Query]],
    trim_max_area: float = 0.0,
    wide_fill: float = 0.0,
    wide_aligns: Sequence[float] = WIDE_ALIGNS,
) -> dict[str, list[list[tuple[Any, int, Any]]]]:
    """The network's views of every query photo (output, row, placement), computed once (the
    service's decoding, the PyTorch model)."""
    size = (model.config.image_height, model.config.image_width)
    out: dict[str, list[list[tuple[Any, int, Any]]]] = {}
    for name, queries in sets.items():
        out[name] = []
        for start in range(0, len(queries), 32):
            fitted = [
                load_input_views(
                    q.data, size, trim_max_area=trim_max_area, wide_fill=wide_fill, wide_aligns=tuple(wide_aligns)
                )
                for q in queries[start : start + 32]
            ]
            batch = model(torch.stack([x for views in fitted for x, _ in views])).per_photo()
            row = 0
            for views in fitted:
                out[name].append([(batch[row + v], 0, placement) for v, (_, placement) in enumerate(views)])
                row += len(views)
    return out


def answers_in_process(
    model: Any,
    outputs: dict[str, list[list[tuple[Any, int, Any]]]],
    searchable: set[str],
    threshold: float,
    floor: float | None,
    wide_threshold: float | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """The parts the service would answer (photo_parts with these settings), without the catalogue:
    what the part counts need, for choosing settings on validation."""
    answers: dict[str, list[dict[str, Any]]] = {}
    for name, photos in outputs.items():
        answers[name] = [
            {
                "parts": [
                    {"label": p.label, "group": group_of(p.label), "confident": p.confident, "item": None}
                    for p in photo_parts(model, views, threshold, DEFAULT_MAX_PARTS, searchable, floor, wide_threshold)
                ]
            }
            for views in photos
        ]
    return answers


THRESHOLDS = (0.4, 0.5, 0.55, 0.575, 0.6, 0.625, 0.65, 0.7)
WIDE_THRESHOLDS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)
FLOORS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3)
TOLERANCE = 0.005  # how far under the model of before a candidate's CCP precision or recall may fall
MAP_TOLERANCE = 1.0  # the issue's: labels and groups mAP within 1 point of the model of before
# The floor keeps product photos this far inside the empty target: photos of other sources sit lower.
FLOOR_EMPTY_MARGIN = EMPTY_TARGET / 4
# A lower bar for wide photos must not answer the photos of nothing to wear: their empty share may
# fall this much at most (three of the sixty-odd validation photos).
NON_FASHION_TOLERANCE = 0.05


def setting_row(
    model: Any,
    outputs: dict[str, list[list[tuple[Any, int, Any]]]],
    sets: dict[str, list[Query]],
    searchable: set[str],
    threshold: float,
    floor: float | None,
    wide_threshold: float | None = None,
) -> dict[str, Any]:
    answers = answers_in_process(model, outputs, searchable, threshold, floor, wide_threshold)
    row: dict[str, Any] = {
        "threshold": threshold,
        "floor": floor,
        "wide_threshold": threshold if wide_threshold is None else wide_threshold,
        "held_out_products": held_out_report(sets["products"], answers["products"]),
        "ccp_reframed": {f: group_recall(sets[f], answers[f]) for f in EVAL_FRAMINGS},
        "non_fashion_empty_rate": float(np.mean([not a["parts"] for a in answers["non_fashion"]])),
    }
    row["ccp_reframed_ratio_to_full"] = ratios(row)
    row["halves_f1"] = halves_f1(row)
    return row


HALVES = ("upper_half", "lower_half")


def halves_f1(row: dict[str, Any]) -> float:
    """The mean over the two halves of the F1 of their group recall and part precision."""
    scores = []
    for framing in HALVES:
        found = row["ccp_reframed"][framing]
        recall, precision = found["group_recall"], found["part_precision"]
        scores.append(2 * recall * precision / (recall + precision) if recall + precision else 0.0)
    return float(np.mean(scores))


def validation_map(checkpoint: dict[str, Any]) -> dict[str, float]:
    validation = checkpoint["metrics"]["validation"]
    return {"labels": validation["labels"]["map"], "groups": validation["groups"]["map"]}


def choose_settings(
    checkpoints: Sequence[Path],
    before: Path,
    sets: dict[str, list[Query]],
    searchable: set[str],
    trims: Sequence[float] = (0.0,),
    wides: Sequence[tuple[float, tuple[float, ...]]] = ((0.0, WIDE_ALIGNS),),
    wide_thresholds: Sequence[float] = (),
) -> dict[str, Any]:
    """The model, how far photos are cut to their content (``trims``: FASHION_TRIM_MAX_AREA values),
    which photos are seen at several places in the frame (``wides``: FASHION_WIDE_FILL values, each
    with the places) and its part threshold, then its floor, on validation. The model, trim, wide
    photos and threshold: of
    those whose validation products are answered empty at most EMPTY_TARGET of the time, whose
    validation labels and groups mAP are within MAP_TOLERANCE of the model of before, and whose CCP
    photos (as shot) keep the part precision and group recall of the model of before at its settings
    (``before``: threshold 0.6, no fallback; within TOLERANCE), the one with the highest mean ratio
    of the four framings' group recall to the photo's as shot. Where none keeps them all, the one
    that falls least short. The floor: of the model's and threshold's floors that keep the
    validation products' empty rate within FLOOR_EMPTY_MARGIN, the one with the most photos of
    nothing to wear answered empty (then the lowest). Then, where ``wide_thresholds`` are given, the
    wide photos' own threshold (FASHION_WIDE_PART_THRESHOLD) for the chosen model, trim, wide photos,
    threshold and floor: of those that keep the validation products' empty rate within
    FLOOR_EMPTY_MARGIN, their own-group rate within TOLERANCE of the chosen row's and its photos of
    nothing to wear answered empty within NON_FASHION_TOLERANCE of its share, the one with
    the highest mean F1 of the two halves' group recall and part precision (recall alone would take
    the lowest: every group a part), and of equal F1 the highest threshold; where none keeps them,
    the chosen threshold holds for wide photos too."""
    baseline_model, baseline_checkpoint = load_checkpoint(before)
    base = setting_row(baseline_model, outputs_in_process(baseline_model, sets), sets, searchable, 0.6, None)
    base["validation_map"] = base_map = validation_map(baseline_checkpoint)
    bar = base["ccp_reframed"]["full"]
    rows = []
    for checkpoint in checkpoints:
        model, stored = load_checkpoint(checkpoint)
        mean_ap = validation_map(stored)
        for trim, (wide_fill, aligns) in ((t, w) for t in trims for w in wides):
            outputs = outputs_in_process(model, sets, trim, wide_fill, aligns)
            for threshold in THRESHOLDS:
                for floor in FLOORS:
                    row = {
                        "checkpoint": str(checkpoint),
                        "trim_max_area": trim,
                        "wide_fill": wide_fill,
                        "wide_aligns": list(aligns),
                    }
                    row |= setting_row(model, outputs, sets, searchable, threshold, floor)
                    row["validation_map"] = mean_ap
                    full = row["ccp_reframed"]["full"]
                    row["shortfall"] = max(
                        0.0,
                        row["held_out_products"]["empty_rate"] - EMPTY_TARGET,
                        bar["part_precision"] - TOLERANCE - full["part_precision"],
                        bar["group_recall"] - TOLERANCE - full["group_recall"],
                        # mAP points weigh as a hundredth each, like the rates beside them
                        *((base_map[k] - MAP_TOLERANCE - mean_ap[k]) / 100 for k in ("labels", "groups")),
                    )
                    rows.append(row)

    def preference(row: dict[str, Any]) -> tuple[float, float]:
        return (-row["shortfall"], float(np.mean(list(row["ccp_reframed_ratio_to_full"].values()))))

    best = max(rows, key=preference)
    chosen_by = ("checkpoint", "trim_max_area", "wide_fill", "wide_aligns", "threshold")
    same = [r for r in rows if all(r[k] == best[k] for k in chosen_by)]
    within = [r for r in same if r["held_out_products"]["empty_rate"] <= FLOOR_EMPTY_MARGIN] or same
    chosen = max(within, key=lambda r: (r["non_fashion_empty_rate"], -r["floor"]))
    wide_rows = []
    if wide_thresholds:
        model, _ = load_checkpoint(Path(chosen["checkpoint"]))
        outputs = outputs_in_process(
            model, sets, chosen["trim_max_area"], chosen["wide_fill"], tuple(chosen["wide_aligns"])
        )
        # the settings chosen above, and what they were judged by (photos as shot are not wide: unchanged)
        settings = {
            k: chosen[k]
            for k in ("checkpoint", "trim_max_area", "wide_fill", "wide_aligns", "validation_map", "shortfall")
        }
        for wide_threshold in wide_thresholds:
            row = settings | setting_row(
                model, outputs, sets, searchable, chosen["threshold"], chosen["floor"], wide_threshold
            )
            wide_rows.append(row)
        products = chosen["held_out_products"]
        kept = [
            r
            for r in wide_rows
            if r["held_out_products"]["empty_rate"] <= FLOOR_EMPTY_MARGIN
            and r["held_out_products"]["own_group_rate"] >= products["own_group_rate"] - TOLERANCE
            and r["non_fashion_empty_rate"] >= chosen["non_fashion_empty_rate"] - NON_FASHION_TOLERANCE
        ]
        if kept:
            chosen = max(kept, key=lambda r: (round(r["halves_f1"], 9), r["wide_threshold"]))
    return {"rule": choose_settings.__doc__, "before": base, "chosen": chosen, "rows": rows, "wide_rows": wide_rows}


def serve_and_ask(
    root: Path, checkpoint: Path, bundles: Path, sets: dict[str, list[Query]], env: dict[str, str]
) -> dict[str, list[dict[str, Any]]]:
    service_env = {"FASHION_CHECKPOINT": str(checkpoint), "FASHION_BUNDLES_DIR": str(bundles), **env}
    photos = [q.data for q in sets["full"][:4]]
    with serving(root, service_env, free_port(), photos) as (url, _):
        return {name: ask(url, queries) for name, queries in sets.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("weights/ccp-attention.pt"))
    parser.add_argument("--bundles", type=Path, default=Path("bundles"))
    parser.add_argument("--before-root", type=Path, default=None, help="a worktree of the service before")
    parser.add_argument("--before-checkpoint", type=Path, default=Path("weights/ccp-attention.pt"))
    parser.add_argument("--before-bundles", type=Path, default=None)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--split", choices=("test", "validation"), default="test")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the new service (settings tried)")
    parser.add_argument(
        "--no-trim-rival", action="store_true", help="also this service with FASHION_TRIM_MAX_AREA=0, as a rival"
    )
    parser.add_argument(
        "--no-wide-rival",
        action="store_true",
        help="also this service with FASHION_WIDE_FILL=0 (every photo seen once, centred), as a rival",
    )
    parser.add_argument(
        "--one-threshold-rival",
        action="store_true",
        help="also this service with wide photos kept from the usual part threshold "
        "(FASHION_WIDE_PART_THRESHOLD = FASHION_PART_THRESHOLD), as a rival",
    )
    parser.add_argument("--out", type=Path, default=Path("reports/any_photo.json"))
    parser.add_argument("--figure", type=Path, default=None)
    parser.add_argument(
        "--choose", action="store_true", help="in-process, no catalogue: the model, part threshold and floor"
    )
    parser.add_argument("--candidate", type=Path, action="append", default=[], help="--choose: a model to try")
    parser.add_argument(
        "--wide-threshold",
        type=float,
        nargs="*",
        default=None,
        help=f"--choose: then the wide photos' own part threshold, among these (no values: {WIDE_THRESHOLDS})",
    )
    parser.add_argument(
        "--trim", type=float, action="append", default=None, help="--choose: a FASHION_TRIM_MAX_AREA to try (0: none)"
    )
    parser.add_argument(
        "--wide",
        action="append",
        default=None,
        help="--choose: FILL:ALIGNS, a FASHION_WIDE_FILL to try and where in the frame a wide photo is drawn "
        "(e.g. 0.6:0,1; 0 for none)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    if args.choose:
        if args.split != "validation":
            raise SystemExit("settings are chosen on validation: add --split validation")
        args.trim = args.trim or [0.0]
        args.wide = args.wide or ["0"]
        model, _ = load_checkpoint(args.candidate[0])
        searchable = {p.category for p in read_products(data_dir(args.data) / "fashion-product")}
        searchable &= set(model.config.labels)
        sets = query_sets(args, searchable)
        report = {"machine": f"{os.cpu_count()} cores, {platform.machine()}, no GPU"}
        wides = [
            (float(fill), tuple(float(a) for a in aligns.split(",")) if aligns else WIDE_ALIGNS)
            for fill, _, aligns in (w.partition(":") for w in args.wide)
        ]
        wide_thresholds = () if args.wide_threshold is None else (args.wide_threshold or WIDE_THRESHOLDS)
        report |= choose_settings(
            args.candidate, args.before_checkpoint, sets, searchable, args.trim, wides, wide_thresholds
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        for row in [report["before"], *report["rows"], *report["wide_rows"]]:
            full, products = row["ccp_reframed"]["full"], row["held_out_products"]
            print(
                f"{row.get('checkpoint', 'before')} trim {row.get('trim_max_area', 0)} "
                f"wide {row.get('wide_fill', 0)}:{row.get('wide_aligns', '')} {row['threshold']} "
                f"(wide {row['wide_threshold']}) "
                f"{row['floor']}: products empty "
                f"{products['empty_rate']:.3f} own {products['own_group_rate']:.3f}; CCP recall "
                f"{full['group_recall']:.3f} precision {full['part_precision']:.3f}; framings "
                + " ".join(f"{v:.2f}" for v in row["ccp_reframed_ratio_to_full"].values())
                + f"; halves F1 {row['halves_f1']:.3f}"
                + f"; non-fashion empty {row['non_fashion_empty_rate']:.2f}; shortfall {row.get('shortfall', 0):.3f}"
            )
        chosen = report["chosen"]
        print(
            f"chosen: {chosen['checkpoint']} trim {chosen['trim_max_area']} wide {chosen['wide_fill']}:"
            f"{chosen['wide_aligns']} threshold {chosen['threshold']} "
            f"floor {chosen['floor']} wide photos' threshold {chosen['wide_threshold']}"
        )
        return

    from indexer.bundle import BundleStore

    bundle = BundleStore(args.bundles).open()
    sets = query_sets(args, bundle.searchable_labels)
    colours = type_colours(bundle)
    env = dict(item.split("=", 1) for item in args.env)
    answers = serve_and_ask(ROOT, args.checkpoint, args.bundles, sets, env)
    report: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, no GPU",
        "split": args.split,
        "checkpoint": str(args.checkpoint),
        "bundle": bundle.version,
        "settings": env,
        **report_of(sets, answers, colours),
    }
    with_ratios(report)
    trim = float(env.get("FASHION_TRIM_MAX_AREA", DEFAULT_TRIM_MAX_AREA))
    report["cut_share"] = cut_share(sets, trim)
    config = load_checkpoint(args.checkpoint)[0].config
    size = (config.image_height, config.image_width)
    report["wide_share"] = wide_share(sets, size, trim, float(env.get("FASHION_WIDE_FILL", DEFAULT_WIDE_FILL)))
    if args.before_root is not None:
        before = serve_and_ask(
            args.before_root, args.before_root / args.before_checkpoint, args.before_bundles or args.bundles, sets, {}
        )
        report["rival_before"] = with_ratios(report_of(sets, before, colours))
    if args.no_trim_rival:  # this service with photos never cut to their content
        no_trim = serve_and_ask(ROOT, args.checkpoint, args.bundles, sets, {**env, "FASHION_TRIM_MAX_AREA": "0"})
        report["rival_no_trim"] = with_ratios(report_of(sets, no_trim, colours))
    if args.no_wide_rival:  # this service with every photo seen once, centred in the frame
        once = serve_and_ask(ROOT, args.checkpoint, args.bundles, sets, {**env, "FASHION_WIDE_FILL": "0"})
        report["rival_no_wide"] = with_ratios(report_of(sets, once, colours))
    if args.one_threshold_rival:  # this service with wide photos kept from the usual part threshold
        given = {**os.environ, **env}  # what the service reads (its .env aside)
        threshold = given.get("FASHION_PART_THRESHOLD", str(DEFAULT_PART_THRESHOLD))
        one_env = {**env, "FASHION_WIDE_PART_THRESHOLD": threshold}
        one = serve_and_ask(ROOT, args.checkpoint, args.bundles, sets, one_env)
        report["rival_one_threshold"] = with_ratios(report_of(sets, one, colours))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    rivals = ("rival_before", "rival_no_trim", "rival_no_wide", "rival_one_threshold")
    print(json.dumps({k: v for k, v in report.items() if k not in rivals}, indent=1)[:4000])
    if args.figure is not None:
        draw(sets, answers, bundle, args.figure)


def draw(sets: dict[str, list[Query]], answers: dict[str, list[dict[str, Any]]], bundle: Any, path: Path) -> None:
    """Six held-out product photos and six re-framed CCP photos, each with its part boxes and
    under it the product returned for each part (low-confidence parts marked '?')."""
    from model.visualize import PALETTE, draw_boxes, tile

    images_dir = Path(str(bundle.manifest["catalogue"]["source"])).parent / "images"
    picks = [("products", i) for i in range(0, 60, 10)] + [
        (framing, i) for framing, i in (("upper_half", 3), ("lower_half", 7), ("small_256", 12), ("zoomed_out", 20))
    ]
    picks += [("upper_half", 40), ("zoomed_out", 41)]
    panels = []
    for name, i in picks:
        query, answer = sets[name][i], answers[name][i]
        with Image.open(io.BytesIO(query.data)) as opened:
            photo = opened.convert("RGB")
        boxes = [
            (tuple(p["box"]), p["label"] + ("?" if p.get("confident") is False else ""))
            for p in answer["parts"]
            if p.get("box")
        ]
        panel = draw_boxes(photo, boxes, caption=f"{name} {query.name}", height=300)
        thumbs = Image.new("RGB", (panel.width, 80 * ((len(answer["parts"]) + 1) // 2 or 1)), "white")
        for j, part in enumerate(answer["parts"]):
            item = part.get("item")
            if item and (images_dir / f"{item['id']}.jpg").is_file():
                with Image.open(images_dir / f"{item['id']}.jpg") as product:
                    thumb = product.convert("RGB").resize((76, 76))
                x, y = (j % 2) * (panel.width // 2), (j // 2) * 80
                thumbs.paste(thumb, (x + 2, y + 2))
                ImageDraw.Draw(thumbs).rectangle((x, y, x + 79, y + 79), outline=PALETTE[j % len(PALETTE)], width=3)
        combined = Image.new("RGB", (panel.width, panel.height + thumbs.height), "white")
        combined.paste(panel, (0, 0))
        combined.paste(thumbs, (0, panel.height))
        panels.append(combined)
    rows = [tile(panels[k : k + 6]) for k in range(0, len(panels), 6)]
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows) + 8 * len(rows)), "white")
    y = 0
    for row in rows:
        sheet.paste(row, (0, y))
        y += row.height + 8
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


if __name__ == "__main__":
    main()
