from pathlib import Path

import faiss
import numpy as np

from indexer.bundle import Bundle, BundleStore, ItemRecord, new_version, write_bundle
from indexer.faiss_index import build_index, choose_factory
from indexer.search import QueryPart, recommend_global, recommend_parts


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def random_bundle(tmp_path: Path, labels: dict[str, list[int]], dim: int = 16, items: int = 20) -> tuple[Bundle, dict]:
    rng = np.random.default_rng(0)
    vectors = {label: unit(rng.normal(size=(len(keys), dim))) for label, keys in labels.items()}
    part_indexes = {label: build_index(vectors[label], np.asarray(keys)) for label, keys in labels.items()}
    whole = unit(rng.normal(size=(items, dim)))
    store = BundleStore(tmp_path)
    version = new_version()
    records = [ItemRecord(k, f"item{k}", {"n": k}) for k in range(items)]
    manifest = {"version": version, "model": {"sha256": "x"}}
    write_bundle(store.staging(version), manifest, records, part_indexes, build_index(whole, np.arange(items)))
    store.publish(version)
    return store.open(), vectors


def test_exact_search_agrees_with_brute_force(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    base = unit(rng.normal(size=(500, 32)))
    queries = unit(rng.normal(size=(20, 32)))
    ids = np.arange(1000, 1500)
    index = build_index(base, ids)
    assert choose_factory(500) == "IDMap2,Flat"
    distances, found = index.search(queries, 5)
    brute = ((queries[:, None] - base[None]) ** 2).sum(-1)
    order = np.argsort(brute, axis=1)[:, :5]
    np.testing.assert_array_equal(found, ids[order])
    np.testing.assert_allclose(distances, np.take_along_axis(brute, order, 1), rtol=1e-4, atol=1e-5)


def recall_at(found: np.ndarray, exact: np.ndarray) -> float:
    """Share of the exact k nearest neighbours that a search returned, over all queries."""
    return float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact, strict=True)]))


def test_approximate_search_trades_recall_for_probes() -> None:
    assert choose_factory(1_000_000, 4096) == "PCA256,IVF4096,SQ8"  # 4·√n lists, rounded to a power of two
    assert choose_factory(100_000, 128) == "IVF1024,SQ8"  # already compact: no reduction
    rng = np.random.default_rng(0)
    base = unit(rng.normal(size=(2000, 8)))
    queries = unit(rng.normal(size=(200, 8)))  # held out: not in the index
    ids = np.arange(5000, 7000)
    index = build_index(base, ids, factory="IVF16,Flat", use_gpu=False)
    ivf = faiss.extract_index_ivf(index)  # raises unless it is an inverted file
    assert ivf.nlist == 16 and index.ntotal == 2000
    brute = ((queries[:, None] - base[None]) ** 2).sum(-1)
    exact = ids[np.argsort(brute, axis=1)[:, :10]]

    recall = {}
    for nprobe in (1, 4, 16):
        ivf.nprobe = nprobe
        distances, found = index.search(queries, 10)
        recall[nprobe] = recall_at(found, exact)
        # approximate in which vectors it visits, exact in what it reports of them: each returned
        # distance is that item's true distance, nearest first
        true = np.take_along_axis(brute, found - 5000, 1)
        np.testing.assert_allclose(distances, true, rtol=1e-4, atol=1e-5)
        assert (np.diff(distances, axis=1) >= 0).all()
    # one list of 16 finds about half of the true 10 nearest (chance: 10 of 2000 = 0.5%); a quarter
    # of the lists nearly all, but not all, so the search is really approximate; every list: exact
    assert 0.3 < recall[1] < 0.8
    assert 0.85 < recall[4] < 1.0
    assert recall[16] == 1.0

    # an indexed vector lives in the list of its nearest centroid, the list a query for it probes
    # first: even one probe finds every stored vector itself
    ivf.nprobe = 1
    _, found = index.search(base, 1)
    np.testing.assert_array_equal(found[:, 0], ids)


def test_parts_get_distinct_items(tmp_path: Path) -> None:
    # two labels whose indexes hold the same items: the second part must take its next-best
    bundle, vectors = random_bundle(tmp_path, {"bag": [0, 1, 2], "shoes": [0, 1, 2]})
    query = vectors["bag"][1]
    parts = [QueryPart("bag", 0.9, query), QueryPart("shoes", 0.8, vectors["shoes"][1])]
    first = recommend_parts(bundle, parts, candidates=1)
    ids = [m.match.item_id for m in first if m.match]
    assert len(set(ids)) == 2 and ids[0] == "item1"
    assert first[0].match is not None and first[0].match.metadata == {"n": 1}


def test_exclusions_filters_and_exhaustion(tmp_path: Path) -> None:
    bundle, vectors = random_bundle(tmp_path, {"bag": [0, 1], "hat": [0]})
    parts = [
        QueryPart("bag", 0.9, vectors["bag"][0]),
        QueryPart("hat", 0.5, vectors["hat"][0]),
        QueryPart("scarf", 0.4, vectors["hat"][0]),
    ]
    out = recommend_parts(bundle, parts, exclude_ids={"item0"})
    assert [p.part.label for p in out] == ["bag", "hat"]  # no scarf index: dropped
    assert out[0].match is not None and out[0].match.item_id == "item1"  # the query item is excluded
    assert out[1].match is None  # the hat index holds only the excluded item
    only_hat = recommend_parts(bundle, parts, labels={"hat"})
    assert [p.part.label for p in only_hat] == ["hat"]


def test_global_baseline_returns_distinct_nearest(tmp_path: Path) -> None:
    bundle, _ = random_bundle(tmp_path, {"bag": [0]})
    query = np.asarray(bundle.global_index.reconstruct(4))
    matches = recommend_global(bundle, query, 3, exclude_ids={"item9"})
    assert matches[0].item_id == "item4" and matches[0].distance < 1e-6
    assert len({m.item_id for m in matches}) == 3 and "item9" not in {m.item_id for m in matches}


def test_a_compact_index_gets_the_nprobe_that_reaches_the_recall_target_and_keeps_it() -> None:
    from indexer.faiss_index import RECALL_TARGET, compact_factory, tune_on_own_vectors

    rng = np.random.default_rng(0)
    # Like real embeddings: clustered, in a subspace of fewer dimensions than they are written in
    # (and than the PCA keeps), wider than the PCA's 256.
    lift = rng.normal(size=(64, 300))
    centres = rng.normal(size=(50, 64))

    def draw(count: int) -> np.ndarray:
        return unit((centres[rng.integers(0, 50, count)] + 0.5 * rng.normal(size=(count, 64))) @ lift)

    base = draw(6000)
    ids = np.arange(10_000, 16_000)
    factory = compact_factory(len(base), 300)
    assert factory == "PCA256,IVF256,SQ8"
    index = build_index(base, ids, factory=factory, use_gpu=False)
    tuned = tune_on_own_vectors(index, base, ids)
    assert tuned is not None and tuned["recall_at_10"] >= RECALL_TARGET and 1 < tuned["nprobe"] < 256
    ivf = faiss.extract_index_ivf(index)
    assert ivf.nprobe == tuned["nprobe"]
    pca = faiss.downcast_VectorTransform(index.chain.at(0))
    assert pca.A.size() == 256 * 300 and pca.PCAMat.size() == 0  # only what search needs is kept
    queries = draw(200)
    _, exact = faiss.knn(queries.astype(np.float32), base.astype(np.float32), 10)
    ivf.nprobe = tuned["nprobe"] // 2  # one step less finds fewer of the true neighbours of new queries
    fewer = recall_at(index.search(queries, 10)[1], ids[exact])
    ivf.nprobe = tuned["nprobe"]
    assert fewer < recall_at(index.search(queries, 10)[1], ids[exact])
    ivf.nprobe = tuned["nprobe"] // 2
    again = faiss.deserialize_index(faiss.serialize_index(index))
    assert faiss.extract_index_ivf(again).nprobe == tuned["nprobe"] // 2  # written with the index

    index.remove_ids(ids[:100])  # deletes still work through the PCA and the inverted file
    assert index.ntotal == 5900
    _, found = index.search(base[:100], 5)
    assert not set(found.ravel()) & set(ids[:100].tolist())


def test_exact_indexes_need_no_tuning() -> None:
    from indexer.faiss_index import tune_on_own_vectors

    base = unit(np.random.default_rng(0).normal(size=(300, 16)))
    index = build_index(base, np.arange(300), use_gpu=False)
    assert tune_on_own_vectors(index, base, np.arange(300)) is None
