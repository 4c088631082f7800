"""Embedding on Ray Data: what indexer.embed.embed_items yields, computed on a Ray cluster.

    python -m indexer build --engine ray [--ray-address auto] --catalogue ... --checkpoint ...

Photos are read and decoded as a Ray dataset (tasks spread over the cluster's CPUs), then
``map_batches`` runs them through a pool of model actors (one model copy per actor; one actor per
GPU where the cluster has GPUs), and the results come back to this process in catalogue order. The
bundle is then built, checked and published by indexer.build exactly as for the single-process
engine: same manifest, same atomic publish, same skipped-file report.

Every node reads the catalogue photos and the checkpoint by the paths this process gives, so on a
cluster of several machines they sit on storage all of them mount at the same path.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from indexer.catalogue import CatalogueItem
from indexer.embed import ItemParts, KnownLabels, Skipped, item_parts
from indexer.errors import IndexerError
from model.imaging import PHOTO_FORMATS, ImageDecodeError, ImageLimits, load_pixels, to_input
from model.runtime import Runtime, make_forward

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # a running cluster ("auto", "ray://host:10001"); None: a local one
    actors: int | None = None  # model actors; None: one per GPU, else one
    actor_cpus: float = 1.0  # CPUs reserved by each model actor (decoding gets the others)
    torch_threads: int | None = None  # threads of each actor's PyTorch forward; None: its node's CPU count


def _decode(batch: dict[str, np.ndarray], size: tuple[int, int], limits: ImageLimits) -> dict[str, np.ndarray]:
    """Paths -> letterboxed uint8 pixels; an unreadable photo gets blank pixels and its reason."""
    pixels = np.zeros((len(batch["path"]), *size, 3), dtype=np.uint8)
    errors = []
    for n, path in enumerate(batch["path"]):
        try:
            pixels[n] = load_pixels(str(path), size, limits, PHOTO_FORMATS)[0]
            errors.append("")
        except ImageDecodeError as exc:
            errors.append(str(exc))
    return {"row": batch["row"], "fixed": batch["fixed"], "pixels": pixels, "error": np.asarray(errors, dtype=object)}


class _Embedder:
    """One model copy; each call embeds one batch of decoded photos."""

    def __init__(
        self,
        checkpoint: str,
        device: str,
        runtime: Runtime,
        runtime_cache: str,
        threshold: float,
        max_parts: int,
        threads: int | None,
    ) -> None:
        from model.checkpoint import file_sha256, load_checkpoint  # in the actor's process

        torch.set_num_threads(threads or os.cpu_count() or 1)  # Ray caps OpenMP at the reserved CPUs
        self.model, _ = load_checkpoint(checkpoint, device)
        self.forward = make_forward(self.model, runtime, file_sha256(checkpoint), Path(runtime_cache), device)
        self.threshold, self.max_parts = threshold, max_parts
        cfg = self.model.config
        self.whole_dim, self.part_dim = cfg.global_dim, cfg.part_dim

    @torch.inference_mode()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        count = len(batch["row"])
        good = [n for n in range(count) if not batch["error"][n]]
        whole = np.zeros((count, self.whole_dim), dtype=np.float32)
        vectors = np.zeros((count, self.max_parts, self.part_dim), dtype=np.float32)
        described = ["[]"] * count
        if good:
            out = self.forward(to_input(batch["pixels"][good]))
            glob = out.global_embedding.float().cpu().numpy()
            for row, n in enumerate(good):
                whole[n] = glob[row]
                parts = item_parts(self.model, out, row, json.loads(batch["fixed"][n]), self.threshold, self.max_parts)
                described[n] = json.dumps([[label, score] for label, score, _ in parts])
                for k, (_, _, vector) in enumerate(parts):
                    vectors[n, k] = vector
        return {"row": batch["row"], "error": batch["error"], "whole": whole, "parts": described, "vectors": vectors}


def embed_items_ray(
    checkpoint: Path,
    items: Sequence[CatalogueItem],
    *,
    size: tuple[int, int],
    threshold: float,
    max_parts: int,
    batch_size: int,
    device: str,
    limits: ImageLimits,
    known_labels: KnownLabels | None,
    runtime: Runtime,
    runtime_cache: Path,
    ray_options: RayOptions,
) -> Iterator[ItemParts | Skipped]:
    """Yield, in catalogue order, each item's embeddings or the reason it was skipped (as
    indexer.embed.embed_items does), computed by Ray. Starts a local Ray when none is running
    and no address is given, and stops it afterwards."""
    try:
        import ray
    except ImportError as exc:
        raise IndexerError("--engine ray needs Ray Data: pip install 'fashion-parts[ray]'") from exc
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=ray_options.address, include_dashboard=False, logging_level=logging.WARNING)
    try:
        actor = {
            "checkpoint": str(checkpoint.resolve()),
            "device": device,
            "runtime": runtime,
            "runtime_cache": str(runtime_cache.resolve()),
            "threshold": threshold,
            "max_parts": max_parts,
            "threads": ray_options.torch_threads,
        }
        with _in_catalogue_order(ray):
            yield from _stream(ray, actor, items, size, batch_size, limits, known_labels, ray_options)
    finally:
        if started_here:
            ray.shutdown()


@contextlib.contextmanager
def _in_catalogue_order(ray: Any) -> Iterator[None]:
    """Ray Data keeps the rows' order (keys are given in catalogue order, as in one process) and
    draws no progress bars; the process's context is as it was afterwards (the service runs jobs
    beside other work)."""
    context = ray.data.DataContext.get_current()
    saved = context.execution_options.preserve_order, context.enable_progress_bars
    context.execution_options.preserve_order, context.enable_progress_bars = True, False
    try:
        yield
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved


def _stream(
    ray: Any,
    actor: dict[str, Any],
    items: Sequence[CatalogueItem],
    size: tuple[int, int],
    batch_size: int,
    limits: ImageLimits,
    known_labels: KnownLabels | None,
    options: RayOptions,
) -> Iterator[ItemParts | Skipped]:
    gpus = int(ray.cluster_resources().get("GPU", 0)) if actor["device"].startswith("cuda") else 0
    actors = options.actors or max(1, gpus)
    rows = [
        {"row": n, "path": str(item.path), "fixed": json.dumps(known_labels(item) if known_labels else None)}
        for n, item in enumerate(items)
    ]
    dataset = (
        ray.data.from_items(rows, override_num_blocks=max(1, len(rows) // batch_size))
        .map_batches(_decode, fn_kwargs={"size": size, "limits": limits}, batch_size=batch_size, batch_format="numpy")
        .map_batches(
            _Embedder,
            fn_constructor_kwargs={**actor, "device": actor["device"] if gpus else "cpu"},
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=options.actor_cpus,
            num_gpus=1 if gpus else 0,
            batch_size=batch_size,
            batch_format="numpy",
        )
    )
    log.info("embedding %d items on Ray: %d model actor(s), %s GPU(s)", len(items), actors, gpus)
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        for n, row in enumerate(batch["row"]):
            item = items[int(row)]
            if batch["error"][n]:
                yield Skipped(item.id, str(item.path), str(batch["error"][n]))
                continue
            described = json.loads(batch["parts"][n])
            parts = [(label, score, batch["vectors"][n, k]) for k, (label, score) in enumerate(described)]
            yield ItemParts(item.id, batch["whole"][n], parts)
