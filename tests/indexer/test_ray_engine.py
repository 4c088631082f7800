"""Indexing on Ray Data (a local 2-CPU Ray, as a user without a cluster would start it): the same
bundle as the single-process engine, skipped photos reported the same way."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest

from indexer.__main__ import _options, _parser
from indexer.build import IndexOptions, build_bundle
from indexer.bundle import Bundle, BundleStore
from indexer.catalogue import load_catalogue
from indexer.ray_embed import RayOptions
from tests.helpers import make_catalogue

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def contents(bundle: Bundle) -> dict[str, dict[str, np.ndarray]]:
    """label -> {item id: vector}, the global index under ""."""
    indexes = {**bundle.part_indexes, "": bundle.global_index}
    out = {}
    for label, index in indexes.items():
        keys = faiss.vector_to_array(index.id_map)
        out[label] = {bundle.items[int(k)].id: index.reconstruct(int(k)) for k in keys}
    return out


def test_ray_builds_the_bundle_the_single_process_engine_builds(
    tmp_path: Path, tiny_checkpoint: Path, local_ray: None
) -> None:
    folder = make_catalogue(tmp_path / "cat", count=11, bad=True)
    # Some products name their category (their whole photo is then their part), the others are
    # placed by the model's predicted labels (their crops): both paths, through Ray and not.
    rows = (folder / "metadata.csv").read_text().splitlines()
    kinds = ["blue" if i % 3 == 0 else "" for i in range(len(rows) - 1)]
    (folder / "metadata.csv").write_text(
        "\n".join([rows[0] + ",kind"] + [f"{r},{k}" for r, k in zip(rows[1:], kinds, strict=True)]) + "\n"
    )
    catalogue = load_catalogue(folder)
    for item in catalogue.items:  # an empty field names no category
        if not item.metadata.get("kind"):
            item.metadata.pop("kind", None)
    built = {}
    for engine in ("local", "ray"):
        store = BundleStore(tmp_path / engine)
        options = IndexOptions(
            threshold=0.0,
            max_parts=2,
            batch_size=4,
            workers=0,
            engine=engine,
            labels_from="kind",  # type: ignore[arg-type]
        )
        build_bundle(store, tiny_checkpoint, catalogue, options)
        built[engine] = store.open()
    local, distributed = built["local"], built["ray"]
    assert distributed.manifest["options"]["engine"] == "ray" and local.manifest["options"]["engine"] == "local"
    assert distributed.manifest["items"] == local.manifest["items"] == 11
    by_kind = {r.id: r.metadata["parts"] for r in local.items.values()}
    assert by_kind["p0"] == ["blue"] and len(by_kind["p1"]) == 2  # one known category; two predicted parts
    assert distributed.manifest["skipped"] == local.manifest["skipped"]  # the broken photos, with their reasons
    assert {"empty", "text", "truncated", "huge"} <= {s["id"] for s in distributed.manifest["skipped"]}
    assert [(r.key, r.id, r.metadata) for r in distributed.items.values()] == [
        (r.key, r.id, r.metadata) for r in local.items.values()
    ]
    theirs, ours = contents(local), contents(distributed)
    assert set(theirs) == set(ours)
    for label in theirs:
        assert set(theirs[label]) == set(ours[label]), label
        for item_id, vector in theirs[label].items():
            np.testing.assert_allclose(ours[label][item_id], vector, atol=1e-5)


def test_the_command_line_names_the_engine_and_the_cluster() -> None:
    args = _parser().parse_args(
        [
            "build",
            "--catalogue",
            "c",
            "--checkpoint",
            "m.pt",
            "--engine",
            "ray",
            "--ray-address",
            "auto",
            "--ray-actors",
            "3",
        ]
    )
    options = _options(args)
    assert options.engine == "ray" and options.ray == RayOptions(address="auto", actors=3)
    assert _options(_parser().parse_args(["build", "--catalogue", "c", "--checkpoint", "m.pt"])).engine == "local"
