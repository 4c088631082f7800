"""FAISS index construction: the factory string by catalogue size, training, GPU when present."""

from __future__ import annotations

import logging
import math

import faiss
import numpy as np

log = logging.getLogger(__name__)

EXACT_BELOW = 50_000  # vectors per index under which search is exact (brute force is fast enough)
COMPACT_DIM = 256  # dimensions a compact index keeps (PCA), from the part vector's 320
RECALL_TARGET = 0.95  # recall@10 against exact search that nprobe is chosen to reach
TRAIN_PER_LIST = 64  # k-means training vectors per inverted list (FAISS warns below 39)


def choose_factory(count: int, dim: int | None = None, exact_below: int = EXACT_BELOW) -> str:
    """Exact search for small indexes; a compact approximate one above ``exact_below`` vectors."""
    return "IDMap2,Flat" if count < exact_below else compact_factory(count, dim)


def compact_factory(count: int, dim: int | None = None) -> str:
    """PCA to COMPACT_DIM dimensions, an inverted file of 4·√n lists, 8-bit scalar codes: 264 bytes
    an item (code and id) whatever the model's dimension, and removal by id still works."""
    nlist = int(min(65536, max(1, 2 ** round(math.log2(4 * math.sqrt(count))))))
    reduce = f"PCA{COMPACT_DIM}," if dim is None or dim > COMPACT_DIM else ""
    return f"{reduce}IVF{nlist},SQ8"


def train_sample_size(factory: str, count: int) -> int:
    """Vectors to train ``factory`` on: TRAIN_PER_LIST per inverted list, and enough for the PCA."""
    needed = TRAIN_PER_LIST * _nlist(factory)
    if factory.startswith("PCA"):
        needed = max(needed, 4 * COMPACT_DIM)
    return min(count, needed)


def tune_nprobe(
    index: faiss.Index,
    queries: np.ndarray,
    exact: np.ndarray,
    target: float = RECALL_TARGET,
    exclude: np.ndarray | None = None,
) -> dict[str, float] | None:
    """Set the smallest nprobe (a power of two) at which ``index`` finds ``target`` of the exact
    neighbours ``exact`` (queries × k ids) of ``queries``; ``exclude`` names, per query, an id never
    to count (the query itself, when it is an indexed vector). Returns nprobe and the recall it
    reached (the index keeps that nprobe, and FAISS writes it with the index); None if not an IVF."""
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return None
    k = exact.shape[1]
    recall, nprobe = 0.0, 1
    while True:
        ivf.nprobe = nprobe
        _, found = index.search(queries, k + (exclude is not None))
        if exclude is not None:
            found = np.array([[i for i in row if i != own][:k] for row, own in zip(found, exclude, strict=True)])
        recall = float(np.mean([len(set(f) & set(e)) / k for f, e in zip(found, exact, strict=True)]))
        if recall >= target or nprobe >= ivf.nlist:
            if recall < target:
                log.warning("recall@%d %.3f stays under %.2f even probing every list", k, recall, target)
            return {"nprobe": nprobe, "recall_at_10": round(recall, 4)}
        nprobe = min(2 * nprobe, ivf.nlist)


def tune_on_own_vectors(
    index: faiss.Index, vectors: np.ndarray, ids: np.ndarray, queries: int = 200, k: int = 10
) -> dict[str, float] | None:
    """tune_nprobe with ``queries`` of the index's own vectors as queries (each one's own id left
    out), their exact neighbours found by brute force over all of ``vectors``."""
    if not _is_ivf(index) or len(vectors) <= k + 1:
        return None
    chosen = np.random.default_rng(0).choice(len(vectors), min(queries, len(vectors)), replace=False)
    _, nearest = faiss.knn(vectors[chosen], vectors, k + 1)
    own = ids[chosen]
    exact = np.array([[i for i in ids[row] if i != o][:k] for row, o in zip(nearest, own, strict=True)])
    return tune_nprobe(index, vectors[chosen], exact, exclude=own)


def _is_ivf(index: faiss.Index) -> bool:
    try:
        faiss.extract_index_ivf(index)
    except RuntimeError:
        return False
    return True


def gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def build_index(
    vectors: np.ndarray,
    ids: np.ndarray,
    factory: str | None = None,
    use_gpu: bool | None = None,
    exact_below: int = EXACT_BELOW,
) -> faiss.Index:
    """An index over ``vectors`` (n, d) float32 with int64 ``ids``; trained on a sample if needed.

    Vectors are L2-normalised embeddings; the metric is L2, so distance = 2 − 2·cosine.
    """
    count, dim = vectors.shape
    spec = factory or choose_factory(count, dim, exact_below)
    index = faiss.index_factory(dim, spec)
    use_gpu = gpu_available() if use_gpu is None else use_gpu
    if use_gpu:  # train and add on the GPU, hand back a CPU index to write
        resources = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(resources, 0, index)
    if not index.is_trained:
        train(index, vectors[np.random.default_rng(0).permutation(count)[: train_sample_size(spec, count)]])
    if count:
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))
    if use_gpu:
        index = faiss.index_gpu_to_cpu(index)
    return index


def train(index: faiss.Index, sample: np.ndarray) -> None:
    """Train ``index`` on ``sample``, then drop what only training needs: a PCA keeps its d × d
    eigenvector matrix (64 MB at d = 4,096) though searching uses only its first COMPACT_DIM rows."""
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    if isinstance(index, faiss.IndexPreTransform):
        chain = index.chain  # a C++ vector (the stubs call it a list)
        for i in range(chain.size()):  # type: ignore[attr-defined]
            transform = faiss.downcast_VectorTransform(chain.at(i))  # type: ignore[attr-defined]
            if isinstance(transform, faiss.PCAMatrix):
                transform.PCAMat.clear()


def is_exact(index: faiss.Index) -> bool:
    """Whether ``index`` is an exact ``IDMap2,Flat`` one (its vectors read back as stored)."""
    return isinstance(index, faiss.IndexIDMap2) and isinstance(faiss.downcast_index(index.index), faiss.IndexFlat)


def exact_contents(index: faiss.IndexIDMap2) -> tuple[np.ndarray, np.ndarray]:
    """The vectors and ids an exact index holds (see is_exact)."""
    flat = faiss.downcast_index(index.index)
    return flat.reconstruct_n(0, flat.ntotal), faiss.vector_to_array(index.id_map).astype(np.int64)


def _nlist(spec: str) -> int:
    for token in spec.split(","):
        if token.startswith("IVF"):
            return int("".join(ch for ch in token[3:] if ch.isdigit()) or 1)
    return 1
