"""Per-label FAISS indexes from 10^4 to 10^6 vectors that follow the real part vectors.

    python bench/index_scale.py --bundles bundles --sizes 10000,100000,1000000 --out reports/index_scale.json

The real part vectors (every label's index of the live bundle) give the distribution: their mean
and covariance (the top principal directions exactly, the rest as an isotropic residual), from which
vectors are drawn and L2-normalised as the model's are. For each size: the factory the indexer
chooses (indexer.faiss_index.choose_factory), build time, bytes per item, single-query latency at one
thread, and recall@1 / recall@10 against exact search on the full-dimensional vectors, for 200
held-out queries drawn the same way; nprobe is chosen by the indexer's rule (tune_nprobe: the
smallest power of two reaching recall@10 0.95) on 200 other queries. The same is reported on the
real vectors themselves, with the compact factory forced.
Vectors are generated in chunks and exact neighbours merged chunk by chunk, so 10^6 × 4096 floats
never sit in memory at once.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from indexer.bundle import BundleStore  # noqa: E402
from indexer.faiss_index import choose_factory, compact_factory, train_sample_size, tune_nprobe  # noqa: E402
from indexer.faiss_index import train as train_index  # noqa: E402

CHUNK = 50_000
QUERIES = 400  # 200 to choose nprobe, 200 held out to report
K = 10


def real_vectors(bundles: Path) -> np.ndarray:
    """Every part vector of the live bundle (the indexes are exact: their vectors read back as stored)."""
    bundle = BundleStore(bundles).open(mmap=False)
    parts = []
    for index in bundle.part_indexes.values():
        flat = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
        parts.append(flat.reconstruct_n(0, flat.ntotal))
    return np.concatenate(parts).astype(np.float32)


class Distribution:
    """A Gaussian with the real vectors' mean and covariance: ``rank`` principal directions exactly,
    the remaining variance added as isotropic noise over all dimensions; samples are L2-normalised."""

    def __init__(self, real: np.ndarray, rank: int = 1024) -> None:
        self.mean = real.mean(0)
        centred = real - self.mean
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        variances = s**2 / (len(real) - 1)
        self.rank = min(rank, len(s))
        self.components = vt[: self.rank].astype(np.float32)
        self.scales = np.sqrt(variances[: self.rank]).astype(np.float32)
        self.residual = float(np.sqrt(variances[self.rank :].sum() / real.shape[1]))
        self.explained = float(variances[: self.rank].sum() / variances.sum())

    def sample(self, count: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        z = rng.standard_normal((count, self.rank), dtype=np.float32) * self.scales
        x = self.mean + z @ self.components
        x += rng.standard_normal(x.shape, dtype=np.float32) * self.residual
        return x / np.linalg.norm(x, axis=1, keepdims=True)


def merge_topk(best_d: np.ndarray, best_i: np.ndarray, d: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    all_d, all_i = np.concatenate([best_d, d], 1), np.concatenate([best_i, i], 1)
    order = np.argsort(all_d, 1)[:, :K]
    return np.take_along_axis(all_d, order, 1), np.take_along_axis(all_i, order, 1)


def measure(factory: str, chunks, count: int, dim: int, queries: np.ndarray, train: np.ndarray) -> dict:  # type: ignore[no-untyped-def,type-arg]
    """Build ``factory`` over the vectors ``chunks`` yields, tracking exact neighbours of ``queries``:
    the first half choose nprobe (as the indexer does on its own vectors), the second half, never
    used to choose, give the recall and latency reported."""
    started = time.perf_counter()
    index = faiss.index_factory(dim, factory)
    if not index.is_trained:
        train_index(index, train)
    train_s = time.perf_counter() - started
    best_d = np.full((len(queries), K), np.inf, dtype=np.float32)
    best_i = np.full((len(queries), K), -1, dtype=np.int64)
    add_s, first = 0.0, 0
    for chunk in chunks:
        ids = np.arange(first, first + len(chunk), dtype=np.int64)
        started = time.perf_counter()
        index.add_with_ids(chunk, ids)
        add_s += time.perf_counter() - started
        d, i = faiss.knn(queries, chunk, K)
        best_d, best_i = merge_topk(best_d, best_i, d, i + first)
        first += len(chunk)
    assert first == count
    half = len(queries) // 2
    tuned = tune_nprobe(index, queries[:half], best_i[:half])
    queries, best_i = queries[half:], best_i[half:]
    faiss.omp_set_num_threads(1)
    latencies = []
    found = np.empty((len(queries), K), dtype=np.int64)
    for q in range(len(queries)):
        started = time.perf_counter()
        _, found[q : q + 1] = index.search(queries[q : q + 1], K)
        latencies.append(time.perf_counter() - started)
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    recall1 = float(np.mean(found[:, 0] == best_i[:, 0]))
    recall10 = float(np.mean([len(set(f) & set(e)) / K for f, e in zip(found, best_i, strict=True)]))
    size = len(faiss.serialize_index(index))
    return {
        "vectors": count,
        "factory": factory,
        "nprobe": tuned["nprobe"] if tuned else None,
        "train_s": round(train_s, 1),
        "add_s": round(add_s, 1),
        "bytes_per_item": round(size / count, 1),
        "index_mb": round(size / 2**20, 1),
        "query_ms_p50_1_thread": round(1000 * float(np.percentile(latencies, 50)), 3),
        "query_ms_p99_1_thread": round(1000 * float(np.percentile(latencies, 99)), 3),
        "recall_at_1": round(recall1, 4),
        "recall_at_10": round(recall10, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundles", type=Path, default=ROOT / "bundles")
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--factory", default=None, help="force this factory at every size (default: the indexer's)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "index_scale.json")
    args = parser.parse_args()

    real = real_vectors(args.bundles)
    dim = real.shape[1]
    dist = Distribution(real)
    print(f"{len(real)} real vectors, d={dim}; top {dist.rank} directions hold {dist.explained:.1%} of the variance")
    rows = []
    # The real vectors themselves, with the compact factory forced (400 held out as queries).
    rng = np.random.default_rng(1)
    order = rng.permutation(len(real))
    queries, base = real[order[:QUERIES]], real[order[QUERIES:]]
    factory = compact_factory(len(base), dim)
    train = base[rng.permutation(len(base))[: train_sample_size(factory, len(base))]]
    rows.append({"data": "real part vectors", **measure(factory, [base], len(base), dim, queries, train)})
    print(json.dumps(rows[-1]), flush=True)
    for size in (int(s) for s in args.sizes.split(",")):
        factory = args.factory or choose_factory(size, dim)
        queries = dist.sample(QUERIES, seed=10**9)  # held out: never added
        train = dist.sample(train_sample_size(factory, size), seed=10**9 + 1)
        chunks = (dist.sample(min(CHUNK, size - start), seed=start) for start in range(0, size, CHUNK))
        rows.append({"data": "drawn like the real vectors", **measure(factory, chunks, size, dim, queries, train)})
        print(json.dumps(rows[-1]), flush=True)
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "faiss": faiss.__version__,
        "real_vectors": len(real),
        "dim": dim,
        "distribution": {"rank": dist.rank, "variance_explained": round(dist.explained, 4)},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
