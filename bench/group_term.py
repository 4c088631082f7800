"""The group presence term, judged on validation over several training seeds (never on test).

For each checkpoint: its validation label / group mAP (as its training recorded them) and the parts
a shopper's photo would get, without the catalogue: the photo's item groups ranked by probability,
those at or above a threshold kept, at most some parts (the service's rule, model.network.query_parts),
scored against the photo's true groups (precision of the kept groups, share of true groups kept).
With the shop's metadata every part's product is of the part's own group, so these are what
indexer.evaluate's group P@1 and coverage measure, less the groups the catalogue cannot answer.

    python bench/group_term.py --checkpoint checkpoints/attention-no-group/best.pt ... \
        --out reports/group_term_validation.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from model.checkpoint import load_checkpoint
from model.data import ClothingCoParsing, data_dir
from model.evaluate import predict, validation_split
from model.labels import group_names, group_of, group_probabilities

SETTINGS = ((0.4, 4), (0.5, 5), (0.6, 6))  # (group threshold, parts at most): the service had 0.4 / 4, now 0.6 / 6


def parts_scores(probabilities: np.ndarray, true_groups: list[set[str]], names: list[str]) -> dict[str, dict]:
    out = {}
    for threshold, most in SETTINGS:
        precision, coverage = [], []
        for row, truth in zip(probabilities, true_groups, strict=True):
            kept = [names[g] for g in np.argsort(-row) if row[g] >= threshold][:most]
            right = [g for g in kept if g in truth]
            precision.append(len(right) / len(kept) if kept else 0.0)
            coverage.append(len(right) / len(truth) if truth else 0.0)
        out[f"{threshold}/{most}"] = {"precision_at_1": float(np.mean(precision)), "coverage": float(np.mean(coverage))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, action="append", required=True)
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache/features"))
    parser.add_argument("--out", type=Path, default=Path("reports/group_term_validation.json"))
    args = parser.parse_args()
    ccp = ClothingCoParsing(data_dir(None) / "ccp")
    rows = []
    for path in args.checkpoint:
        model, payload = load_checkpoint(path)
        run = payload.get("training", {})
        _, val = validation_split(ccp, run)
        pred = predict(model, val, args.cache_dir, "cpu", run.get("mode") == "frozen")
        labels = model.config.labels
        groups = group_probabilities(pred.probabilities, labels, model.config.classification)
        best = max(payload["history"], key=lambda h: h["val_map"])
        rows.append(
            {
                "checkpoint": str(path),
                "group_weight": float(run.get("group_weight", 0.0)),
                "init_seed": int(run.get("init_seed", -1)),
                "epoch": best["epoch"],
                "labels_map": best["val_map"],
                "groups_map": best["val_group_map"],
                "parts": parts_scores(groups, [{group_of(x) for x in s.labels} for s in val], group_names(labels)),
            }
        )
        r = rows[-1]
        parts = " ".join(f"{k}: {v['precision_at_1']:.3f}/{v['coverage']:.3f}" for k, v in r["parts"].items())
        print(f"{path}: labels {r['labels_map']:.2f} groups {r['groups_map']:.2f}; parts P@1/coverage {parts}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"split": "validation", "photos": len(val), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
