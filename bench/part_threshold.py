"""Choose how a photo's parts are picked, the part threshold and the parts per photo, on validation
(never on test).

    python bench/part_threshold.py --checkpoint weights/ccp-attention.pt --bundles bundles \
        --out reports/part_threshold_validation.json

Rules: "group", one part per item group ranked by the group's probability (what the service does,
model.network.query_parts); "label", one part per label ranked by the label's probability (the
service's rule before). The setting is picked by ``choose``. The validation photos are the
training run's own held-out ones (odd-numbered pixel-level CCP photos, with their masks); each
setting is scored as `indexer.evaluate` scores the test split.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
from pathlib import Path

from indexer.bundle import BundleStore
from indexer.evaluate import query_photos, run_queries, summarise, type_colours
from model.checkpoint import load_checkpoint
from model.data import ClothingCoParsing, data_dir
from model.evaluate import validation_split
from model.progress import configure_logging

TARGETS = {"precision_at_1": 0.8, "coverage": 0.6}  # the group P@1 and coverage


def choose(rows: list[dict]) -> dict:
    """The rule fixed before any test run: of the settings the service can serve (one part per
    group), the one that clears both targets by the widest margin (the larger of the two margins'
    minimum; where none clears both, the one that misses by least)."""
    return max(
        (r for r in rows if r["rule"] == "group"),
        key=lambda r: min(r["parts"]["groups"][k] - v for k, v in TARGETS.items()),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("weights/ccp-attention.pt"))
    parser.add_argument("--bundles", type=Path, default=Path("bundles"))
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--rules", default="group,label")
    parser.add_argument("--thresholds", default="0.05,0.2,0.3,0.4,0.5,0.6,0.7,0.8")
    parser.add_argument("--max-parts", default="3,4,5,6")
    parser.add_argument("--out", type=Path, default=Path("reports/part_threshold_validation.json"))
    args = parser.parse_args()
    configure_logging(logging.WARNING)

    model, payload = load_checkpoint(args.checkpoint)
    run = payload.get("training", {})
    bundle = BundleStore(args.bundles).open()
    ccp = ClothingCoParsing(data_dir(args.data) / "ccp")
    _, val = validation_split(ccp, run)
    colours = type_colours(bundle)
    photos = query_photos(model, ccp, val)
    rows = []
    print("| rule | threshold | max parts | group P@1 | group coverage | colour agreement | items / query |")
    print("|---|---|---|---|---|---|---|")
    for rule, threshold, max_parts in itertools.product(
        args.rules.split(","),
        [float(t) for t in args.thresholds.split(",")],
        [int(m) for m in args.max_parts.split(",")],
    ):
        parts = summarise(run_queries(model, bundle, photos, max_parts, threshold, 10, rule).parts, colours)
        groups, colour = parts["groups"], parts["colour"]  # type: ignore[index]
        rows.append({"rule": rule, "threshold": threshold, "max_parts": max_parts, "parts": parts})
        print(
            f"| {rule} | {threshold} | {max_parts} | {groups['precision_at_1']:.3f} | {groups['coverage']:.3f} | "  # type: ignore[index]
            f"{colour['agreement']:.3f} | {parts['distinct_items_per_query']:.2f} |",  # type: ignore[index]
            flush=True,
        )
    chosen = choose(rows)
    print(f"chosen: rule {chosen['rule']}, threshold {chosen['threshold']}, {chosen['max_parts']} parts at most")
    report = {"checkpoint": str(args.checkpoint), "validation_photos": len(val), "bundle": bundle.version}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report | {"targets": TARGETS, "chosen": chosen, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
