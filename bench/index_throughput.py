"""Indexing throughput against the model's own batched forward, measured in the same run.

    python bench/index_throughput.py --checkpoint checkpoints/attention/best.pt \
        --catalogue $FASHION_DATA_DIR/fashion-product --bundles bundles

1. the model alone: batched forwards over already-decoded tensors (its upper limit);
2. the indexer end to end on the whole catalogue (decode workers + model + FAISS + write), which
   publishes the bundle. Reports items/s of both, their ratio, and peak memory.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer.build import IndexOptions, build_bundle  # noqa: E402
from indexer.bundle import BundleStore  # noqa: E402
from indexer.catalogue import load_catalogue  # noqa: E402
from model.checkpoint import load_checkpoint  # noqa: E402
from model.imaging import load_input  # noqa: E402


def model_throughput(checkpoint: Path, paths: list[Path], batch_size: int) -> float:
    model, _ = load_checkpoint(checkpoint)
    size = (model.config.image_height, model.config.image_width)
    tensors = torch.stack([load_input(p, size)[0] for p in paths])
    with torch.inference_mode():
        model(tensors[:batch_size])  # warm-up
        started = time.perf_counter()
        for i in range(0, len(tensors), batch_size):
            model(tensors[i : i + batch_size])
        return len(tensors) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--catalogue", type=Path, required=True)
    parser.add_argument("--bundles", type=Path, default=Path("bundles"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sample", type=int, default=256, help="photos for the model-alone figure")
    parser.add_argument("--out", type=Path, default=Path("reports/bench_index.json"))
    args = parser.parse_args()

    catalogue = load_catalogue(args.catalogue)
    alone = model_throughput(args.checkpoint, [i.path for i in catalogue.items[: args.sample]], args.batch_size)
    print(f"model alone: {alone:.1f} items/s (batch {args.batch_size}, {args.sample} decoded photos)", flush=True)

    store = BundleStore(args.bundles)
    started = time.perf_counter()
    version = build_bundle(
        store, args.checkpoint, catalogue, IndexOptions(batch_size=args.batch_size, workers=args.workers)
    )
    total_s = time.perf_counter() - started
    manifest = store.open(version).manifest
    embed_rate = len(catalogue.items) / manifest["timings"]["embed_s"]
    peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, {platform.platform()}",
        "items": len(catalogue.items),
        "model_alone_items_per_s": round(alone, 2),
        "indexer_embed_items_per_s": round(embed_rate, 2),
        "ratio": round(embed_rate / alone, 3),
        "indexer_total_s": round(total_s, 1),
        "timings": manifest["timings"],
        "part_vectors": sum(manifest["index"]["counts"].values()),
        "peak_rss_mb": {"indexer_process": round(peak_self), "largest_decode_worker": round(peak_children)},
        "bundle": version,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
