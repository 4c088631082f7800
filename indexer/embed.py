"""Stream catalogue images through the model: decode in parallel workers, batched forwards.

For each readable item: its whole-image embedding and, for every item label predicted above the
threshold (the best few at most), that label's part embedding. Unreadable items are reported with a
reason and never stop the run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from indexer.catalogue import CatalogueItem
from indexer.errors import IndexerError
from model.imaging import DEFAULT_LIMITS, PHOTO_FORMATS, ImageDecodeError, ImageLimits, load_input
from model.look import mix_product_look
from model.network import NetworkOutput, Part, PartAttentionNetwork, product_parts, select_parts
from model.runtime import Forward, make_forward

log = logging.getLogger(__name__)
LOG_EVERY_S = 30.0  # progress lines when no progress bar is shown (logs, CI, containers)
DEFAULT_WORKER_TIMEOUT_S = 120.0  # a batch of decoded photos takes seconds; minutes of silence is a hang
SMALL_JOB = 64  # fewer items than this are decoded in the calling process
# How PyTorch's DataLoader says that a worker died or went silent.
WORKER_TROUBLE = ("DataLoader timed out", "DataLoader worker", "exited unexpectedly")
KnownLabels = Callable[[CatalogueItem], list[str] | None]  # an item's labels from its metadata, or None


@dataclass
class ItemParts:
    id: str
    global_embedding: np.ndarray  # (E_global,)
    parts: list[tuple[str, float, np.ndarray]]  # (label, probability, embedding)


@dataclass
class Skipped:
    id: str
    path: str
    reason: str


class _Decoded(Dataset[tuple[int, torch.Tensor | None, str]]):
    def __init__(self, items: Sequence[CatalogueItem], size: tuple[int, int], limits: ImageLimits) -> None:
        self.items, self.size, self.limits = items, size, limits

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str]:
        try:
            return i, load_input(self.items[i].path, self.size, self.limits, PHOTO_FORMATS)[0], ""
        except ImageDecodeError as exc:
            return i, None, str(exc)


def _collate(
    batch: list[tuple[int, torch.Tensor | None, str]],
) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    good = [(i, x) for i, x, _ in batch if x is not None]
    errors = [(i, reason) for i, x, reason in batch if x is None]
    images = torch.stack([x for _, x in good]) if good else None
    return [i for i, _ in good], images, errors


@torch.inference_mode()
def embed_items(
    model: PartAttentionNetwork,
    items: Sequence[CatalogueItem],
    *,
    threshold: float,
    max_parts: int,
    batch_size: int = 32,
    workers: int = 2,
    device: str = "cpu",
    limits: ImageLimits = DEFAULT_LIMITS,
    progress: bool | None = None,
    known_labels: KnownLabels | None = None,
    worker_timeout_s: float = DEFAULT_WORKER_TIMEOUT_S,
    forward: Forward | None = None,
) -> Iterator[ItemParts | Skipped]:
    """Yield, in catalogue order per batch, each item's embeddings or the reason it was skipped.

    ``known_labels`` may give an item's labels (from its metadata). Otherwise a model with a product
    head gives the item its one category (model.products). Either way the item is a product of
    known category, and its part embedding is its whole photo's. A model without a product head
    places an item by the street labels it predicts, each part with its own crop's embedding.

    Decode workers start from a fork server, not by forking this process: the service runs jobs
    beside its own threads, and a fork taken while another thread holds a lock can kill the child.
    A batch not delivered within ``worker_timeout_s`` fails the run (IndexerError) instead of
    waiting for ever, e.g. when a container's /dev/shm is too small to hand batches over.
    ``forward``: the model's forward on another runtime (model.runtime); None: the model itself.
    """
    size = (model.config.image_height, model.config.image_width)
    if len(items) < SMALL_JOB:
        workers = 0  # starting decode workers (each imports torch) costs more than decoding a few photos
    loader = DataLoader(
        _Decoded(items, size, limits),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
        persistent_workers=False,
        multiprocessing_context="forkserver" if workers > 0 else None,
        timeout=worker_timeout_s if workers > 0 else 0,
    )
    model.eval().to(device)
    forward = forward or make_forward(model, "pytorch", "", device=device)
    rate = _RateLog(len(items))
    with tqdm(
        total=len(items), desc="embedding", unit="item", disable=None if progress is None else not progress
    ) as bar:
        for indices, images, errors in _batches(loader, worker_timeout_s) if workers else loader:
            for i, reason in errors:
                yield Skipped(items[i].id, str(items[i].path), reason)
            if images is not None:
                out = forward(images)
                glob = out.global_embedding.float().cpu().numpy()
                for row, i in enumerate(indices):
                    fixed = known_labels(items[i]) if known_labels else None
                    yield ItemParts(items[i].id, glob[row], item_parts(model, out, row, fixed, threshold, max_parts))
            bar.update(len(indices) + len(errors))
            if bar.disable:
                rate.advance(len(indices) + len(errors))


def _batches(
    loader: DataLoader[tuple[int, torch.Tensor | None, str]], timeout_s: float
) -> Iterator[tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]]:
    """The loader's batches; a worker that died or went silent becomes one clear IndexerError."""
    batches = iter(loader)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except RuntimeError as exc:
            if not any(words in str(exc) for words in WORKER_TROUBLE):
                raise  # not the workers' trouble: a bug keeps its traceback
            raise IndexerError(
                f"image decoding stopped: {str(exc).strip().splitlines()[0]} (a decode worker died or sent "
                f"nothing for {timeout_s:.0f} s; in a container, give it more /dev/shm, e.g. shm_size: 1gb, "
                "or index with --workers 0)"
            ) from exc
        yield batch


def item_parts(
    model: PartAttentionNetwork,
    out: NetworkOutput,
    row: int,
    fixed: list[str] | None,
    threshold: float,
    max_parts: int,
) -> list[tuple[str, float, np.ndarray]]:
    """Photo ``row``'s (label, probability, embedding) parts; none for a model without attention.
    ``fixed``: the item's labels from its metadata, None when it names none."""
    if model.config.architecture != "attention":
        return []
    if fixed is None:  # nothing known from metadata: the product head, where there is one
        fixed = product_parts(model, out, row)
    chosen = select_parts(model, out, row, None, threshold, max_parts, labels=fixed)
    if fixed is None:  # placed by its predicted labels: each part by its own crop
        return [(p.label, p.score, p.embedding.float().cpu().numpy()) for p in chosen]
    return [(p.label, p.score, product_vector(model, out, row, p)) for p in chosen]


def product_vector(model: PartAttentionNetwork, out: NetworkOutput, row: int, part: Part) -> np.ndarray:
    """The vector of a product photo of known category (``part``: its category's part). With a look
    head, its whole photo's look and its category crop's mixed (model.look.mix_product_look, the
    share chosen on validation: bench/look_validation.py). Without, the whole photo's texture encoding:
    a product photo shows that one product, and its whole photo described it better than the crop
    of its category (colour agreement 0.259 against 0.185 on validation, bench/product_embedding.py)."""
    if out.whole_look is not None:
        mixed = mix_product_look(out.whole_look[row].float(), part.embedding.float(), model.config.look_whole_share)
        return mixed.cpu().numpy()
    return out.global_embedding[row].float().cpu().numpy()


class _RateLog:
    """A progress line every LOG_EVERY_S, for when no progress bar is shown (logs, CI, containers)."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0
        self.started = self.last = time.monotonic()

    def advance(self, count: int) -> None:
        self.done += count
        if time.monotonic() - self.last > LOG_EVERY_S:
            self.last = time.monotonic()
            log.info(
                "embedded %d/%d items (%.1f items/s)", self.done, self.total, self.done / (self.last - self.started)
            )
