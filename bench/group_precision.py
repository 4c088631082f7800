"""Where a model's part precision goes, group by group, on the CCP validation photos (never on test):
for each checkpoint, the parts ``query_parts`` gives each photo at the service's threshold and floor
(the photo seen once, as shot), and how many are of a group the photo has.

    python bench/group_precision.py --checkpoint weights/ccp-attention.pt \
        --checkpoint <another model> --out reports/group_precision_validation.json

Each checkpoint is scored on its own training run's validation photos (the same 150 for models
that share the first stage's split).
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path
from typing import Any

import torch

from model.checkpoint import load_checkpoint
from model.data import ClothingCoParsing, data_dir, load_image
from model.labels import group_of
from model.network import query_parts


def group_precision(checkpoint: Path, ccp: ClothingCoParsing, batch_size: int = 16) -> dict[str, Any]:
    model, payload = load_checkpoint(checkpoint)
    model.eval()
    names = set(payload["validation_photos"])
    samples = [s for s in ccp.split()[0] if s.image.name in names]
    size = (model.config.image_height, model.config.image_width)
    emitted: collections.Counter[str] = collections.Counter()
    right: collections.Counter[str] = collections.Counter()
    with torch.inference_mode():
        for start in range(0, len(samples), batch_size):
            batch = samples[start : start + batch_size]
            out = model(torch.stack([load_image(s.image, size) for s in batch]))
            for row, sample in enumerate(batch):
                truth = {group_of(label) for label in sample.labels}
                for part in query_parts(model, out, row):
                    group = group_of(part.label)
                    emitted[group] += 1
                    right[group] += group in truth
    total = sum(emitted.values())
    return {
        "photos": len(samples),
        "parts": total,
        "precision": round(sum(right.values()) / max(total, 1), 4),
        "groups": {
            g: {"parts": emitted[g], "right": right[g], "precision": round(right[g] / emitted[g], 3)}
            for g in sorted(emitted, key=lambda g: -emitted[g])
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, action="append", required=True)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("reports/group_precision_validation.json"))
    args = parser.parse_args()
    ccp = ClothingCoParsing(data_dir(args.data) / "ccp")
    models = {str(c): group_precision(c, ccp) for c in args.checkpoint}
    args.out.write_text(json.dumps({"split": "validation", "models": models}, indent=2) + "\n")
    for name, scored in models.items():
        print(f"{name}: {scored['parts']} parts on {scored['photos']} photos, precision {scored['precision']:.3f}")
        for group, row in scored["groups"].items():
            print(f"  {group:12s} {row['parts']:4d} parts, {row['right']:4d} of a group the photo has")


if __name__ == "__main__":
    main()
