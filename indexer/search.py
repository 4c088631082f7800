"""Search a bundle: one nearest catalogue item per query part, every item different.

Parts are served in the order given (best score first). Each part takes its nearest item that is
not excluded and not already taken by an earlier part; when all of a part's candidates are taken,
the search widens (doubling) before the part is given up.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from indexer.bundle import Bundle

MAX_WIDENING = 4096  # candidates at most per part before it is given up
DEFAULT_MAX_PARTS = 6  # parts (or global items) per query: chosen on validation, bench/part_threshold.py
DEFAULT_CANDIDATES = 10  # neighbours searched per part before widening


@dataclass
class QueryPart:
    label: str
    score: float
    embedding: np.ndarray  # (E,)
    box: tuple[float, float, float, float] | None = None
    index_label: str | None = None  # the label whose index answers it (None: ``label``'s)
    confident: bool = True  # its group reached the part threshold (model.network.query_parts)

    @property
    def answered_from(self) -> str:
        return self.index_label or self.label


@dataclass
class Match:
    item_id: str
    distance: float  # squared L2 between unit vectors: 2 − 2·cosine
    metadata: dict[str, Any]


@dataclass
class PartMatch:
    part: QueryPart
    match: Match | None  # None: no free item in that label's index


def _search(index: Any, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    k = max(1, min(k, index.ntotal))
    distances, keys = index.search(np.ascontiguousarray(vector[None], dtype=np.float32), k)
    return distances[0], keys[0]


def _first_free(bundle: Bundle, index: Any, vector: np.ndarray, candidates: int, blocked: set[str]) -> Match | None:
    k = candidates
    while True:
        distances, keys = _search(index, vector, k)
        for distance, key in zip(distances, keys, strict=True):
            if key < 0:
                continue
            record = bundle.items.get(int(key))
            if record is not None and record.id not in blocked:  # None: a vector without a record
                return Match(record.id, float(distance), record.metadata)
        if k >= index.ntotal or k >= MAX_WIDENING:
            return None
        k *= 2


def recommend_parts(
    bundle: Bundle,
    parts: Sequence[QueryPart],
    candidates: int = DEFAULT_CANDIDATES,
    exclude_ids: Collection[str] = (),
    labels: Collection[str] | None = None,
) -> list[PartMatch]:
    """One distinct item per part, from the index of its ``answered_from`` label; parts whose
    label has no index (or is filtered out by ``labels``) are dropped."""
    blocked = set(exclude_ids)
    out = []
    for part in parts:
        if labels is not None and part.answered_from not in labels:
            continue
        index = bundle.part_indexes.get(part.answered_from)
        if index is None or index.ntotal == 0:
            continue
        match = _first_free(bundle, index, part.embedding, candidates, blocked)
        if match is not None:
            blocked.add(match.item_id)
        out.append(PartMatch(part, match))
    return out


def recommend_global(
    bundle: Bundle, embedding: np.ndarray, count: int, exclude_ids: Collection[str] = ()
) -> list[Match]:
    """The baseline: the ``count`` nearest distinct items to one whole-image embedding."""
    blocked = set(exclude_ids)
    out: list[Match] = []
    index = bundle.global_index
    while len(out) < count:
        match = _first_free(bundle, index, embedding, count + len(blocked), blocked)
        if match is None:
            break
        blocked.add(match.item_id)
        out.append(match)
    return out
