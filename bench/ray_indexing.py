"""Indexing on Ray Data beside the single-process indexer, in one run, on the same catalogue.

    python bench/ray_indexing.py --out reports/ray_indexing.json   # the whole product set

Both engines build a bundle of the catalogue with the same options (the photos are read once
before, so neither gets a colder disk); Ray runs as a local instance of ``--ray-cpus`` CPUs,
started before the clock (a cluster is there before a job is sent to it; its start is reported
apart). Reports items/s of the embedding stage and the whole build for both, their ratio, and
whether the bundles hold the same thing: the same item ids in every part index and the global
one, under the same keys, the vectors equal within float tolerance.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer.build import IndexOptions, build_bundle  # noqa: E402
from indexer.bundle import Bundle, BundleStore  # noqa: E402
from indexer.catalogue import Catalogue, load_catalogue  # noqa: E402
from indexer.ray_embed import RayOptions  # noqa: E402
from model.data import data_dir  # noqa: E402


def contents(bundle: Bundle) -> dict[str, dict[str, tuple[int, np.ndarray]]]:
    """label ("" for the global index) -> item id -> (key, vector)."""
    out = {}
    for label, index in {**bundle.part_indexes, "": bundle.global_index}.items():
        keys = faiss.vector_to_array(index.id_map)
        out[label] = {bundle.items[int(k)].id: (int(k), index.reconstruct(int(k))) for k in keys}
    return out


def compare(a: Bundle, b: Bundle) -> dict[str, object]:
    ca, cb = contents(a), contents(b)
    same_ids = set(ca) == set(cb) and all(ca[label].keys() == cb[label].keys() for label in ca)
    same_keys = same_ids and all(ca[label][i][0] == cb[label][i][0] for label in ca for i in ca[label])
    diff = max(
        (
            float(np.abs(ca[label][i][1] - cb[label][i][1]).max())
            for label in ca
            for i in ca[label]
            if i in cb.get(label, {})
        ),
        default=0.0,
    )
    return {
        "labels": len(ca) - 1,
        "same_ids_per_label": same_ids,
        "same_keys": same_keys,
        "max_abs_vector_difference": diff,
        "same_skipped": a.manifest["skipped"] == b.manifest["skipped"],
    }


def build(catalogue: Catalogue, root: Path, options: IndexOptions, checkpoint: Path) -> tuple[Bundle, dict[str, float]]:
    store = BundleStore(root)
    started = time.perf_counter()
    build_bundle(store, checkpoint, catalogue, options)
    wall = time.perf_counter() - started
    bundle = store.open()
    count = len(catalogue.items)
    figures = {
        "items": count,
        "embed_s": bundle.manifest["timings"]["embed_s"],
        "embed_items_per_s": round(count / bundle.manifest["timings"]["embed_s"], 2),
        "build_s": round(wall, 1),
        "build_items_per_s": round(count / wall, 2),
    }
    print(options.engine, figures, flush=True)
    return bundle, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("weights/ccp-attention.pt"))
    parser.add_argument("--catalogue", type=Path, default=None, help="default: the product set of FASHION_DATA_DIR")
    parser.add_argument("--limit", type=int, default=0, help="the first N items only (0: all)")
    parser.add_argument("--ray-cpus", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--actor-cpus", type=float, default=RayOptions.actor_cpus)
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the model actor")
    parser.add_argument("--out", type=Path, default=Path("reports/ray_indexing.json"))
    args = parser.parse_args()

    import ray

    catalogue = load_catalogue(args.catalogue or data_dir() / "fashion-product")
    if args.limit:
        catalogue = Catalogue(catalogue.items[: args.limit], [], catalogue.source, catalogue.root, catalogue.metadata)
    for item in catalogue.items:  # the page cache holds every photo before either engine reads it
        item.path.read_bytes()
    local = IndexOptions()
    distributed = IndexOptions(engine="ray", ray=RayOptions(actor_cpus=args.actor_cpus, torch_threads=args.threads))
    with tempfile.TemporaryDirectory() as work:
        local_bundle, local_figures = build(catalogue, Path(work) / "local", local, args.checkpoint)
        started = time.perf_counter()
        ray.init(num_cpus=args.ray_cpus, include_dashboard=False, logging_level="WARNING")
        ray_start_s = round(time.perf_counter() - started, 1)
        try:
            ray_bundle, ray_figures = build(catalogue, Path(work) / "ray", distributed, args.checkpoint)
        finally:
            ray.shutdown()
        same = compare(local_bundle, ray_bundle)
    report = {
        "catalogue": str(catalogue.root),
        "items": len(catalogue.items),
        "single_process": {**local_figures, "workers": local.workers, "batch_size": local.batch_size},
        "ray": {
            **ray_figures,
            "ray_cpus": args.ray_cpus,
            "actor_cpus": args.actor_cpus,
            "torch_threads": args.threads or "node CPUs",
            "ray_start_s": ray_start_s,
        },
        "ratio_embed_items_per_s": round(ray_figures["embed_items_per_s"] / local_figures["embed_items_per_s"], 3),
        "ratio_build_items_per_s": round(ray_figures["build_items_per_s"] / local_figures["build_items_per_s"], 3),
        "bundles": same,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "ray_version": ray.__version__,
    }
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
