"""The dry run of a catalogue's categories: where each category value's products would go, before
anything is indexed.

    python -m indexer categories --catalogue my_shop/ --labels-from category --map categories.csv

For each value of the field: how many products carry it, who decides their part index (the shop's
map, the built-in names, or the model; indexer.category_map) and which. For a value left to the
model, a sample of its products (``sample`` per value, spread over them) goes through the model's
product head alone (the trunk and one linear layer, not the attention) and the report gives the
share of them it files under each item group: what the shop would get without a map entry.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch.utils.data import DataLoader

from indexer.build import first_slice
from indexer.catalogue import Catalogue, CatalogueItem
from indexer.category_map import CategoryMap, Route, destination
from indexer.embed import SMALL_JOB, _collate, _Decoded
from model.imaging import DEFAULT_LIMITS, ImageLimits
from model.labels import group_of
from model.network import DEFAULT_ITEM_LABEL_THRESHOLD, PartAttentionNetwork, select_parts

log = logging.getLogger(__name__)

DEFAULT_SAMPLE = 50  # products per value the model places in a dry run
NO_PART = "none"  # the model's placement when a product joins no part index (the head's "other")
MISSING = "(no field)"  # the value shown for products whose metadata lacks the field
EMPTY = "(empty)"  # ... and for products whose field is empty


@dataclass
class CategoryRow:
    value: str  # the category value as written (MISSING, EMPTY for products without one)
    items: int
    route: Route  # who decides: the shop's map, the built-in names, or the model
    label: str | None = None  # the part index it joins (map, built-in); None: none, or the model decides
    group: str | None = None  # that label's item group
    placed: dict[str, float] = field(default_factory=dict)  # model: group -> share of the sampled products
    sampled: int = 0  # model: products placed (readable ones of the sample)
    unreadable: int = 0  # model: sampled products whose photo could not be read


@dataclass
class CategoryReport:
    catalogue: str
    field: str
    items: int
    category_map: str | None  # the map's file
    checkpoint: str
    placed_by: str  # how the model places a product: its product head, or its predicted labels
    rows: list[CategoryRow]
    unused: list[str]  # map categories no product carries (a typo, or a category not stocked yet)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)


def category_report(
    catalogue: Catalogue,
    field_name: str,
    model: PartAttentionNetwork,
    checkpoint: str,
    category_map: CategoryMap | None = None,
    *,
    sample: int = DEFAULT_SAMPLE,
    batch_size: int = 32,
    workers: int = 2,
    device: str = "cpu",
    limits: ImageLimits = DEFAULT_LIMITS,
) -> CategoryReport:
    """Where each value of ``field_name`` sends its products, the model's placement measured on up
    to ``sample`` products of each value it would place (0: not measured)."""
    labels = set(model.config.labels)
    by_value: dict[str, list[CatalogueItem]] = defaultdict(list)
    for item in catalogue.items:
        value = item.metadata.get(field_name)
        by_value[MISSING if value is None else (str(value).strip() or EMPTY)].append(item)
    rows = []
    for value, items in by_value.items():
        where = destination("" if value in (MISSING, EMPTY) else value, labels, category_map)
        label = where.label
        rows.append(CategoryRow(value, len(items), where.route, label, group_of(label) if label else None))
    rows.sort(key=lambda r: (-r.items, r.value))
    to_place = {r.value: first_slice(by_value[r.value], sample) for r in rows if r.route == "model" and sample > 0}
    placements = _place(model, [i for items in to_place.values() for i in items], batch_size, workers, device, limits)
    for row in rows:
        if row.value in to_place:
            groups: Counter[str] = Counter()
            for item in to_place[row.value]:
                placed = placements.get(item.id)
                if placed is None:
                    row.unreadable += 1
                    continue
                row.sampled += 1
                groups.update(placed)
            row.placed = {g: round(n / row.sampled, 3) for g, n in groups.most_common()} if row.sampled else {}
    seen = set(by_value)
    unused = sorted(c for c in category_map.entries if c not in seen) if category_map else []
    return CategoryReport(
        catalogue=catalogue.source,
        field=field_name,
        items=len(catalogue.items),
        category_map=category_map.source if category_map else None,
        checkpoint=checkpoint,
        placed_by="product head" if model.product_head is not None else "predicted labels",
        rows=rows,
        unused=unused,
    )


@torch.inference_mode()
def _place(
    model: PartAttentionNetwork,
    items: Sequence[CatalogueItem],
    batch_size: int,
    workers: int,
    device: str,
    limits: ImageLimits,
) -> dict[str, set[str]]:
    """Each readable item's groups as the model would place it (an unreadable one is absent). With
    a product head, only the trunk runs: the head reads its pooled last map."""
    if not items:
        return {}
    size = (model.config.image_height, model.config.image_width)
    workers = workers if len(items) >= SMALL_JOB else 0
    loader = DataLoader(
        _Decoded(items, size, limits),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
        multiprocessing_context="forkserver" if workers > 0 else None,
    )
    model.eval().to(device)
    placed: dict[str, set[str]] = {}
    for indices, images, _ in loader:
        if images is None:
            continue
        images = images.to(device)
        groups = _head_groups(model, images) if model.product_head is not None else _label_groups(model, images)
        for i, found in zip(indices, groups, strict=True):
            placed[items[i].id] = found
    log.info("the model placed %d of %d sampled products", len(placed), len(items))
    return placed


def _head_groups(model: PartAttentionNetwork, images: torch.Tensor) -> list[set[str]]:
    """The product head's category of each photo, as its group (NO_PART: a category with no label)."""
    labels = [model.config.part_label_of(c) for c in model.product_categories(images)]
    return [{group_of(label)} if label is not None else {NO_PART} for label in labels]


def _label_groups(model: PartAttentionNetwork, images: torch.Tensor, max_parts: int = 3) -> list[set[str]]:
    """Without a product head: the groups of the labels predicted above the indexer's threshold."""
    out = model(images)
    found = []
    for row in range(images.shape[0]):
        parts = select_parts(model, out, row, None, DEFAULT_ITEM_LABEL_THRESHOLD, max_parts)
        found.append({group_of(p.label) for p in parts} or {NO_PART})
    return found


def format_report(report: CategoryReport) -> str:
    """The report as the dry run prints it: one line per category value."""
    mapped = f", map {report.category_map}" if report.category_map else ", no map (built-in names only)"
    lines = [
        f"{report.catalogue}: {report.items} products by {report.field!r}{mapped}",
        f"model {report.checkpoint} (places a product by its {report.placed_by})",
        "",
    ]
    width = max([len(r.value) for r in report.rows] + [len("category")])
    lines.append(f"{'category':<{width}}  {'items':>5}  {'goes to':<28}  the model's placement (sampled)")
    for row in report.rows:
        if row.route == "model":
            goes = "model"
        else:
            goes = f"{row.route} → {row.label} ({row.group})" if row.label else f"{row.route} → none"
        placed = ""
        if row.route == "model":
            shares = " · ".join(f"{g} {share:.0%}" for g, share in row.placed.items())
            unreadable = f", {row.unreadable} unreadable" if row.unreadable else ""
            placed = f"{shares} ({row.sampled} of {row.items}{unreadable})" if row.sampled else "not measured"
        lines.append(f"{row.value:<{width}}  {row.items:>5}  {goes:<28}  {placed}".rstrip())
    counts: Counter[str] = Counter()
    for row in report.rows:
        counts[row.route] += row.items
    deciders = {"map": "the map", "built-in": "the built-in names", "model": "the model"}
    lines += ["", "products placed by " + ", ".join(f"{who}: {counts[r]}" for r, who in deciders.items() if counts[r])]
    if report.unused:
        lines.append(f"map categories no product carries: {', '.join(report.unused)}")
    return "\n".join(lines)
