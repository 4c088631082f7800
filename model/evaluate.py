"""Evaluate checkpoints on the CCP test split: one JSON report and a readable table.

    python -m model.evaluate --checkpoint checkpoints/attention/best.pt \
        --checkpoint checkpoints/global/best.pt --out reports/ccp_eval.json --figure docs/attention.png

Reports AP_all and mAP over labels and coarse groups, and for attention models:
- where attention lands: for each labelled item of a test photo, the IoU of its part box (mapped
  through the same letterbox placement as serving) with the item's box and whether the box centre
  falls inside the item's mask, beside the fixed per-label prior box (each label's median box over
  the training split's item boxes, placed on every photo) and the whole photo;
- how distinct the parts are: distinct crops among a photo's top-5 parts;
- codeword usage of the texture encoding on the test maps.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from model.checkpoint import load_checkpoint
from model.data import (
    Box,
    ClothingCoParsing,
    Sample,
    data_dir,
    label_vector,
    load_image,
)
from model.encoding import codeword_usage
from model.errors import run_command
from model.features import trunk_features
from model.imaging import letterbox_placement
from model.metrics import multilabel_report
from model.network import PartAttentionNetwork, part_box, select_parts
from model.progress import configure_logging
from model.train import TrainConfig
from model.visualize import draw_boxes, tile

log = logging.getLogger("model.evaluate")

TOP_PARTS = 5  # parts per query, as served by default
USED_CODEWORD_SHARE = 0.01  # a codeword is in use when it is the strongest assignment of >= 1% of cells


@dataclass
class TestPredictions:
    probabilities: np.ndarray  # (N, C)
    crop_probabilities: np.ndarray | None  # (N, C) the crops' own (max over k), where scores are fused
    part_steps: np.ndarray | None  # (N, C) k* per label
    transforms: np.ndarray | None  # (N, K, 4)
    codeword_usage: np.ndarray | None  # (codewords,) share of test-map cells each codeword takes


@torch.inference_mode()
def predict(
    model: PartAttentionNetwork, samples: list[Sample], cache_dir: Path, device: str, frozen: bool
) -> TestPredictions:
    """Run the model on the test photos; a frozen-trunk model reuses the trunk-map cache."""
    size = (model.config.image_height, model.config.image_width)
    cached = trunk_features(model, [s.image for s in samples], cache_dir, False, device=device) if frozen else None
    probs, crop_probs, steps, transforms, usage = [], [], [], [], []
    for i in range(0, len(samples), 32):
        if cached is not None:
            maps = [level[i : i + 32, 0].to(device).float() for level in cached]
        else:
            maps = model.trunk_forward(torch.stack([load_image(s.image, size) for s in samples[i : i + 32]]).to(device))
        features = model.features(maps)
        out = model.head(features)
        probs.append(model.probabilities(out.scores).float().cpu())
        if out.whole_scores is not None and out.crop_scores is not None:
            crop_probs.append(model.probabilities(out.crop_scores).float().cpu())
        if out.step_scores is not None and out.transforms is not None:
            steps.append(out.step_scores.argmax(1).cpu())
            transforms.append(out.transforms.float().cpu())
            usage.append(codeword_usage(model.attention.encoding, features) * features.shape[0])
    crops_only = torch.cat(crop_probs).numpy() if crop_probs else None
    if not steps:
        return TestPredictions(torch.cat(probs).numpy(), crops_only, None, None, None)
    return TestPredictions(
        torch.cat(probs).numpy(),
        crops_only,
        torch.cat(steps).numpy(),
        torch.cat(transforms).numpy(),
        np.sum(usage, 0) / len(samples),
    )


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def prior_boxes(train: list[Sample]) -> dict[str, Box]:
    """The fixed per-label prior: each label's median item box over the training photos that have
    item boxes, as fractions of the photo's width and height."""
    fractions: dict[str, list[Box]] = {}
    for sample in train:
        if not sample.boxes:
            continue
        with Image.open(sample.image) as photo:
            width, height = photo.size
        for name, (x0, y0, x1, y1) in sample.boxes.items():
            fractions.setdefault(name, []).append((x0 / width, y0 / height, x1 / width, y1 / height))
    return {name: tuple(np.median(np.array(boxes), 0).tolist()) for name, boxes in fractions.items()}  # type: ignore[misc]


BoxFor = Callable[[int, str, int, int], Box]  # (photo index, label, width, height) -> box in photo pixels


def hit_rates(ccp: ClothingCoParsing, samples: list[Sample], box_for: BoxFor) -> dict[str, float]:
    """Per labelled test item: IoU of ``box_for``'s box with the item's box, and whether the box
    centre falls inside the item's mask."""
    ious, centres = [], []
    for n, sample in enumerate(samples):
        if sample.mask is None:
            raise ValueError(f"test photo {sample.image} has no mask")
        mask = ccp.read_mask(sample.mask)
        height, width = mask.shape
        for name in sample.labels:
            box = box_for(n, name, width, height)
            ious.append(iou(box, sample.boxes[name]))
            cx, cy = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
            centres.append(bool(ccp.item_mask(mask, name)[min(cy, height - 1), min(cx, width - 1)]))
    scores = np.array(ious)
    return {
        "items": len(ious),
        "mean_iou": float(scores.mean()),
        "iou_at_0.3": float((scores >= 0.3).mean()),
        "iou_at_0.5": float((scores >= 0.5).mean()),
        "centre_in_mask": float(np.mean(centres)),
    }


def attention_report(
    ccp: ClothingCoParsing,
    test: list[Sample],
    pred: TestPredictions,
    model: PartAttentionNetwork,
    prior: dict[str, Box],
) -> dict[str, object]:
    """Where the parts land beside the prior box and the whole photo; distinct crops; codewords."""
    steps, transforms, usage = pred.part_steps, pred.transforms, pred.codeword_usage
    if steps is None or transforms is None or usage is None:
        raise ValueError("attention_report needs an attention model's predictions")
    labels = model.config.labels
    size = (model.config.image_height, model.config.image_width)

    def part(n: int, name: str, width: int, height: int) -> Box:
        placement = letterbox_placement(width, height, size)[0]
        return part_box(torch.from_numpy(transforms[n, int(steps[n, labels.index(name)])]), placement)

    def prior_box(n: int, name: str, width: int, height: int) -> Box:
        fx0, fy0, fx1, fy1 = prior.get(name, (0.0, 0.0, 1.0, 1.0))
        return (fx0 * width, fy0 * height, fx1 * width, fy1 * height)

    top = np.argsort(-pred.probabilities, 1)[:, :TOP_PARTS]
    distinct = [len(set(steps[n, top[n]].tolist())) for n in range(len(test))]
    return {
        "parts": hit_rates(ccp, test, part),
        "prior_box": hit_rates(ccp, test, prior_box),
        "whole_photo": hit_rates(ccp, test, lambda n, name, w, h: (0.0, 0.0, float(w), float(h))),
        "distinct_crops_in_top5": float(np.mean(distinct)),
        "codewords_used": int((usage >= USED_CODEWORD_SHARE).sum()),
        "codewords": int(len(usage)),
        "codeword_usage": [round(float(u), 4) for u in usage],
    }


def draw_parts(model: PartAttentionNetwork, samples: list[Sample], path: Path, parts_per_photo: int = 4) -> None:
    """A strip of test photos with the boxes and labels of their top parts."""
    size = (model.config.image_height, model.config.image_width)
    with torch.inference_mode():
        out = model(torch.stack([load_image(s.image, size) for s in samples]))
    panels = []
    for i, sample in enumerate(samples):
        with Image.open(sample.image) as opened:
            photo = opened.convert("RGB")
            placement = letterbox_placement(photo.width, photo.height, size)[0]
            parts = select_parts(model, out, i, placement, max_parts=parts_per_photo)
            boxes = [(p.box, f"{p.label} {p.score:.2f}") for p in parts if p.box is not None]
            panels.append(draw_boxes(photo, boxes, caption=", ".join(sample.labels)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tile(panels).save(path)


def format_table(report: dict[str, dict[str, object]]) -> str:
    rows = [
        "model                     | labels AP_all | labels mAP | groups AP_all | groups mAP",
        "--------------------------|---------------|------------|---------------|-----------",
    ]
    for name, r in report.items():
        for suffix, scored in (("", r), (" (crops only)", r.get("crops_only"))):
            if not isinstance(scored, dict):
                continue
            lab, grp, row = scored["labels"], scored["groups"], name + suffix
            rows.append(
                f"{row:<26}| {lab['ap_all']:13.2f} | {lab['map']:10.2f} | {grp['ap_all']:13.2f} | {grp['map']:10.2f}"
            )
    for name, r in report.items():
        att = r.get("attention")
        if not isinstance(att, dict):
            continue
        rows.append(f"\n{name}: where the part box of each labelled test item lands ({att['parts']['items']} items)")
        rows.append("box          | mean IoU | IoU>=0.5 | centre in mask")
        for key in ("parts", "prior_box", "whole_photo"):
            h = att[key]
            rows.append(f"{key:<13}| {h['mean_iou']:8.3f} | {h['iou_at_0.5']:8.1%} | {h['centre_in_mask']:14.1%}")
        rows.append(
            f"distinct crops among the top-{TOP_PARTS} parts: {att['distinct_crops_in_top5']:.2f}; "
            f"codewords taking >= 1% of test-map cells: {att['codewords_used']}/{att['codewords']}"
        )
    return "\n".join(rows)


def evaluate_checkpoint(
    path: Path, ccp: ClothingCoParsing, train: list[Sample], test: list[Sample], args: argparse.Namespace
) -> dict[str, object]:
    model, payload = load_checkpoint(path, args.device)
    labels = model.config.labels
    frozen = payload.get("training", {}).get("mode") == "frozen"
    pred = predict(model, test, args.cache_dir, args.device, frozen)
    targets = torch.stack([label_vector(s, labels) for s in test]).numpy()
    entry: dict[str, object] = multilabel_report(targets, pred.probabilities, labels, model.config.classification)
    entry.update(
        checkpoint=str(path),
        config=model.config.to_dict() | {"labels": len(labels)},
        training=payload.get("training"),
        validation=payload.get("metrics", {}).get("validation"),
        test_photos=len(test),
    )
    if pred.crop_probabilities is not None:  # the crops' own classification, without the whole map's
        crops = multilabel_report(targets, pred.crop_probabilities, labels, model.config.classification)
        entry["crops_only"] = {"labels": crops["labels"], "groups": crops["groups"]}
    if pred.part_steps is not None:
        entry["attention"] = attention_report(ccp, test, pred, model, prior_boxes(train))
        if args.figure and path == args.checkpoint[0]:  # the picture shows the first checkpoint's parts
            draw_parts(model, test[:6], args.figure)
    return entry


def validation_split(ccp: ClothingCoParsing, run: dict[str, Any]) -> tuple[list[Sample], list[Sample]]:
    """(fit, validation) exactly as the training run ``run`` (a checkpoint's "training") split them,
    the validation photos with their masks."""
    return ccp.validation_split(float(run.get("val_fraction", TrainConfig.val_fraction)), int(run.get("seed", 0)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, action="append", required=True)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("reports/ccp_eval.json"))
    parser.add_argument("--figure", type=Path, default=None, help="PNG: test photos, the first checkpoint's parts")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache/features"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--split",
        choices=["test", "validation"],
        default="test",
        help="validation: the training run's own held-out photos (choose there; report on test once)",
    )
    args = parser.parse_args(argv)
    configure_logging()

    ccp = ClothingCoParsing(data_dir(args.data) / "ccp")
    train, test = ccp.split()
    if args.split == "validation":  # the split of the first checkpoint's training run
        train, test = validation_split(ccp, load_checkpoint(args.checkpoint[0])[1].get("training", {}))
    report = {
        f"{path.parent.name}/{path.stem}": evaluate_checkpoint(path, ccp, train, test, args) for path in args.checkpoint
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(format_table(report))
    log.info("report written to %s", args.out)


if __name__ == "__main__":
    sys.exit(run_command(main))
