"""FAISS index construction: the factory string by catalogue size, training, GPU when present."""

from __future__ import annotations

import logging
import math

import faiss
import numpy as np

log = logging.getLogger(__name__)

EXACT_BELOW = 50_000  # vectors per index under which search is exact (brute force is fast enough)


def choose_factory(count: int, exact_below: int = EXACT_BELOW) -> str:
    """Exact search for small indexes; an inverted file with 4·√n lists above ``exact_below``."""
    if count < exact_below:
        return "IDMap2,Flat"
    nlist = int(min(65536, 2 ** round(math.log2(4 * math.sqrt(count)))))
    return f"IVF{nlist},Flat"


def gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def build_index(
    vectors: np.ndarray, ids: np.ndarray, factory: str | None = None, use_gpu: bool | None = None
) -> faiss.Index:
    """An index over ``vectors`` (n, d) float32 with int64 ``ids``; trained on a sample if needed.

    Vectors are L2-normalised embeddings; the metric is L2, so distance = 2 − 2·cosine.
    """
    count, dim = vectors.shape
    spec = factory or choose_factory(count)
    index = faiss.index_factory(dim, spec)
    use_gpu = gpu_available() if use_gpu is None else use_gpu
    if use_gpu:  # train and add on the GPU, hand back a CPU index to write
        resources = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(resources, 0, index)
    if not index.is_trained:
        sample = vectors[np.random.default_rng(0).permutation(count)[: 256 * max(1, _nlist(spec))]]
        index.train(sample)
    if count:
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))
    if use_gpu:
        index = faiss.index_gpu_to_cpu(index)
    return index


def _nlist(spec: str) -> int:
    for token in spec.split(","):
        if token.startswith("IVF"):
            return int("".join(ch for ch in token[3:] if ch.isdigit()) or 1)
    return 1


def copy_in_memory(index: faiss.Index) -> faiss.Index:
    """A copy of ``index`` in memory (for incremental changes to a read-only, memory-mapped one)."""
    return faiss.clone_index(index)
