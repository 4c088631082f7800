"""Evaluate checkpoints on the CCP test split: one JSON report and a readable table.

    python -m model.evaluate --checkpoint checkpoints/attention/best.pt \
        --checkpoint checkpoints/global/best.pt --out reports/ccp_eval.json --figure docs/attention.png

Reports AP_all and mAP over labels and coarse groups, and for attention models where attention
lands: for each labelled item of a test photo, the IoU of its part box with the item's box and
whether the box centre (the attention peak) falls inside the item's mask.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from model.checkpoint import load_checkpoint
from model.data import ClothingCoParsing, Sample, data_dir, label_vector, load_image
from model.features import trunk_features
from model.metrics import multilabel_report
from model.network import NetworkOutput, PartAttentionNetwork, select_parts, transform_to_box
from model.visualize import draw_boxes, tile

log = logging.getLogger("model.evaluate")


@dataclass
class TestPredictions:
    probabilities: np.ndarray  # (N, C)
    part_steps: np.ndarray | None  # (N, C) k* per label
    transforms: np.ndarray | None  # (N, K, 4)


@torch.inference_mode()
def predict(
    model: PartAttentionNetwork, samples: list[Sample], cache_dir: Path, device: str, frozen: bool
) -> TestPredictions:
    """Run the model on the test photos; a frozen-trunk model reuses the trunk-map cache."""
    maps = trunk_features(model, [s.image for s in samples], cache_dir, False, device=device)[:, 0] if frozen else None
    outputs: list[NetworkOutput] = []
    for i in range(0, len(samples), 32):
        if maps is not None:
            out = model.head_forward(maps[i : i + 32].to(device).float())
        else:
            size = (model.config.image_height, model.config.image_width)
            out = model(torch.stack([load_image(s.image, size) for s in samples[i : i + 32]]).to(device))
        outputs.append(out)
    probs = torch.cat([model.probabilities(o.scores).float().cpu() for o in outputs]).numpy()
    if outputs[0].step_scores is None:
        return TestPredictions(probs, None, None)
    steps = torch.cat([o.step_scores.argmax(1).cpu() for o in outputs]).numpy()  # type: ignore[union-attr]
    transforms = torch.cat([o.transforms.float().cpu() for o in outputs]).numpy()  # type: ignore[union-attr]
    return TestPredictions(probs, steps, transforms)


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def attention_hits(
    ccp: ClothingCoParsing, samples: list[Sample], pred: TestPredictions, labels: list[str]
) -> dict[str, object]:
    """Per labelled test item: IoU(part box, item box) and whether the box centre is inside the item."""
    assert pred.part_steps is not None and pred.transforms is not None
    label_ids = {name: ccp.all_labels.index(name) for name in labels}
    ious, peaks, whole_ious, centre_peaks = [], [], [], []
    for n, sample in enumerate(samples):
        assert sample.mask is not None
        mask = ccp.read_mask(sample.mask)
        height, width = mask.shape
        for name in sample.labels:
            item = mask == label_ids[name]
            ys, xs = np.nonzero(item)
            item_box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
            c = labels.index(name)
            box = transform_to_box(torch.from_numpy(pred.transforms[n, pred.part_steps[n, c]]), width, height)
            ious.append(_iou(box, item_box))
            cx, cy = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
            peaks.append(bool(item[min(cy, height - 1), min(cx, width - 1)]))
            whole_ious.append(_iou((0.0, 0.0, float(width), float(height)), item_box))
            centre_peaks.append(bool(item[height // 2, width // 2]))
    return {
        "items": len(ious),
        "mean_iou": float(np.mean(ious)),
        "iou_at_0.3": float(np.mean(np.array(ious) >= 0.3)),
        "iou_at_0.5": float(np.mean(np.array(ious) >= 0.5)),
        "peak_in_mask": float(np.mean(peaks)),
        "reference_whole_photo_box": {
            "mean_iou": float(np.mean(whole_ious)),
            "iou_at_0.5": float(np.mean(np.array(whole_ious) >= 0.5)),
        },
        "reference_photo_centre_in_mask": float(np.mean(centre_peaks)),
    }


def draw_parts(model: PartAttentionNetwork, samples: list[Sample], path: Path, parts_per_photo: int = 4) -> None:
    """A strip of test photos with the boxes and labels of their top parts."""

    size = (model.config.image_height, model.config.image_width)
    with torch.inference_mode():
        out = model(torch.stack([load_image(s.image, size) for s in samples]))
    panels = []
    for i, sample in enumerate(samples):
        with Image.open(sample.image) as photo:
            photo = photo.convert("RGB")
            parts = select_parts(model, out, i, photo.size, max_parts=parts_per_photo)
            truth = ", ".join(sample.labels)
            panels.append(draw_boxes(photo, [(p.box, f"{p.label} {p.score:.2f}") for p in parts], caption=truth))
    tile(panels).save(path)


def format_table(report: dict[str, dict[str, object]]) -> str:
    rows = [
        "model                 | labels AP_all | labels mAP | groups AP_all | groups mAP",
        "----------------------|---------------|------------|---------------|-----------",
    ]
    for name, r in report.items():
        lab, grp = r["labels"], r["groups"]  # type: ignore[index]
        rows.append(
            f"{name:<22}| {lab['ap_all']:13.2f} | {lab['map']:10.2f} | {grp['ap_all']:13.2f} | {grp['map']:10.2f}"
        )  # type: ignore[index]
    for name, r in report.items():
        hits = r.get("attention")
        if isinstance(hits, dict):
            ref = hits["reference_whole_photo_box"]
            rows.append(
                f"{name}: attention over {hits['items']} test items: mean IoU {hits['mean_iou']:.3f}, "
                f"IoU>=0.5 {hits['iou_at_0.5']:.1%}, peak in mask {hits['peak_in_mask']:.1%} "
                f"(whole-photo box: IoU>=0.5 {ref['iou_at_0.5']:.1%}; photo centre in mask "
                f"{hits['reference_photo_centre_in_mask']:.1%})"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, action="append", required=True)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("reports/ccp_eval.json"))
    parser.add_argument("--figure", type=Path, default=None, help="PNG of test photos with part boxes")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache/features"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    ccp = ClothingCoParsing(data_dir(args.data) / "ccp")
    _, test = ccp.split()
    report: dict[str, dict[str, object]] = {}
    for path in args.checkpoint:
        model, payload = load_checkpoint(path, args.device)
        labels = model.config.labels
        frozen = payload.get("training", {}).get("mode") == "frozen"
        pred = predict(model, test, args.cache_dir, args.device, frozen)
        targets = torch.stack([label_vector(s, labels) for s in test]).numpy()
        entry: dict[str, object] = multilabel_report(targets, pred.probabilities, labels)
        entry.update(
            checkpoint=str(path),
            architecture=model.config.architecture,
            trunk=model.config.trunk,
            classification=model.config.classification,
            training=payload.get("training"),
            test_photos=len(test),
        )
        if pred.part_steps is not None:
            entry["attention"] = attention_hits(ccp, test, pred, labels)
            if args.figure:
                args.figure.parent.mkdir(parents=True, exist_ok=True)
                draw_parts(model, test[:6], args.figure)
        report[f"{model.config.architecture}/{model.config.classification}/{path.parent.name}"] = entry
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(format_table(report))
    log.info("report written to %s", args.out)


if __name__ == "__main__":
    main()
