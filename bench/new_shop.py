"""A new shop's catalogue (issue 25): the bad category maps refused, and, behind a flag, how well the
product head places products of a photography it was not fitted on.

    python bench/new_shop.py --out reports/new_shop.json                        # the category maps only
    python bench/new_shop.py --product-head --checkpoint CKPT \
        --before weights/ccp-attention.pt --out reports/new_shop.json          # + the product head (heavy)

``category_map.bad_maps_tried``: every bad map of tests/indexer/bad_maps.py written to a file and fed
to the loader with the model's labels (indexer.category_map.load_category_map), each refusal's one
line recorded (the file's folder left out of it) and checked against the tests' expectation.

``product_head`` (``--product-head``): the group top-1 of the product head's category, where a
category's group is model.labels.group_of (``other`` its own group),
- ``held_out_group_top1``: on the product set's seeded held-out tenth (model.products.split_products),
  never trained on;
- ``ccp_crops_group_top1``: on item crops of the even-numbered (test) CCP pixel-level photos, as
  products of an unseen photography: one crop per item label of a photo whose mask gives it at
  least MIN_CROP_PIXELS (model.data) pixels, cut by the box of those pixels grown by CROP_MARGIN of its
  size on each side (clipped to the photo); the truth is the label's group.
``--before CKPT`` measures a second checkpoint (the committed head) the same way, beside it.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer.category_map import CategoryMapError, load_category_map  # noqa: E402
from model.checkpoint import load_checkpoint  # noqa: E402
from model.data import ClothingCoParsing, data_dir  # noqa: E402
from model.imaging import load_input  # noqa: E402
from model.labels import group_of  # noqa: E402
from model.network import PartAttentionNetwork  # noqa: E402
from model.products import read_products, split_products  # noqa: E402
from model.progress import configure_logging  # noqa: E402
from tests.indexer.bad_maps import BAD_MAPS  # noqa: E402  (the bad maps the tests feed the loader)

log = logging.getLogger("bench.new_shop")


def bad_maps_tried(labels: Sequence[str]) -> dict[str, Any]:
    """Each bad map fed to the loader: its kind, file and the line it was refused with."""
    tried = []
    with tempfile.TemporaryDirectory() as folder:
        for bad in BAD_MAPS:
            path = bad.write(Path(folder))
            try:
                load_category_map(path, labels)
            except CategoryMapError as exc:
                message = str(exc)
            else:
                raise SystemExit(f"the bad map {bad.kind!r} was accepted")
            if message != bad.expected(path):
                raise SystemExit(f"{bad.kind}: refused with {message!r}, the tests expect {bad.expected(path)!r}")
            tried.append({"kind": bad.kind, "file": bad.name, "message": message.replace(f"{folder}/", "")})
    return {"count": len(tried), "kinds": tried}


class _Photos(Dataset[tuple[int, torch.Tensor]]):
    """Product photos (paths, or encoded crops) as the model's input."""

    def __init__(self, sources: Sequence[Path | bytes], size: tuple[int, int]) -> None:
        self.sources, self.size = sources, size

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        return i, load_input(self.sources[i], self.size)[0]


@torch.inference_mode()
def head_categories(
    model: PartAttentionNetwork, sources: Sequence[Path | bytes], batch_size: int, workers: int
) -> list[str]:
    """The product head's category of each photo (the trunk and the head only)."""
    if model.product_head is None:
        raise SystemExit("the checkpoint has no product head (python -m model.products adds one)")
    size = (model.config.image_height, model.config.image_width)
    loader = DataLoader(_Photos(sources, size), batch_size=batch_size, num_workers=workers)
    found: list[str] = [""] * len(sources)
    for indices, images in loader:
        for i, category in zip(indices.tolist(), model.product_categories(images), strict=True):
            found[i] = category
    return found


def group_top1(truth: Sequence[str], predicted: Sequence[str]) -> float:
    return float(np.mean([group_of(t) == group_of(p) for t, p in zip(truth, predicted, strict=True)]))


def held_out_products(root: Path) -> tuple[list[Path], list[str]]:
    """The product set's held-out tenth: photos and categories (CCP labels, or ``other``)."""
    products = read_products(root)
    held = split_products(len(products))[2]
    return [products[i].image for i in sorted(held)], [products[i].category for i in sorted(held)]


def ccp_item_crops(ccp_root: Path) -> Iterator[tuple[bytes, str]]:
    """(PNG crop, item label) of every item of the even-numbered pixel-level photos
    (ClothingCoParsing.item_crops), encoded as a shop's upload would be."""
    ccp = ClothingCoParsing(ccp_root)
    for mask_path in sorted((ccp_root / "annotations" / "pixel-level").glob("*.mat")):
        if int(mask_path.stem) % 2:
            continue  # odd-numbered: training photos
        for crop, label in ccp.item_crops(mask_path):
            buffer = io.BytesIO()
            crop.save(buffer, "PNG")
            yield buffer.getvalue(), label


def product_head_figures(checkpoint: Path, root: Path, batch_size: int, workers: int) -> dict[str, Any]:
    model, _ = load_checkpoint(checkpoint)
    started = time.monotonic()
    images, truth = held_out_products(root / "fashion-product")
    held_out = group_top1(truth, head_categories(model, images, batch_size, workers))
    crops = list(ccp_item_crops(root / "ccp"))
    predicted = head_categories(model, [c for c, _ in crops], batch_size, workers)
    labels = [label for _, label in crops]
    by_group: dict[str, list[bool]] = {}
    for label, guess in zip(labels, predicted, strict=True):
        by_group.setdefault(group_of(label), []).append(group_of(label) == group_of(guess))
    return {
        "checkpoint": str(checkpoint),
        "held_out_group_top1": round(held_out, 4),
        "held_out_products": len(images),
        "ccp_crops_group_top1": round(group_top1(labels, predicted), 4),
        "ccp_crops": len(crops),
        "ccp_crops_by_group": {g: round(float(np.mean(v)), 4) for g, v in sorted(by_group.items())},
        "seconds": round(time.monotonic() - started, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("weights/ccp-attention.pt"))
    parser.add_argument("--before", type=Path, default=None, help="a second checkpoint measured beside it")
    parser.add_argument("--product-head", action="store_true", help="measure the product head too (heavy)")
    parser.add_argument("--data", type=Path, default=None, help="data root (default $FASHION_DATA_DIR)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("reports/new_shop.json"))
    args = parser.parse_args(argv)
    configure_logging()
    model, _ = load_checkpoint(args.checkpoint)
    report: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"arch": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "command": " ".join(["python bench/new_shop.py", *(argv if argv is not None else sys.argv[1:])]),
        "category_map": {"labels_of": str(args.checkpoint), "bad_maps_tried": bad_maps_tried(model.config.labels)},
    }
    if args.product_head:
        root = data_dir(args.data)
        report["product_head"] = product_head_figures(args.checkpoint, root, args.batch_size, args.workers)
        if args.before is not None:
            report["product_head"]["before"] = product_head_figures(args.before, root, args.batch_size, args.workers)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    tried = report["category_map"]["bad_maps_tried"]
    log.info("%d bad maps refused, each in one line; wrote %s", tried["count"], args.out)


if __name__ == "__main__":
    main()
