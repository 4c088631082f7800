"""Offline indexer: catalogue -> versioned bundle of per-part FAISS indexes.

    python -m indexer build --catalogue ../shared/data/fashion-product \
        --checkpoint checkpoints/attention/best.pt --bundles bundles
    python -m indexer build --engine ray [--ray-address auto] --catalogue ... --checkpoint ...
    python -m indexer build --catalogue my_shop/ --labels-from category --map categories.csv ...
    python -m indexer categories --catalogue my_shop/ --labels-from category [--map categories.csv]
    python -m indexer add --catalogue new_items/ --checkpoint ... --bundles bundles
    python -m indexer delete --ids 10000,10001 --bundles bundles
    python -m indexer list --bundles bundles
    python -m indexer rollback --version 20261127T... --bundles bundles
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from indexer.build import INDEX_ENGINES, IndexOptions, add_items, build_bundle, delete_items
from indexer.bundle import BundleStore
from indexer.catalogue import load_catalogue
from indexer.categories import DEFAULT_SAMPLE, category_report, format_report
from indexer.category_map import read_category_map
from indexer.errors import IndexerError
from indexer.ray_embed import RayOptions
from model.checkpoint import load_checkpoint
from model.errors import ModelError, run_command
from model.progress import configure_logging
from model.runtime import RUNTIMES

DEFAULT_CHECKPOINT = Path("weights/ccp-attention.pt")  # the committed model, as the service's default


def _options(args: argparse.Namespace) -> IndexOptions:
    """IndexOptions from the parsed flags: every field that has a flag of its name."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(IndexOptions) if hasattr(args, f.name)}
    if getattr(args, "map", None) is not None:
        if not args.labels_from:
            raise IndexerError("--map names the values of a metadata field: give it with --labels-from FIELD")
        given["category_map"] = read_category_map(args.map)
    if hasattr(args, "ray_address"):
        given["ray"] = RayOptions(
            address=args.ray_address,
            actors=args.ray_actors,
            actor_cpus=args.ray_actor_cpus,
            torch_threads=args.ray_threads,
        )
    return IndexOptions(**given)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m indexer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    defaults, ray = IndexOptions(), RayOptions()
    for name in ("build", "add"):
        p = sub.add_parser(name, help=f"{name} items from a catalogue")
        p.add_argument("--catalogue", type=Path, required=True, help="image folder, Kaggle layout, or list file")
        p.add_argument("--metadata", type=Path, default=None, help="CSV or JSON lines with an id column")
        p.add_argument("--checkpoint", type=Path, required=True)
        p.add_argument("--threshold", type=float, default=defaults.threshold)
        p.add_argument("--max-parts", type=int, default=defaults.max_parts)
        p.add_argument("--batch-size", type=int, default=defaults.batch_size)
        p.add_argument("--workers", type=int, default=defaults.workers)
        p.add_argument("--device", default=defaults.device)
        p.add_argument(
            "--runtime", choices=RUNTIMES, default=defaults.runtime, help="where the forward pass runs on a CPU"
        )
        p.add_argument("--factory", default=None, help="FAISS index-factory string (default: by size)")
        p.add_argument("--keep", type=int, default=defaults.keep, help="published versions to keep")
        p.add_argument(
            "--labels-from",
            default=defaults.labels_from,
            metavar="FIELD",
            help="metadata field that decides each item's part index (default %(default)s; items without "
            "it, or with --labels-from '', are placed by the model's predicted labels)",
        )
        if name == "build":  # items added later are placed by the map their bundle was built with
            p.add_argument(
                "--map",
                type=Path,
                default=None,
                metavar="FILE",
                help="the shop's category map for the --labels-from field: CSV (category,label) or YAML "
                "(category: label), each label a part label of the model or none",
            )
        p.add_argument(
            "--engine",
            choices=INDEX_ENGINES,
            default=defaults.engine,
            help="who embeds: this process and its --workers, or Ray Data (a local Ray, or --ray-address)",
        )
        p.add_argument("--ray-address", default=ray.address, help="a running Ray cluster (default: start a local one)")
        p.add_argument("--ray-actors", type=int, default=ray.actors, help="model actors (default: one per GPU, or one)")
        p.add_argument("--ray-actor-cpus", type=float, default=ray.actor_cpus, help="CPUs each model actor reserves")
        p.add_argument(
            "--ray-threads",
            type=int,
            default=ray.torch_threads,
            help="threads of each actor's forward with --runtime pytorch (the other runtimes use the node's cores)",
        )
    p = sub.add_parser("delete", help="remove items by id")
    p.add_argument("--ids", required=True, help="comma-separated item ids")
    p.add_argument("--keep", type=int, default=defaults.keep)
    p = sub.add_parser("rollback", help="make an older version live again")
    p.add_argument("--version", required=True)
    sub.add_parser("list", help="versions, the live one marked")
    for p in sub.choices.values():
        p.add_argument("--bundles", type=Path, default=Path("bundles"), help="the bundle store folder")
    _categories_parser(sub, defaults)
    return parser


def _categories_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], defaults: IndexOptions) -> None:
    p = sub.add_parser(
        "categories",
        help="dry run: where each category value's products would go (map, built-in names or the model)",
    )
    p.add_argument("--catalogue", type=Path, required=True, help="image folder, Kaggle layout, or list file")
    p.add_argument("--metadata", type=Path, default=None, help="CSV or JSON lines with an id column")
    p.add_argument(
        "--labels-from", default=defaults.labels_from, metavar="FIELD", help="the category field (default %(default)s)"
    )
    p.add_argument("--map", type=Path, default=None, metavar="FILE", help="the shop's category map (CSV or YAML)")
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="the model (default %(default)s)")
    p.add_argument(
        "--sample",
        type=int,
        default=DEFAULT_SAMPLE,
        help="products per value left to the model that it places, to show where (default %(default)s; 0: none)",
    )
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--workers", type=int, default=defaults.workers)
    p.add_argument("--device", default=defaults.device)
    p.add_argument("--json", action="store_true", help="the report as JSON")


def _categories(args: argparse.Namespace) -> int:
    if not args.labels_from:
        raise IndexerError("the dry run reads a category field: give it with --labels-from FIELD")
    if args.sample < 0:
        raise IndexerError("--sample is a count of products, 0 or more")
    category_map = read_category_map(args.map) if args.map else None  # the file checked before the model loads
    model, _ = load_checkpoint(args.checkpoint, args.device)
    if category_map is not None:
        category_map.check_labels(model.config.labels)
    report = category_report(
        load_catalogue(args.catalogue, args.metadata),
        args.labels_from,
        model,
        str(args.checkpoint),
        category_map,
        sample=args.sample,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
    )
    print(report.to_json() if args.json else format_report(report))
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.command == "categories":
        return _categories(args)
    store = BundleStore(args.bundles)
    if args.command == "list":
        current = store.current_version()
        for v in store.versions():
            print(("* " if v == current else "  ") + v)
        return 0
    if args.command == "build":
        version = build_bundle(store, args.checkpoint, load_catalogue(args.catalogue, args.metadata), _options(args))
    elif args.command == "add":
        catalogue = load_catalogue(args.catalogue, args.metadata)
        version = add_items(store, args.checkpoint, catalogue.items, _options(args), skipped=catalogue.skipped)
    elif args.command == "delete":
        version = delete_items(store, [i.strip() for i in args.ids.split(",") if i.strip()], args.keep)
    else:
        store.rollback(args.version)
        version = args.version
    manifest = store.manifest(version)
    summary: dict[str, object] = {k: manifest[k] for k in ("version", "items", "timings") if k in manifest}
    if args.command in ("build", "add"):  # what this command left out (the manifest lists each)
        summary["skipped"] = len(store.skipped_by(version))
    print(json.dumps(summary, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit code 0, or 2 with one line on stderr for a catalogue, bundle or checkpoint it cannot use."""
    args = _parser().parse_args(argv)
    configure_logging()
    return run_command(lambda: _run(args), (IndexerError, ModelError))


if __name__ == "__main__":
    sys.exit(main())
