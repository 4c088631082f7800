"""The recommendation service, with no HTTP in it: decode → model → search → one distinct item per part.

A request takes the live bundle once, at its start, and uses it to the end: a hot swap never
gives a request a mix of two bundles, and a cached answer is always the answer of the bundle it names.

Photos are answered in batches, one stage after another: the batch's photos decoded side by side
(one thread per core), one forward of all of them, their searches side by side. Each stage has the
cores to itself: decoding or searching while the forward runs would take cores from under its
threads, which then wait for each other (measured, README: in-process 1.2x the photos a second;
over HTTP a few percent more at 16 clients).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import gc
import hashlib
import io
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import faiss
import torch
from PIL import Image

from app.batching import BatcherFactory, BatchOptions, MicroBatcher
from app.coordination import Coordinator
from app.metrics import Metrics
from app.schemas import Item, PartRecommendation, RecommendResponse
from indexer.bundle import Bundle, BundleError, BundleStore
from indexer.search import DEFAULT_CANDIDATES, DEFAULT_MAX_PARTS, Match, QueryPart, recommend_global, recommend_parts
from model.checkpoint import file_sha256, load_checkpoint
from model.imaging import (
    DEFAULT_TRIM_MAX_AREA,
    DEFAULT_WIDE_FILL,
    PHOTO_FORMATS,
    ImageLimits,
    Placement,
    load_input_views,
)
from model.labels import group_of
from model.network import (
    DEFAULT_PART_FLOOR,
    DEFAULT_WIDE_PART_THRESHOLD,
    NetworkOutput,
    PartAttentionNetwork,
    photo_parts,
)
from model.runtime import DEFAULT_CACHE, DEFAULT_RUNTIME, Forward, Runtime, make_forward

log = logging.getLogger(__name__)

T = TypeVar("T")


class NotReady(RuntimeError):
    """No usable bundle is loaded."""


@dataclass(frozen=True)
class RecommendOptions:
    max_parts: int = DEFAULT_MAX_PARTS
    candidates: int = DEFAULT_CANDIDATES
    labels: frozenset[str] | None = None  # only parts answered from these labels' indexes
    exclude_ids: frozenset[str] = frozenset()
    mode: Literal["parts", "global"] = "parts"

    def cache_key(self) -> str:
        """The options as JSON: ids and labels may hold any character, a separator among them."""
        labels = sorted(self.labels) if self.labels is not None else None
        return json.dumps([self.mode, self.max_parts, self.candidates, labels, sorted(self.exclude_ids)])


@dataclass(frozen=True)
class PhotoJob:
    """A photo on its way through a batch, with the bundle and options it is answered with (no
    bundle: decoded and through the forward only, as the warm-up runs)."""

    data: bytes
    bundle: Bundle | None
    options: RecommendOptions
    queued_at: float = dataclasses.field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class PhotoAnswer:
    parts: list[PartRecommendation]
    placement: Placement
    timings_ms: dict[str, float]  # queue, then the stages of the batch the photo was answered in


class ResponseCache:
    """Answers kept for ``ttl_s`` by the coordinator (so replicas share them under Redis)."""

    def __init__(self, coordinator: Coordinator, ttl_s: int, metrics: Metrics) -> None:
        self.coordinator, self.ttl_s, self.metrics = coordinator, ttl_s, metrics

    async def get(self, key: str) -> RecommendResponse | None:
        cached = await self.coordinator.cache_get(key)
        self.metrics.cache.labels("hit" if cached else "miss").inc()
        if not cached:
            return None
        return RecommendResponse.model_validate_json(cached).model_copy(update={"cached": True})

    async def put(self, key: str, response: RecommendResponse) -> None:
        await self.coordinator.cache_set(key, response.model_dump_json().encode(), self.ttl_s)


class BundleHolder:
    """The live bundle of this process, swapped whole when a new version is published."""

    def __init__(self, store: BundleStore, model_sha256: str, metrics: Metrics) -> None:
        self.store, self.model_sha256, self.metrics = store, model_sha256, metrics
        self.current: Bundle | None = None
        self.refused: str | None = None  # why the store's live version is not served, when it is not
        self._refused_version: str | None = None
        self._lock = asyncio.Lock()

    async def swap_to(self, version: str | None = None) -> bool:
        """Load ``version`` (default: the store's live one) and make it current; False if unchanged.
        A bundle that cannot be loaded whole is refused once (``refused`` says why) and the current
        one keeps serving."""
        async with self._lock:
            version = version or self.store.current_version()
            if self.current is not None and self.current.version == version:
                self._refused_version = self.refused = None  # e.g. rolled back to the one it serves
                return False
            if version is None or version == self._refused_version:
                return False
            keeping = self.current.version if self.current else "none"
            try:
                bundle = await asyncio.to_thread(self.store.open, version)
                if bundle.model_sha256 != self.model_sha256:
                    raise BundleError(
                        f"it was built with another model ({bundle.model_sha256[:12]}…, this service runs "
                        f"{self.model_sha256[:12]}…): rebuild it, e.g. POST /admin/reindex with no body indexes its "
                        "catalogue again"
                    )
            except BundleError as exc:  # it will not get better: refused once, and said so
                self._refused_version, self.refused = version, f"bundle {version} refused ({exc}); serving {keeping}"
                log.error("%s", self.refused)
                return False
            except Exception as exc:  # e.g. out of file handles: tried again at the next poll
                self.refused = f"bundle {version} not loaded yet ({type(exc).__name__}: {exc}); serving {keeping}"
                log.error("%s", self.refused)
                return False
            self.current = bundle  # one reference assignment: requests hold the bundle they started with
            self._refused_version, self.refused = None, None
            self.metrics.set_bundle(version)
            self.metrics.bundle_swaps.inc()
            log.info("serving bundle %s", version)
            await asyncio.to_thread(release_freed_memory)
            return True


def release_freed_memory() -> None:
    """Hand the memory a swap freed back to the system. Loading a bundle allocates in whichever
    thread-pool thread runs it, and glibc keeps each thread's freed arena space: without this the
    API's RSS grew by about 13 MB a swap in the soak (bench/soak.py)."""
    gc.collect()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6")
            libc.malloc_trim.argtypes = [ctypes.c_size_t]
            libc.malloc_trim(0)


class Recommender:
    def __init__(
        self,
        model: PartAttentionNetwork,  # the source of truth: labels, thresholds, how parts are chosen
        forward: Forward,  # its forward pass, on the configured runtime (model.runtime)
        model_sha256: str,
        bundles: BundleHolder,
        metrics: Metrics,
        limits: ImageLimits,
        threshold: float,
        batching: BatchOptions,
        floor: float | None = DEFAULT_PART_FLOOR,  # below it a photo has nothing to wear (photo_parts)
        cache: ResponseCache | None = None,  # None: every request is answered afresh
        search_threads: int = 1,  # FAISS's OpenMP threads for one photo's search
        trim_max_area: float = DEFAULT_TRIM_MAX_AREA,  # a photo cut to its content box up to this share (0: never)
        wide_fill: float = DEFAULT_WIDE_FILL,  # a photo filling at most this share of the frame's height: seen 3 times
        wide_threshold: float = DEFAULT_WIDE_PART_THRESHOLD,  # such a photo's part threshold (photo_parts)
        make_batcher: BatcherFactory[PhotoJob, PhotoAnswer] = MicroBatcher,  # Serve's replicas may use @serve.batch
    ) -> None:
        self.model, self.forward, self.bundles, self.metrics, self.cache = model, forward, bundles, metrics, cache
        self.model_version = model_sha256[:12]
        self.limits, self.threshold, self.floor, self.search_threads = limits, threshold, floor, search_threads
        self.trim_max_area, self.wide_fill, self.wide_threshold = trim_max_area, wide_fill, wide_threshold
        # what else shapes an answer besides the photo, the bundle and the request's options: in the
        # cache key, so processes sharing one Redis under other settings never take each other's answers
        self.answer_settings = (
            f"threshold={threshold},floor={floor},trim={trim_max_area},wide={wide_fill},wide_threshold={wide_threshold}"
        )
        self.size = (model.config.image_height, model.config.image_width)
        self.batcher = make_batcher(self._answer_batch, batching, metrics.batch_size.observe)
        # decoding and search of a batch's photos, side by side (both release the GIL)
        self._workers = ThreadPoolExecutor(max_workers=usable_cores(), thread_name_prefix="photos")

    @classmethod
    def from_files(
        cls,
        checkpoint: Path,
        bundles_dir: Path,
        metrics: Metrics,
        device: str,
        runtime: Runtime = DEFAULT_RUNTIME,
        runtime_cache: Path = DEFAULT_CACHE,
        **kwargs: Any,
    ) -> Recommender:
        sha = file_sha256(checkpoint)
        model, _ = load_checkpoint(checkpoint, device)
        forward = make_forward(model, runtime, sha, runtime_cache, device)
        return cls(model, forward, sha, BundleHolder(BundleStore(bundles_dir), sha, metrics), metrics, **kwargs)

    def _forward(self, images: list[torch.Tensor]) -> list[NetworkOutput]:
        """One batched forward; results are split back per photo (batch dim kept, of size 1)."""
        started = time.perf_counter()
        out = self.forward(torch.stack(images))
        self.metrics.stage_seconds.labels("model_batch").observe(time.perf_counter() - started)
        return out.per_photo()

    async def warm_up(self) -> None:
        """A full batch of blank photos decoded and through the model (see MicroBatcher.warm_up):
        wide ones where wide photos are seen several times, so the largest forward is the warm-up's."""
        blank = io.BytesIO()
        height, band = self.size[0], math.floor(self.size[0] * self.wide_fill)  # a photo this tall is wide
        if band >= max(1, math.ceil(self.size[1] / self.limits.max_aspect)):  # and still a photo decoding accepts
            height = band
        Image.new("RGB", (self.size[1], height), "white").save(blank, "JPEG")
        await self.batcher.warm_up(PhotoJob(blank.getvalue(), None, RecommendOptions()))

    async def close(self) -> None:
        await self.batcher.stop()
        self._workers.shutdown(wait=False)

    def decode(self, data: bytes, wide: bool = True) -> list[tuple[torch.Tensor, Placement]]:
        """A photo's views for the network: one, or several for a wide photo (load_input_views;
        ``wide`` False: always one, centred, as the whole-photo search and the catalogue are)."""
        wide_fill = self.wide_fill if wide else 0.0
        return load_input_views(data, self.size, self.limits, PHOTO_FORMATS, self.trim_max_area, wide_fill)

    def _decode_job(self, job: PhotoJob) -> list[tuple[torch.Tensor, Placement]]:
        return self.decode(job.data, wide=job.options.mode != "global")

    def _answer_batch(self, jobs: list[PhotoJob]) -> list[PhotoAnswer | Exception]:
        """The batch's photos decoded side by side, one forward, their searches side by side."""
        started = time.perf_counter()
        spread = self._workers.map if len(jobs) > 1 else map  # a lone photo stays in this thread
        decoded = list(spread(self._or_error(self._decode_job), jobs))
        good = [(i, d) for i, d in enumerate(decoded) if not isinstance(d, Exception)]
        after_decode = time.perf_counter()
        flat = self._forward([tensor for _, views in good for tensor, _ in views]) if good else []
        outs, row = [], 0
        for _, views in good:  # each photo's outputs, one per view
            outs.append(flat[row : row + len(views)])
            row += len(views)
        after_model = time.perf_counter()

        def search(
            photo: tuple[int, list[tuple[torch.Tensor, Placement]]], views: list[NetworkOutput]
        ) -> list[PartRecommendation]:
            i, fitted = photo
            bundle = jobs[i].bundle
            seen = [(out, placement) for out, (_, placement) in zip(views, fitted, strict=True)]
            return self._search(bundle, seen, jobs[i].options) if bundle is not None else []

        searched = list(spread(self._or_error(search), good, outs))
        finished = time.perf_counter()
        stages = {
            "decode": after_decode - started,
            "model": after_model - after_decode,
            "search": finished - after_model,
        }
        answered: dict[int, PhotoAnswer | Exception] = {}
        for (i, views), parts in zip(good, searched, strict=True):
            placement = views[0][1]  # the photo's size, the same in each view
            if isinstance(parts, Exception):
                answered[i] = parts
                continue
            timings = {"queue": started - jobs[i].queued_at, **stages}
            if jobs[i].bundle is not None:  # served photos only, not the warm-up's
                for stage, seconds in timings.items():
                    self.metrics.stage_seconds.labels(stage).observe(seconds)
            answered[i] = PhotoAnswer(parts, placement, {k: round(v * 1000, 2) for k, v in timings.items()})
        return [d if isinstance(d, Exception) else answered[i] for i, d in enumerate(decoded)]

    @staticmethod
    def _or_error(work: Callable[..., T]) -> Callable[..., T | Exception]:
        """``work`` that hands back its exception instead of raising it: one photo's failure stays its own."""

        def run(*args: Any) -> T | Exception:
            try:
                return work(*args)
            except Exception as exc:
                return exc

        return run

    async def recommend(self, data: bytes, options: RecommendOptions) -> RecommendResponse:
        """One distinct item per part of the photo, from the cache when this bundle answered it already."""
        bundle = self.bundles.current
        if bundle is None:
            raise NotReady("no bundle is loaded yet")
        if self.cache is None:
            return await self._answer(data, bundle, options)
        key = f"{image_digest(data)}|{bundle.version}|{self.answer_settings}|{options.cache_key()}"
        response = await self.cache.get(key)
        if response is None:
            response = await self._answer(data, bundle, options)
            await self.cache.put(key, response)
        return response

    async def _answer(self, data: bytes, bundle: Bundle, options: RecommendOptions) -> RecommendResponse:
        answer = await self.batcher.submit(PhotoJob(data, bundle, options))
        return RecommendResponse(
            mode=options.mode,
            parts=answer.parts,
            bundle_version=bundle.version,
            model_version=self.model_version,
            image={"width": answer.placement.width, "height": answer.placement.height},
            timings_ms=answer.timings_ms,
        )

    def _search(
        self, bundle: Bundle, views: list[tuple[NetworkOutput, Placement]], options: RecommendOptions
    ) -> list[PartRecommendation]:
        """``views``: the photo's network outputs and their placements (several for a wide photo)."""
        # FAISS's thread count is per calling thread (OpenMP): set here, in the thread that searches,
        # or FASHION_SEARCH_THREADS would hold only in the thread that read it.
        faiss.omp_set_num_threads(self.search_threads)
        if options.mode == "global":
            ((out, _),) = views  # the whole-photo search sees a photo once, centred (_decode_job)
            matches = recommend_global(bundle, out.global_embedding[0].numpy(), options.max_parts, options.exclude_ids)
            return [PartRecommendation(label=None, group=None, score=None, box=None, item=_item(m)) for m in matches]
        searchable = bundle.searchable_labels
        if options.labels is not None:
            searchable &= set(options.labels)
        seen = [(out, 0, placement) for out, placement in views]
        found = photo_parts(
            self.model, seen, self.threshold, options.max_parts, searchable, self.floor, self.wide_threshold
        )
        query = [QueryPart(p.label, p.score, p.embedding.numpy(), p.box, p.index_label, p.confident) for p in found]
        results = recommend_parts(bundle, query, options.candidates, options.exclude_ids, options.labels)
        return [
            PartRecommendation(
                label=r.part.label,
                index_label=r.part.answered_from,
                group=group_of(r.part.label),
                score=round(r.part.score, 4),
                confident=r.part.confident,
                box=[round(v, 1) for v in r.part.box] if r.part.box else None,
                item=_item(r.match) if r.match else None,
            )
            for r in results
        ]


def _item(match: Match) -> Item:
    return Item(id=match.item_id, distance=round(match.distance, 5), metadata=match.metadata)


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the system has one, else all)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def image_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
