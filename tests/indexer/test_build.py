import dataclasses
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import indexer.build
import indexer.embed
from indexer.build import IndexOptions, add_items, build_bundle, complete_bundle, delete_items
from indexer.bundle import BundleError, BundleStore
from indexer.catalogue import CatalogueItem, load_catalogue
from indexer.errors import IndexerError
from indexer.search import QueryPart, recommend_parts
from tests.helpers import add_field, make_catalogue, slice_before_its_metadata

OPTIONS = IndexOptions(threshold=0.0, max_parts=2, batch_size=4, workers=0)


def test_bundle_round_trip(tmp_path: Path, tiny_checkpoint: Path) -> None:
    store = BundleStore(tmp_path / "bundles")
    catalogue = load_catalogue(make_catalogue(tmp_path / "cat", count=10))
    version = build_bundle(store, tiny_checkpoint, catalogue, OPTIONS)
    assert store.current_version() == version and store.versions() == [version]
    bundle = store.open()
    manifest = bundle.manifest
    assert manifest["items"] == 10 and manifest["parent"] is None
    assert manifest["model"]["labels"] == ["red", "green", "blue"] and len(manifest["model"]["sha256"]) == 64
    assert manifest["catalogue"]["fingerprint"] == catalogue.fingerprint()
    assert {"embed_s", "index_s", "items_per_s"} <= set(manifest["timings"])
    assert sum(manifest["index"]["counts"].values()) == 20  # two parts per item at threshold 0
    assert bundle.global_index.ntotal == 10
    assert {r.id for r in bundle.items.values()} == {f"p{i}" for i in range(10)}
    record = bundle.items[bundle.keys_by_id["p3"]]
    assert record.metadata["name"] == "product 3" and len(record.metadata["parts"]) == 2
    for label, index in bundle.part_indexes.items():
        assert index.ntotal == manifest["index"]["counts"][label]
        # every stored vector finds its own item first
        key = int(faiss_ids(index)[0])
        found = recommend_parts(bundle, [QueryPart(label, 1.0, index.reconstruct(key))])
        assert found[0].match is not None and found[0].match.item_id == bundle.items[key].id


def faiss_ids(index) -> np.ndarray:  # type: ignore[no-untyped-def]
    import faiss

    return faiss.vector_to_array(index.id_map)


def test_bad_entries_are_skipped_and_reported(
    tmp_path: Path, tiny_checkpoint: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = BundleStore(tmp_path / "bundles")
    catalogue = load_catalogue(make_catalogue(tmp_path / "cat", count=4, bad=True))
    with caplog.at_level(logging.WARNING, logger="indexer.build"):
        build_bundle(store, tiny_checkpoint, catalogue, OPTIONS)
    # the catalogue's own misses said in one line, as each unreadable image is
    assert "2 catalogue entries skipped: 1 missing image file (missing); 1 duplicate id (p1)" in caplog.messages
    manifest = store.open().manifest
    reasons = {s["id"]: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == {"empty", "text", "truncated", "huge", "missing", "p1"}
    assert "not a readable image" in reasons["text"] and "over the limit" in reasons["huge"]
    assert "truncated" in reasons["truncated"] and reasons["missing"] == "missing image file"
    assert reasons["empty"] == "empty file" and reasons["p1"] == "duplicate id"
    assert manifest["items"] == 4
    assert store.skipped_by(store.current_version()) == manifest["skipped"]  # a build has no parent
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo")
    added = add_items(store, tiny_checkpoint, [CatalogueItem("broken", broken)], OPTIONS)
    assert len(store.manifest(added)["skipped"]) == 7  # the manifest carries its base's list on
    assert [s["id"] for s in store.skipped_by(added)] == ["broken"]  # the add's own
    # an add from a catalogue: what its catalogue could not make items of is the add's too
    missing = [{"id": "gone", "path": "/nowhere.jpg", "reason": "missing image file"}]
    again = add_items(store, tiny_checkpoint, [CatalogueItem("broken", broken)], OPTIONS, skipped=missing)
    assert [s["id"] for s in store.skipped_by(again)] == ["gone", "broken"]


def test_add_and_delete_make_new_versions_without_reembedding(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BundleStore(tmp_path / "bundles")
    first = build_bundle(store, tiny_checkpoint, load_catalogue(make_catalogue(tmp_path / "a", count=6)), OPTIONS)
    extra = load_catalogue(make_catalogue(tmp_path / "b", count=9)).items[6:]  # p6, p7, p8
    embedded: list[str] = []
    original = indexer.build.embed_items
    monkeypatch.setattr(
        indexer.build,
        "embed_items",
        lambda m, items, *a, **k: (embedded.extend(i.id for i in items), original(m, items, *a, **k))[1],
    )
    second = add_items(store, tiny_checkpoint, extra, OPTIONS)
    assert embedded == ["p6", "p7", "p8"]  # only the new items went through the model
    bundle = store.open()
    assert bundle.version == second and bundle.manifest["parent"] == first and bundle.manifest["items"] == 9
    assert bundle.global_index.ntotal == 9

    third = delete_items(store, ["p0", "p7"])
    bundle = store.open()
    assert bundle.manifest["parent"] == second and bundle.manifest["change"] == {"deleted": ["p0", "p7"]}
    assert set(bundle.keys_by_id) == {"p1", "p2", "p3", "p4", "p5", "p6", "p8"}
    assert bundle.global_index.ntotal == 7
    assert sum(i.ntotal for i in bundle.part_indexes.values()) == 14
    assert store.versions() == sorted([first, second, third])
    with pytest.raises(BundleError, match="nope"):
        delete_items(store, ["nope"])
    assert store.current_version() == third  # a refused change publishes nothing

    store.rollback(first)
    assert store.open().manifest["items"] == 6


def test_an_item_replaced_by_an_unreadable_photo_keeps_the_one_it_had(tmp_path: Path, tiny_checkpoint: Path) -> None:
    store = BundleStore(tmp_path / "bundles")
    build_bundle(store, tiny_checkpoint, load_catalogue(make_catalogue(tmp_path / "a", count=4)), OPTIONS)
    before = store.open()
    old_vector = before.global_index.reconstruct(before.keys_by_id["p1"])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo")
    fresh = load_catalogue(make_catalogue(tmp_path / "b", count=4, prefix="q")).items[0]
    add_items(store, tiny_checkpoint, [CatalogueItem("p1", broken), CatalogueItem("p2", fresh.path)], OPTIONS)
    after = store.open()
    assert set(after.keys_by_id) == {"p0", "p1", "p2", "p3"} and after.global_index.ntotal == 4
    np.testing.assert_array_equal(after.global_index.reconstruct(after.keys_by_id["p1"]), old_vector)
    assert after.keys_by_id["p2"] != before.keys_by_id["p2"]  # the readable one replaced
    assert after.manifest["change"]["added"] == ["p2"]
    assert [e["id"] for e in after.manifest["change"]["skipped"]] == ["p1"]


def test_an_id_added_twice_in_one_request_is_one_item_its_last_entry(tmp_path: Path, tiny_checkpoint: Path) -> None:
    store = BundleStore(tmp_path / "bundles")
    build_bundle(store, tiny_checkpoint, load_catalogue(make_catalogue(tmp_path / "a", count=3)), OPTIONS)
    photos = load_catalogue(make_catalogue(tmp_path / "b", count=2, prefix="q")).items
    add_items(store, tiny_checkpoint, [CatalogueItem("sku-1", photos[0].path), CatalogueItem("sku-1", photos[1].path)])
    bundle = store.open()
    assert bundle.global_index.ntotal == 4 == len(bundle.items)
    assert bundle.items[bundle.keys_by_id["sku-1"]].image == str(photos[1].path)
    delete_items(store, ["sku-1"])  # no vector of it is left behind without its record
    after = store.open()
    assert after.global_index.ntotal == 3 == len(after.items)
    assert all(i.ntotal == len(faiss_ids(i)) for i in after.part_indexes.values())
    assert {int(k) for i in after.part_indexes.values() for k in faiss_ids(i)} <= set(after.items)


def test_old_versions_are_pruned(tmp_path: Path, tiny_checkpoint: Path) -> None:
    store = BundleStore(tmp_path / "bundles")
    build_bundle(store, tiny_checkpoint, load_catalogue(make_catalogue(tmp_path / "a", count=4)), OPTIONS)
    for item in ("p0", "p1", "p2"):
        delete_items(store, [item], keep=2)
    assert len(store.versions()) == 2 and store.current_version() == store.versions()[-1]


def test_a_reader_during_a_build_sees_the_old_bundle_whole(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BundleStore(tmp_path / "bundles")
    first = build_bundle(store, tiny_checkpoint, load_catalogue(make_catalogue(tmp_path / "a", count=4)), OPTIONS)
    writing, release = threading.Event(), threading.Event()
    original = indexer.build.write_bundle

    def slow_write(path, *args):  # type: ignore[no-untyped-def]
        original(path, *args)
        writing.set()
        release.wait(10)  # the new bundle is on disk, not yet published

    monkeypatch.setattr(indexer.build, "write_bundle", slow_write)
    builder = threading.Thread(
        target=build_bundle,
        args=(store, tiny_checkpoint, load_catalogue(make_catalogue(tmp_path / "b", count=7)), OPTIONS),
    )
    builder.start()
    assert writing.wait(30)
    seen = store.open()
    assert seen.version == first and seen.manifest["items"] == 4 and len(seen.items) == 4
    release.set()
    builder.join(30)
    assert store.open().manifest["items"] == 7


KILL_MIDWAY = """
import os, signal, sys
import indexer.bundle
from indexer.build import IndexOptions, build_bundle
from indexer.bundle import BundleStore
from indexer.catalogue import load_catalogue

real_write = indexer.bundle.faiss.write_index
def write_then_die(index, path):
    real_write(index, path)
    os.kill(os.getpid(), signal.SIGKILL)  # dies after the first index file of the new bundle
indexer.bundle.faiss.write_index = write_then_die
build_bundle(BundleStore(sys.argv[1]), sys.argv[2], load_catalogue(sys.argv[3]),
             IndexOptions(threshold=0.0, max_parts=2, batch_size=4, workers=0))
"""


def test_a_build_killed_midway_publishes_nothing(tmp_path: Path, tiny_checkpoint: Path) -> None:
    store = BundleStore(tmp_path / "bundles")
    first = build_bundle(store, tiny_checkpoint, load_catalogue(make_catalogue(tmp_path / "a", count=4)), OPTIONS)
    catalogue = make_catalogue(tmp_path / "b", count=8)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    run = subprocess.run(
        [sys.executable, "-c", KILL_MIDWAY, str(store.root), str(tiny_checkpoint), str(catalogue)],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert run.returncode == -9, run.stderr.decode()[-2000:]
    assert list(store.staging_dir.iterdir()), "the killed build left its partial bundle in staging"
    assert store.current_version() == first and store.versions() == [first]
    assert json.loads((store.versions_dir / first / "manifest.json").read_text())["items"] == 4
    # the next writer clears the leftovers and publishes normally
    delete_items(store, ["p0"])
    assert list(store.staging_dir.iterdir()) == [] and store.open().manifest["items"] == 3


def test_labels_from_metadata_choose_the_part_indexes(tmp_path: Path, tiny_checkpoint: Path) -> None:
    folder = make_catalogue(tmp_path / "cat", count=6)
    rows = (folder / "metadata.csv").read_text().splitlines()
    kinds = ["red", "blue", "Perfume and Body Mist", "green", "red", "blue"]
    (folder / "metadata.csv").write_text(
        "\n".join([rows[0] + ",kind"] + [f"{row},{kind}" for row, kind in zip(rows[1:], kinds, strict=True)]) + "\n"
    )
    store = BundleStore(tmp_path / "bundles")
    options = IndexOptions(threshold=0.0, max_parts=3, batch_size=4, workers=0, labels_from="kind")
    build_bundle(store, tiny_checkpoint, load_catalogue(folder), options)
    bundle = store.open()
    assert bundle.manifest["index"]["counts"] == {"blue": 2, "green": 1, "red": 2}  # the unmapped type: none
    assert bundle.global_index.ntotal == 6
    assert bundle.items[bundle.keys_by_id["p1"]].metadata["parts"] == ["blue"]
    assert bundle.manifest["options"]["labels_from"] == "kind"
    # a product of known category is stored by its whole photo's embedding (its global vector)
    key = bundle.keys_by_id["p1"]
    np.testing.assert_allclose(bundle.part_indexes["blue"].reconstruct(key), bundle.global_index.reconstruct(key))

    # items added later are placed the way the bundle was built, whatever options the caller has
    added = CatalogueItem("extra", folder / "images" / "p0.jpg", {"kind": "green"})
    add_items(store, tiny_checkpoint, [added], IndexOptions(threshold=0.5, max_parts=1, workers=0, labels_from=None))
    bundle = store.open()
    assert bundle.items[bundle.keys_by_id["extra"]].metadata["parts"] == ["green"]
    assert bundle.manifest["index"]["counts"]["green"] == 2


def test_real_article_types_land_in_their_labels_index_through_the_built_in_map(
    tmp_path: Path, shop_checkpoint: Path
) -> None:
    # The product set's own names, not label names: the table of model/article_types.py runs.
    types = ["Handbags", "Jeans", "Casual Shoes", "Tshirts", "Backpacks", "Caps", "Dresses", "Perfume and Body Mist"]
    folder = add_field(make_catalogue(tmp_path / "cat", count=len(types)), "articleType", types)
    store = BundleStore(tmp_path / "bundles")
    options = IndexOptions(threshold=0.0, max_parts=3, batch_size=4, workers=0)  # labels_from: articleType
    build_bundle(store, shop_checkpoint, load_catalogue(folder), options)
    bundle = store.open()
    parts = {bundle.items[key].metadata["articleType"]: bundle.items[key].metadata["parts"] for key in bundle.items}
    assert parts == {
        "Handbags": ["bag"],
        "Jeans": ["jeans"],
        "Casual Shoes": ["shoes"],
        "Tshirts": ["t-shirt"],
        "Backpacks": ["bag"],
        "Caps": ["hat"],
        "Dresses": ["dress"],
        "Perfume and Body Mist": [],  # no item label: the global index only, not the model's guess
    }
    assert bundle.manifest["index"]["counts"] == {"bag": 2, "dress": 1, "hat": 1, "jeans": 1, "shoes": 1, "t-shirt": 1}
    bag_ids = {bundle.items[int(key)].id for key in faiss_ids(bundle.part_indexes["bag"])}
    assert bag_ids == {"p0", "p4"}


def test_items_without_the_field_fall_back_to_predictions(tmp_path: Path, tiny_checkpoint: Path) -> None:
    store = BundleStore(tmp_path / "bundles")
    options = IndexOptions(threshold=0.0, max_parts=2, batch_size=4, workers=0, labels_from="articleType")
    build_bundle(store, tiny_checkpoint, load_catalogue(make_catalogue(tmp_path / "cat", count=3)), options)
    bundle = store.open()
    assert sum(bundle.manifest["index"]["counts"].values()) == 6  # two predicted parts each
    # predicted street parts keep their crops' embeddings, not the whole photo's
    key = bundle.keys_by_id["p0"]
    for label in bundle.items[key].metadata["parts"]:
        assert not np.allclose(bundle.part_indexes[label].reconstruct(key), bundle.global_index.reconstruct(key))


class HangingDecoded(indexer.embed._Decoded):
    """Decodes as the indexer does, but item 1 never comes back (pickled by reference, so the
    indexer's decode worker runs this class)."""

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        if i == 1:
            time.sleep(3600)
        return super().__getitem__(i)


def test_a_decode_worker_that_hangs_fails_the_build_instead_of_waiting_for_ever(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(indexer.embed, "_Decoded", HangingDecoded)
    store = BundleStore(tmp_path / "b")
    options = IndexOptions(threshold=0.0, batch_size=1, workers=1, worker_timeout_s=3)
    catalogue = load_catalogue(make_catalogue(tmp_path / "cat", count=indexer.embed.SMALL_JOB))  # workers start
    started = time.monotonic()
    with pytest.raises(IndexerError, match="image decoding stopped.*shm_size"):
        build_bundle(store, tiny_checkpoint, catalogue, options)
    assert time.monotonic() - started < 60
    assert store.current_version() is None


def test_special_files_are_skipped_not_read(tmp_path: Path, tiny_checkpoint: Path) -> None:
    folder = make_catalogue(tmp_path / "cat", count=3)
    os.mkfifo(folder / "images" / "pipe.jpg")  # opening a pipe nobody writes to would block for ever
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join([str(folder / "images" / "p0.jpg"), str(folder / "images" / "pipe.jpg"), "/dev/zero"]))
    store = BundleStore(tmp_path / "b")
    build_bundle(store, tiny_checkpoint, load_catalogue(listing), OPTIONS)
    skipped = {Path(s["path"]).name: s["reason"] for s in store.open().manifest["skipped"]}
    assert skipped == {"pipe.jpg": "not a regular file", "zero": "not a regular file"}


def test_decoding_refuses_a_special_file_that_replaced_an_image(tmp_path: Path) -> None:
    from model.imaging import ImageDecodeError, decode_image

    os.mkfifo(tmp_path / "was-an-image.jpg")  # listed as an image, then swapped for a pipe
    with pytest.raises(ImageDecodeError, match="not a regular file"):
        decode_image(tmp_path / "was-an-image.jpg")


def test_an_index_grown_past_the_exact_limit_becomes_compact_and_stays_editable(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    # The first-slice path: a small bundle first, the rest added later, must end with the index
    # kinds a full build would have chosen (here the limit is 20 vectors, not 50,000).
    store = BundleStore(tmp_path / "bundles")
    options = IndexOptions(threshold=0.0, max_parts=2, batch_size=4, workers=0, exact_below=20)
    build_bundle(store, tiny_checkpoint, load_catalogue(make_catalogue(tmp_path / "a", count=12)), options)
    assert store.open().manifest["index"]["global_type"].startswith("IndexIDMap2")
    more = load_catalogue(make_catalogue(tmp_path / "more", count=12, prefix="q"))
    add_items(store, tiny_checkpoint, more.items, options)
    bundle = store.open()
    assert "IVF" in bundle.manifest["index"]["global_type"] and bundle.global_index.ntotal == 24
    assert bundle.manifest["index"]["search"]["(global)"]["nprobe"] >= 1
    delete_items(store, ["q0", "p1"])  # a compact index copied from a memory-mapped bundle, then changed
    after = store.open()
    assert after.global_index.ntotal == 22 and "q0" not in after.keys_by_id
    assert after.manifest["index"]["search"] == bundle.manifest["index"]["search"]


def test_a_first_slice_is_completed_once_with_every_readable_item_and_each_skip_listed_once(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    catalogue = load_catalogue(make_catalogue(tmp_path / "catalogue", count=20, bad=True))
    unreadable = {"empty", "text", "truncated", "huge"}  # first, so that the slice tries some
    catalogue = dataclasses.replace(catalogue, items=sorted(catalogue.items, key=lambda i: i.id not in unreadable))
    store = BundleStore(tmp_path / "bundles")
    options = IndexOptions(threshold=0.0, workers=0)
    slice_version = build_bundle(store, tiny_checkpoint, catalogue, options, first=6)
    first = store.open()
    slice_skipped = store.skipped_by(slice_version)
    assert {e["id"] for e in slice_skipped} & unreadable and "p1" not in first.keys_by_id  # p1: its duplicate row
    completed = complete_bundle(store, tiny_checkpoint, catalogue, options=options)
    assert completed is not None and completed == store.current_version()
    bundle = store.open()
    assert bundle.complete and bundle.manifest["parent"] == slice_version
    # every readable item, the first of a duplicated id included; the unreadable ones tried again
    assert set(bundle.keys_by_id) == {item.id for item in catalogue.items} - unreadable
    skipped = [tuple(sorted(e.items())) for e in bundle.manifest["skipped"]]
    assert len(skipped) == len(set(skipped)) and {e["id"] for e in bundle.manifest["skipped"]} >= unreadable
    assert complete_bundle(store, tiny_checkpoint, catalogue, options=options) is None  # whole: nothing published
    assert store.current_version() == completed


def test_a_completion_queued_for_another_catalogues_slice_adds_nothing(tmp_path: Path, tiny_checkpoint: Path) -> None:
    # Catalogue A's slice, then a reindex onto catalogue B's slice before A's completion ran: A's
    # completion must not fill B's bundle with A's items (B's own completion adds B's rest).
    store = BundleStore(tmp_path / "bundles")
    options = IndexOptions(threshold=0.0, workers=0)
    a = load_catalogue(make_catalogue(tmp_path / "a", count=8))
    b = load_catalogue(make_catalogue(tmp_path / "b", count=8, prefix="q"))
    build_bundle(store, tiny_checkpoint, a, options, first=3)
    b_slice = build_bundle(store, tiny_checkpoint, b, options, first=3)
    assert complete_bundle(store, tiny_checkpoint, a, options=options) is None
    assert store.current_version() == b_slice and not store.open().complete
    completed = complete_bundle(store, tiny_checkpoint, b, options=options)
    assert completed is not None and set(store.open().keys_by_id) == {item.id for item in b.items}


def test_a_slice_whose_folder_has_since_gained_metadata_is_indexed_anew_by_its_completion(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    # The slice was embedded from the bare folder (each item placed by the model); a metadata file
    # written before its completion ran places the rest by their categories. Adding the rest would
    # leave the bundle half one way, half the other: the whole catalogue is embedded anew instead.
    folder = make_catalogue(tmp_path / "cat", count=8)
    store = BundleStore(tmp_path / "bundles")
    options = IndexOptions(threshold=0.0, max_parts=1, workers=0, labels_from="kind")
    made_from = slice_before_its_metadata(folder, store, tiny_checkpoint, options, first=3)
    assert made_from["metadata"] is None and not made_from["complete"]
    kinds = ["red", "blue", "green", "red", "blue", "green", "red", "blue"]
    add_field(folder, "kind", kinds)
    now = load_catalogue(folder)  # as the completion job reads it: the folder, the slice's (no) metadata
    assert now.metadata == str(folder / "metadata.csv")

    version = complete_bundle(store, tiny_checkpoint, now, options=options, queued_for=(str(folder), None))
    bundle = store.open()
    assert version == bundle.version and bundle.complete and bundle.manifest["parent"] is None  # not the slice's
    assert bundle.manifest["catalogue"]["metadata"] == str(folder / "metadata.csv")
    assert {record.id: record.metadata["parts"] for record in bundle.items.values()} == {
        f"p{i}": [kind] for i, kind in enumerate(kinds)
    }

    # Metadata that names other ids than the photos' does not replace a slice by a handful of items
    store_b = BundleStore(tmp_path / "bundles-b")
    slice_before_its_metadata(folder, store_b, tiny_checkpoint, options, first=3)
    kinds_file = (folder / "metadata.csv").read_text()
    (folder / "metadata.csv").write_text("id,kind\nsku-1,red\nsku-2,blue\n")
    with pytest.raises(IndexerError, match="fewer than the 3 required"):
        complete_bundle(
            store_b, tiny_checkpoint, load_catalogue(folder), options=options, queued_for=(str(folder), None)
        )
    assert not store_b.open().complete and len(store_b.open().items) == 3  # the slice stays and serves
    (folder / "metadata.csv").write_text(kinds_file)

    # A slice of the same folder read with another metadata file: a completion queued for the
    # slice before it (no metadata) is not for this one, and adds nothing.
    other = tmp_path / "other.csv"
    other.write_text((folder / "metadata.csv").read_text())
    slice_version = build_bundle(store, tiny_checkpoint, load_catalogue(folder, other), options, first=3)
    assert complete_bundle(store, tiny_checkpoint, now, options=options, queued_for=(str(folder), None)) is None
    assert store.current_version() == slice_version and not store.open().complete
