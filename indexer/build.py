"""Build, extend and shrink bundles: embed → (train) → add_with_ids → write → publish.

Each stage is timed and the timings go into the manifest. A full build embeds the whole catalogue;
``add_items`` embeds only the new items and ``delete_items`` embeds nothing, both starting from the
live bundle and publishing a new version of it.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

import faiss
import numpy as np

from indexer.bundle import Bundle, BundleError, BundleStore, ItemRecord, new_version, write_bundle
from indexer.catalogue import Catalogue, CatalogueItem, skipped_summary
from indexer.category_map import CategoryMap, CategoryMapError, destination
from indexer.embed import DEFAULT_WORKER_TIMEOUT_S, ItemParts, KnownLabels, Skipped, embed_items
from indexer.errors import IndexerError
from indexer.faiss_index import (
    EXACT_BELOW,
    build_index,
    choose_factory,
    exact_contents,
    gpu_available,
    is_exact,
    tune_on_own_vectors,
)
from indexer.ray_embed import RayOptions, embed_items_ray
from model.checkpoint import file_sha256, load_checkpoint
from model.imaging import ImageLimits
from model.network import DEFAULT_ITEM_LABEL_THRESHOLD, PartAttentionNetwork
from model.runtime import DEFAULT_CACHE, DEFAULT_RUNTIME, Runtime, make_forward

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (done, total)


# The product's own category where the catalogue names it (the Kaggle layout's articleType): a
# product joins the index of its category, not of labels predicted from its photo. Items without
# the field fall back to the model's predictions.
DEFAULT_LABELS_FROM = "articleType"

IndexEngine = Literal["local", "ray"]  # who embeds: this process (and its decode workers), or Ray Data
INDEX_ENGINES: tuple[IndexEngine, ...] = get_args(IndexEngine)


@dataclass
class IndexOptions:
    threshold: float = DEFAULT_ITEM_LABEL_THRESHOLD  # a label's probability for the item to join its index
    max_parts: int = 3  # labels per item at most
    batch_size: int = 32
    workers: int = 2
    device: str = "cpu"
    factory: str | None = None  # a FAISS index-factory string; None chooses by size
    keep: int = 3  # published versions kept
    limits: ImageLimits = ImageLimits()  # what a catalogue photo may be (others are skipped)
    labels_from: str | None = DEFAULT_LABELS_FROM  # a metadata field that decides the part indexes; None: the model
    category_map: CategoryMap | None = None  # the shop's names for that field's values (indexer.category_map)
    worker_timeout_s: float = DEFAULT_WORKER_TIMEOUT_S  # a decode worker silent this long fails the build
    exact_below: int = EXACT_BELOW  # vectors in one index under which it is exact (above: compact)
    runtime: Runtime = DEFAULT_RUNTIME  # where the forward pass runs (model.runtime)
    runtime_cache: Path = DEFAULT_CACHE  # its exports of the checkpoint
    engine: IndexEngine = "local"  # who embeds: this process (and its decode workers), or Ray Data
    ray: RayOptions = RayOptions()  # where and how, for engine "ray"


@dataclass
class _Vectors:
    keys: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    vectors: dict[str, list[np.ndarray]] = field(default_factory=lambda: defaultdict(list))

    def add(self, label: str, key: int, vector: np.ndarray) -> None:
        self.keys[label].append(key)
        self.vectors[label].append(vector.astype(np.float32))

    def arrays(self, label: str) -> tuple[np.ndarray, np.ndarray]:
        return np.stack(self.vectors[label]), np.asarray(self.keys[label], dtype=np.int64)


def _results(
    model: PartAttentionNetwork,
    checkpoint: Path,
    items: Sequence[CatalogueItem],
    options: IndexOptions,
    known: KnownLabels | None,
) -> Iterator[ItemParts | Skipped]:
    """Each item's embeddings or why it was skipped, in catalogue order, from the chosen engine."""
    common: dict[str, Any] = dict(
        threshold=options.threshold,
        max_parts=options.max_parts,
        batch_size=options.batch_size,
        device=options.device,
        limits=options.limits,
        known_labels=known,
    )
    if options.engine == "ray":
        size = (model.config.image_height, model.config.image_width)
        return embed_items_ray(
            checkpoint,
            items,
            size=size,
            runtime=options.runtime,
            runtime_cache=options.runtime_cache,
            ray_options=options.ray,
            **common,
        )
    forward = make_forward(model, options.runtime, file_sha256(checkpoint), options.runtime_cache, options.device)
    return embed_items(
        model, items, workers=options.workers, worker_timeout_s=options.worker_timeout_s, forward=forward, **common
    )


def _embed(
    model: PartAttentionNetwork,
    checkpoint: Path,
    items: Sequence[CatalogueItem],
    first_key: int,
    options: IndexOptions,
    progress: Progress | None,
) -> tuple[list[ItemRecord], _Vectors, _Vectors, list[dict[str, str]]]:
    """Embed items; returns their records, part and global vectors by label, and the skipped ones."""
    by_id = {item.id: item for item in items}
    records, skipped = [], []
    parts, whole = _Vectors(), _Vectors()
    key = first_key
    done = 0
    known = (
        _known_labels(options.labels_from, model.config.labels, options.category_map) if options.labels_from else None
    )
    for result in _results(model, checkpoint, items, options, known):
        done += 1
        if progress:
            progress(done, len(items))
        if isinstance(result, Skipped):
            log.warning("skipped %s (%s): %s", result.id, result.path, result.reason)
            skipped.append({"id": result.id, "path": result.path, "reason": result.reason})
            continue
        item = by_id[result.id]
        labels = [label for label, _, _ in result.parts]
        records.append(ItemRecord(key, item.id, {**item.metadata, "parts": labels}, str(item.path)))
        whole.add("", key, result.global_embedding)
        for label, _, vector in result.parts:
            parts.add(label, key, vector)
        key += 1
    return records, parts, whole, skipped


def _known_labels(field: str, labels: list[str], category_map: CategoryMap | None = None) -> KnownLabels:
    """An item's part labels from its metadata field: by the shop's category map, else the built-in
    names (indexer.category_map.destination). A value mapped to no label gives no part (the item
    stays in the global index); an item without the field, or with a value neither knows, is placed
    by the model."""
    wanted = set(labels)

    def known(item: CatalogueItem) -> list[str] | None:
        if field not in item.metadata:
            return None  # nothing known: the model's predictions decide
        where = destination(item.metadata[field], wanted, category_map)
        if where.route == "model":
            return None
        return [where.label] if where.label else []

    return known


def _model_manifest(checkpoint: Path, model: PartAttentionNetwork) -> dict[str, Any]:
    cfg = model.config
    return {
        "checkpoint": str(checkpoint),
        "sha256": file_sha256(checkpoint),
        "labels": list(cfg.labels),
        "architecture": cfg.architecture,
        "trunk": cfg.trunk,
        "embedding_dim": cfg.global_dim,
        "part_dim": cfg.part_dim,
    }


def _publish(
    store: BundleStore,
    manifest: dict[str, Any],
    records: list[ItemRecord],
    part_indexes: dict[str, faiss.Index],
    global_index: faiss.Index,
    keep: int,
    timings: dict[str, float],
) -> str:
    version = new_version()
    started = time.monotonic()
    staging = store.staging(version)
    counts = {label: int(index.ntotal) for label, index in sorted(part_indexes.items())}
    manifest = {
        "version": version,
        "created": datetime.now(UTC).isoformat(),
        **manifest,
        "items": len(records),
        "index": {
            **manifest.get("index", {}),
            "counts": counts,
            "global": int(global_index.ntotal),
            "types": {label: _describe(index) for label, index in part_indexes.items()},
            "global_type": _describe(global_index),
        },
        "timings": timings,
        "host": {"python": platform.python_version(), "faiss": faiss.__version__, "gpu": gpu_available()},
    }
    try:
        write_bundle(staging, manifest, records, part_indexes, global_index)
        # Read back (manifest, items, indexes) before anything points at it; the checksums were just
        # taken from these very files, so hashing them again would prove nothing.
        Bundle(staging, checksums=False)
    except (OSError, RuntimeError, BundleError) as exc:  # a full disk, an unwritable folder
        shutil.rmtree(staging, ignore_errors=True)
        raise IndexerError(f"nothing published: writing bundle {version} failed: {exc}") from exc
    store.publish(version, keep)
    log.info(
        "published bundle %s: %d items, %d part vectors (written in %.1f s)",
        version,
        len(records),
        sum(counts.values()),
        time.monotonic() - started,
    )
    return version


GLOBAL_KEY = "(global)"  # the global index's entry in the manifest's index.search


def _add_to(
    indexes: dict[str, faiss.Index], added: dict[str, tuple[np.ndarray, np.ndarray]], options: IndexOptions
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Add each label's new vectors to its index, in place. A new label gets an index; an exact one
    grown past ``options.exact_below`` is rebuilt compact from all its vectors. Returns what was
    built anew (label: vectors, ids), to tune; an approximate index keeps its lists and nprobe."""
    rebuilt = {}
    for label, (vectors, keys) in added.items():
        held = indexes.get(label)
        if held is not None and not _outgrown(held, len(keys), options):
            held.add_with_ids(vectors, keys)
            continue
        if held is not None:
            old_vectors, old_keys = exact_contents(held)  # type: ignore[arg-type]  # _outgrown: it is exact
            vectors, keys = np.concatenate([old_vectors, vectors]), np.concatenate([old_keys, keys])
        indexes[label] = _new_index(vectors, keys, options)
        rebuilt[label] = (vectors, keys)
    return rebuilt


def _new_index(vectors: np.ndarray, keys: np.ndarray, options: IndexOptions) -> faiss.Index:
    return build_index(vectors, keys, options.factory, exact_below=options.exact_below)


def _outgrown(index: faiss.Index, adding: int, options: IndexOptions) -> bool:
    """Whether an exact index would hold at least ``options.exact_below`` vectors after ``adding``."""
    return options.factory is None and is_exact(index) and index.ntotal + adding >= options.exact_below


def _tune(
    indexes: dict[str, faiss.Index], contents: dict[str, tuple[np.ndarray, np.ndarray]]
) -> dict[str, dict[str, float]]:
    """nprobe for each approximate index named in ``contents`` (its vectors and ids), chosen on its
    own vectors to reach the recall target (indexer.faiss_index.tune_on_own_vectors)."""
    tuned = {}
    for label, (array, keys) in contents.items():
        result = tune_on_own_vectors(indexes[label], array, keys)
        if result is not None:
            tuned[label] = result
            log.info("index %s: nprobe %d reaches recall@10 %.3f", label, result["nprobe"], result["recall_at_10"])
    return tuned


def _describe(index: faiss.Index) -> str:
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    return f"{type(index).__name__}({type(inner).__name__}, d={index.d})"


def first_slice(items: Sequence[CatalogueItem], count: int) -> list[CatalogueItem]:
    """``count`` items spread evenly over the catalogue (every k-th), so that a first bundle covers
    its categories rather than the first rows of one of them."""
    if count >= len(items):
        return list(items)
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def _catalogue_manifest(catalogue: Catalogue, complete: bool) -> dict[str, Any]:
    return {
        "source": catalogue.source,
        "root": catalogue.root,
        "metadata": catalogue.metadata,
        "fingerprint": catalogue.fingerprint(),
        "items": len(catalogue.items) + len(catalogue.skipped),
        "complete": complete,
    }


def build_bundle(
    store: BundleStore,
    checkpoint: str | Path,
    catalogue: Catalogue,
    options: IndexOptions | None = None,
    progress: Progress | None = None,
    first: int | None = None,
    min_items: int = 1,
) -> str:
    """Embed the catalogue and publish a new bundle; returns its version. With ``first``, only a
    first slice of that many items: the bundle is marked incomplete and ``complete_bundle`` adds
    the rest later (a service answers in minutes, and reaches the whole catalogue without a restart).
    Fewer than ``min_items`` indexed items (never fewer than one) publish nothing: IndexerError."""
    options = options or IndexOptions()
    checkpoint = Path(checkpoint)
    model = _load_model(checkpoint, options)  # a bad checkpoint or factory fails before the lock is waited for
    items = first_slice(catalogue.items, first) if first else catalogue.items
    if catalogue.skipped:  # in the manifest too; said here so that a shop sees what was left out
        log.warning("%s", skipped_summary(catalogue.skipped))
    min_items = max(1, min_items)
    if len(items) < min_items:
        raise IndexerError(_too_few(catalogue, len(items), min_items, "lists"))
    with store.writer():
        return _build(store, checkpoint, model, catalogue, items, options, progress, min_items)


def _build(
    store: BundleStore,
    checkpoint: Path,
    model: PartAttentionNetwork,
    catalogue: Catalogue,
    items: Sequence[CatalogueItem],
    options: IndexOptions,
    progress: Progress | None,
    min_items: int,
) -> str:
    """build_bundle's work on ``items`` of ``catalogue``, the store's writer lock held."""
    timings: dict[str, float] = {}
    started = time.monotonic()
    records, parts, whole, skipped = _embed(model, checkpoint, items, 0, options, progress)
    if len(records) < min_items:
        raise IndexerError(_too_few(catalogue, len(records), min_items, "has readable images for"))
    timings["embed_s"] = round(time.monotonic() - started, 3)
    timings["items_per_s"] = round(len(items) / max(timings["embed_s"], 1e-9), 2)
    started = time.monotonic()
    part_indexes = {label: _new_index(*parts.arrays(label), options) for label in parts.keys}
    global_index = _new_index(*whole.arrays(""), options) if records else _empty(model)
    contents = {label: parts.arrays(label) for label in parts.keys}
    if records:
        contents[GLOBAL_KEY] = whole.arrays("")
    search = _tune({**part_indexes, GLOBAL_KEY: global_index}, contents)
    timings["index_s"] = round(time.monotonic() - started, 3)
    manifest = {
        "parent": None,
        "model": _model_manifest(checkpoint, model),
        "catalogue": _catalogue_manifest(catalogue, complete=len(items) == len(catalogue.items)),
        "options": {
            "threshold": options.threshold,
            "max_parts": options.max_parts,
            "factory": options.factory or "auto",
            "labels_from": options.labels_from,
            "category_map": options.category_map.record() if options.category_map else None,
            "engine": options.engine,
            "runtime": options.runtime,
        },
        "skipped": catalogue.skipped + skipped,
        "index": {"search": search},
    }
    return _publish(store, manifest, records, part_indexes, global_index, options.keep, timings)


def _too_few(catalogue: Catalogue, count: int, needed: int, what: str) -> str:
    return f"nothing published: the catalogue {catalogue.source} {what} {count} items, fewer than the {needed} required"


def _empty(model: PartAttentionNetwork) -> faiss.Index:
    return faiss.index_factory(model.config.global_dim, choose_factory(0))


def _load_model(checkpoint: Path, options: IndexOptions) -> PartAttentionNetwork:
    """The checkpoint's model, after checking it and the index factory: both fail in one line here,
    before minutes of embedding, not in a traceback after them."""
    model, _ = load_checkpoint(checkpoint, options.device)
    if options.category_map is not None:
        if not options.labels_from:
            raise CategoryMapError("a category map needs the metadata field whose values it names: --labels-from FIELD")
        options.category_map.check_labels(model.config.labels)
    if options.factory is not None:
        try:
            for dim in {model.config.global_dim, model.config.part_dim}:
                faiss.index_factory(dim, options.factory)
        except RuntimeError as exc:
            reason = str(exc).strip().splitlines()[-1].rsplit(": ", 1)[-1]  # past faiss's C++ location
            raise IndexerError(f"bad FAISS index factory {options.factory!r}: {reason}") from exc
    return model


def _changed(base: Bundle, drop: set[str]) -> tuple[dict[str, faiss.Index], faiss.Index, list[ItemRecord]]:
    """The indexes of ``base`` (opened in memory for this change alone, so changed in place) with
    the items in ``drop`` removed."""
    keys = np.asarray([base.keys_by_id[i] for i in drop if i in base.keys_by_id], dtype=np.int64)
    part_indexes, global_index = dict(base.part_indexes), base.global_index
    if len(keys):
        for index in [*part_indexes.values(), global_index]:
            index.remove_ids(keys)  # type: ignore[arg-type]  # the SWIG wrapper takes an id array too
    records = [r for r in base.items.values() if r.id not in drop]
    return part_indexes, global_index, records


def add_items(
    store: BundleStore,
    checkpoint: str | Path,
    items: Sequence[CatalogueItem],
    options: IndexOptions | None = None,
    progress: Progress | None = None,
    catalogue: Catalogue | None = None,
    skipped: Sequence[dict[str, str]] = (),
) -> str:
    """Embed only ``items`` and publish the live bundle plus them (an existing id is replaced).
    ``catalogue``: the items complete this catalogue (recorded as such in the manifest).
    ``skipped``: entries of the catalogue the items came from that could not be items (reported
    with those the embedding skips)."""
    if skipped:
        log.warning("%s", skipped_summary(list(skipped)))
    with store.writer():
        base = store.open(mmap=False)  # changed in place: a memory-mapped index is read-only
        return _add_to_live(store, base, Path(checkpoint), items, options, progress, catalogue, skipped)


def _merged(skipped: list[dict[str, str]], more: list[dict[str, str]]) -> list[dict[str, str]]:
    """``skipped`` and the entries of ``more`` it lacks (an entry skipped again is listed once)."""
    seen = {tuple(sorted(entry.items())) for entry in skipped}
    return skipped + [entry for entry in more if tuple(sorted(entry.items())) not in seen]


def complete_bundle(
    store: BundleStore,
    checkpoint: str | Path,
    catalogue: Catalogue,
    *,
    options: IndexOptions | None = None,
    progress: Progress | None = None,
    queued_for: tuple[str, str | None] | None = None,
) -> str | None:
    """Add the catalogue's items the live bundle lacks (after a first slice); their embeddings
    only are computed. Returns the published version, or None when the live bundle already holds
    the whole catalogue or is a slice of another one. Decided under the writer lock: two
    completions (several API processes may each ask) embed the missing items once, and none
    reports another writer's bundle as its own.

    ``queued_for``: the (root, metadata) the slice's manifest recorded when this completion was
    asked for (None: the catalogue's own). A folder that has since gained a metadata file reads
    as another catalogue: the slice is of it, but not of what it holds now, so the whole catalogue
    is embedded anew instead of the rest being added."""
    with store.writer():
        manifest = store.manifest()  # read before the bundle's indexes
        made_from = manifest.get("catalogue", {})
        if made_from.get("complete", True):
            log.info("bundle %s already holds the whole catalogue", store.current_version())
            return None
        queued_for = queued_for or (catalogue.root, catalogue.metadata)
        if (made_from.get("root"), made_from.get("metadata")) != queued_for:
            # A completion queued for an earlier slice, run after a slice of another catalogue
            # replaced it: that slice's own completion adds its rest.
            log.info(
                "bundle %s is a first slice of %s (metadata %s), not of %s (metadata %s): nothing to add",
                store.current_version(),
                made_from.get("root"),
                made_from.get("metadata"),
                *queued_for,
            )
            return None
        if made_from.get("metadata") != catalogue.metadata:
            # The folder gained a metadata file after its slice was embedded without one: the
            # slice's items were placed by the model, the rest would be placed by their categories.
            # Embedded anew as a whole, every item is placed the same way.
            log.warning(
                "catalogue %s now reads its metadata from %s, its slice (bundle %s) from %s: indexing it anew",
                catalogue.root,
                catalogue.metadata,
                store.current_version(),
                made_from.get("metadata"),
            )
            options = options or IndexOptions()
            model = _load_model(Path(checkpoint), options)
            # never fewer items than the slice holds (metadata naming other ids than the photos' would
            # replace the slice by a handful): refused, the slice stays and serves
            held = manifest["items"]
            return _build(store, Path(checkpoint), model, catalogue, catalogue.items, options, progress, held)
        live = store.open(mmap=False)
        # An entry the slice skipped is tried again (its photo may be fixed); listed once in the bundle.
        missing = [item for item in catalogue.items if item.id not in live.keys_by_id]
        log.info("completing bundle %s: %d of %d items to add", live.version, len(missing), len(catalogue.items))
        return _add_to_live(store, live, Path(checkpoint), missing, options, progress, catalogue)


def _add_to_live(
    store: BundleStore,
    base: Bundle,
    checkpoint: Path,
    items: Sequence[CatalogueItem],
    options: IndexOptions | None,
    progress: Progress | None,
    catalogue: Catalogue | None,
    skipped: Sequence[dict[str, str]] = (),
) -> str:
    """add_items' work on the live bundle ``base``, its writer lock held."""
    options = options or IndexOptions()
    # One id given twice is one item, its last entry (as a later upload replaces an earlier one):
    # two would leave an index vector without a record once either is replaced.
    items = list({item.id: item for item in items}.values())
    if file_sha256(checkpoint) != base.model_sha256:
        raise BundleError("the checkpoint differs from the live bundle's model: rebuild the whole bundle")
    # New items are embedded the way the bundle's own items were.
    built = base.manifest.get("options", {})
    options = dataclasses.replace(
        options,
        threshold=built.get("threshold", options.threshold),
        max_parts=built.get("max_parts", options.max_parts),
        labels_from=built.get("labels_from", options.labels_from),
        category_map=(
            CategoryMap.from_record(built["category_map"]) if "category_map" in built else options.category_map
        ),
    )
    model = _load_model(checkpoint, options)
    timings: dict[str, float] = {}
    started = time.monotonic()
    first_key = max(base.items, default=-1) + 1
    new_records, parts, whole, unreadable = _embed(model, checkpoint, items, first_key, options, progress)
    # Only the items embedded replace their old selves: one whose new photo cannot be read keeps
    # the one it had (and is reported skipped), instead of leaving the bundle.
    part_indexes, global_index, records = _changed(base, {record.id for record in new_records})
    own_skipped = [*skipped, *unreadable]
    timings["embed_s"] = round(time.monotonic() - started, 3)
    added = {label: parts.arrays(label) for label in parts.keys}
    if new_records:
        added[GLOBAL_KEY] = whole.arrays("")
    indexes = {**part_indexes, GLOBAL_KEY: global_index}
    rebuilt = _add_to(indexes, added, options)
    part_indexes, global_index = {k: v for k, v in indexes.items() if k != GLOBAL_KEY}, indexes[GLOBAL_KEY]
    search = {**base.manifest.get("index", {}).get("search", {}), **_tune(indexes, rebuilt)}
    manifest = {key: base.manifest[key] for key in ("model", "catalogue", "options")}
    if catalogue is not None:
        manifest["catalogue"] = _catalogue_manifest(catalogue, complete=True)
    manifest.update(
        index={"search": search},
        parent=base.version,
        change={"added": [r.id for r in new_records], "skipped": own_skipped},
        skipped=_merged(base.manifest.get("skipped", []), own_skipped),
    )
    return _publish(store, manifest, records + new_records, part_indexes, global_index, options.keep, timings)


def delete_items(store: BundleStore, ids: Sequence[str], keep: int = 3) -> str:
    """Publish the live bundle without ``ids``; unknown ids are an error (nothing is published)."""
    with store.writer():
        base = store.open(mmap=False)  # changed in place: a memory-mapped index is read-only
        unknown = sorted(set(ids) - set(base.keys_by_id))
        if unknown:
            raise BundleError(f"not in bundle {base.version}: {', '.join(unknown[:10])}")
        part_indexes, global_index, records = _changed(base, set(ids))
        part_indexes = {label: index for label, index in part_indexes.items() if index.ntotal}
        manifest = {key: base.manifest[key] for key in ("model", "catalogue", "options", "skipped")}
        manifest.update(index={"search": base.manifest.get("index", {}).get("search", {})})
        manifest.update(parent=base.version, change={"deleted": sorted(set(ids))})
        return _publish(store, manifest, records, part_indexes, global_index, keep, {})
