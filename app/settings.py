"""Service configuration, read from the environment (prefix ``FASHION_``) and validated at start."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.batching import BatchOptions
from indexer.build import DEFAULT_LABELS_FROM, IndexEngine, IndexOptions
from indexer.category_map import CategoryMapError, read_category_map
from indexer.ray_embed import RayOptions
from indexer.search import DEFAULT_CANDIDATES, DEFAULT_MAX_PARTS
from model.imaging import (
    DEFAULT_MAX_ASPECT,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_SIDE,
    DEFAULT_TRIM_MAX_AREA,
    DEFAULT_WIDE_FILL,
    ImageLimits,
)
from model.network import (
    DEFAULT_ITEM_LABEL_THRESHOLD,
    DEFAULT_PART_FLOOR,
    DEFAULT_PART_THRESHOLD,
    DEFAULT_WIDE_PART_THRESHOLD,
)
from model.runtime import DEFAULT_CACHE, DEFAULT_RUNTIME, Runtime

DEFAULT_ADMIN_KEY = "change-me"
ServeBatching = Literal["micro-batcher", "serve"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FASHION_", env_file=".env", extra="ignore")

    environment: Literal["development", "production"] = "development"
    admin_api_key: SecretStr = SecretStr(DEFAULT_ADMIN_KEY)  # must be changed outside development
    checkpoint: Path = Path("weights/ccp-attention.pt")  # the committed model; `make train` writes checkpoints/
    bundles_dir: Path = Path("bundles")
    catalogue: Path | None = None  # what POST /admin/reindex indexes when the request names none
    uploads_dir: Path = Path("uploads")  # items added by upload (POST /admin/items); every reindex includes them
    # Folders admin jobs may read catalogues, metadata and item photos from (symlinks resolved);
    # empty: the folder of `catalogue`. A leaked admin key must not make the service a file reader.
    catalogue_roots: list[Path] = Field(default_factory=list)
    # A reindex that would index fewer than this share of the live bundle's items fails (a mistyped
    # catalogue must not wipe the service); a request's `force` overrides it. An empty one always fails.
    reindex_min_fraction: float = Field(0.5, ge=0, le=1)
    # A running job's lease: its worker renews it every second; one not renewed for this long (the
    # worker was killed or lost) is re-queued, and failed after `job_max_attempts` runs.
    job_stale_s: float = Field(60.0, gt=0)
    job_max_attempts: int = Field(3, ge=1)
    # How long a stopped worker (SIGTERM) may take: its running job gets this less a few seconds to
    # finish, else it is handed back to the queue. Compose's stop_grace_period is this same variable.
    worker_stop_grace_s: float = Field(30.0, ge=0)
    redis_url: str | None = None  # None: single-process in-memory coordination (the embedded default)
    embedded_worker: bool = True  # run reindex jobs in this process (no separate indexer worker)
    device: str = "cpu"
    # Where the forward pass runs on a CPU (model.runtime): the checkpoint is exported once to the
    # runtime and the export cached, named by the checkpoint's hash, under `runtime_cache`.
    runtime: Runtime = DEFAULT_RUNTIME
    runtime_cache: Path = DEFAULT_CACHE
    # Items in the first bundle the run command publishes when none is live (0: the whole catalogue
    # at once); a job then adds the rest and the service swaps to it without a restart.
    first_slice: int = Field(1000, ge=0)

    max_upload_bytes: int = Field(10 * 1024 * 1024, gt=0)  # 413 above this
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, gt=0)  # 422 above this (decompression bombs)
    max_image_side: int = Field(DEFAULT_MAX_SIDE, gt=0)  # 422 for a longer side
    max_aspect_ratio: float = Field(DEFAULT_MAX_ASPECT, ge=1)  # 422 for a longer shape (long side / short side)
    max_batch: int = Field(16, gt=0)  # photos per model forward at most (a wide photo counts once, its views all go)
    # How long a forward waits for company. 0: it takes the photos already queued and starts; under
    # load they queue while the previous forward runs, so batches fill without a lone photo waiting.
    max_wait_ms: float = Field(0.0, ge=0)
    queue_limit: int = Field(64, gt=0)  # photos waiting for the model; 503 beyond
    cache_ttl_s: int = Field(300, ge=0)  # response cache lifetime; 0 disables it
    search_threads: int = Field(1, gt=0)  # FAISS OpenMP threads; one query at a time needs no more
    bundle_poll_s: float = Field(5.0, gt=0)  # pointer check, in case an announcement was missed

    default_max_parts: int = Field(DEFAULT_MAX_PARTS, gt=0)
    default_candidates: int = Field(DEFAULT_CANDIDATES, gt=0)
    labels_from: str | None = DEFAULT_LABELS_FROM  # metadata field placing each product ("": the model)
    # The shop's names for that field's values (indexer.category_map: CSV or YAML, category -> a part
    # label or none); read at start and again by every reindex, so an edited map needs no restart.
    category_map: Path | None = None
    part_threshold: float = Field(DEFAULT_PART_THRESHOLD, ge=0, le=1)  # a query part's group probability at least
    # Below the threshold, the most probable group is answered anyway (marked not confident) if it
    # reaches this floor; a photo whose groups are all below it has nothing to wear: an empty answer.
    part_floor: float = Field(DEFAULT_PART_FLOOR, ge=0, le=1)
    # A photo whose detail (the person) covers at most this share of it, on a plain or blurred margin,
    # is cut to that detail's box before the model looks (model.imaging.content_box); 0: never.
    trim_max_area: float = Field(DEFAULT_TRIM_MAX_AREA, ge=0, le=1)
    # A photo filling at most this share of the frame's height (wider than the frame: a half-body
    # shot) is seen at the frame's top, middle and bottom (model.imaging.load_pixel_views); 0: never.
    wide_fill: float = Field(DEFAULT_WIDE_FILL, ge=0, le=1)
    # Such a wide photo's items are cut at its edge and surer less often: its groups are kept from this.
    wide_part_threshold: float = Field(DEFAULT_WIDE_PART_THRESHOLD, ge=0, le=1)
    # a catalogue item placed by its predicted labels (no category known): a label's probability at least
    item_label_threshold: float = Field(DEFAULT_ITEM_LABEL_THRESHOLD, ge=0, le=1)
    # Who embeds a reindex job's catalogue: the worker's own process, or Ray Data (a cluster at
    # `ray_address`, or a local Ray the job starts and stops).
    index_engine: IndexEngine = IndexOptions.engine
    ray_address: str | None = RayOptions.address
    # Ray Serve (python -m app --engine ray-serve): replicas of this same app on a Ray cluster (the
    # cluster at `ray_address`, RAY_ADDRESS, or a local one), each with its own model copy and
    # micro-batcher. A fixed count, or autoscaling between a min and a max when the max is set.
    serve_num_replicas: int = Field(1, ge=1)
    serve_autoscaling_min: int | None = Field(None, ge=0)
    serve_autoscaling_max: int | None = Field(None, ge=1)
    serve_target_ongoing_requests: float = Field(16.0, gt=0)  # autoscaling: requests in hand per replica
    serve_max_ongoing_requests: int = Field(32, ge=1)  # one replica's requests at once; more wait at the router
    serve_max_queued_requests: int = Field(-1, ge=-1)  # waiting at the router at most (503, Retry-After); -1: any
    serve_num_cpus: float = Field(1.0, ge=0)  # reserved per replica
    serve_num_gpus: float = Field(0.0, ge=0)  # per replica, with FASHION_DEVICE=cuda
    serve_relay: bool = True  # a thin ingress that sends a dead replica's requests to another (app.relay)
    # Who batches a replica's requests into one forward: the project's micro-batcher, as under uvicorn,
    # or Ray Serve's own @serve.batch (same FASHION_MAX_BATCH, FASHION_MAX_WAIT_MS); bench/ray_serve.py
    # measures the two side by side.
    serve_batching: ServeBatching = "micro-batcher"

    def index_options(self, with_category_map: bool = True) -> IndexOptions:
        """The indexer's options under this configuration (the run command and the jobs alike).
        ``with_category_map`` False: FASHION_CATEGORY_MAP is not read (a job that places no product
        by it: a map being edited must not fail an upload or a delete)."""
        return IndexOptions(
            device=self.device,
            runtime=self.runtime,
            runtime_cache=self.runtime_cache,
            threshold=self.item_label_threshold,
            labels_from=self.labels_from,
            category_map=read_category_map(self.category_map) if self.category_map and with_category_map else None,
            limits=self.image_limits(),
            engine=self.index_engine,
            ray=RayOptions(address=self.ray_address),
        )

    def image_limits(self) -> ImageLimits:
        """What a photo may be, for /recommend, uploads and the indexer alike."""
        return ImageLimits(self.max_pixels, self.max_image_side, self.max_aspect_ratio)

    def allowed_roots(self) -> list[Path]:
        """The resolved folders admin jobs may read (the uploads folder always)."""
        roots = list(self.catalogue_roots)
        if not roots and self.catalogue is not None:
            roots.append(self.catalogue if self.catalogue.is_dir() else self.catalogue.parent)
        return [root.resolve() for root in [*roots, self.uploads_dir]]

    def batch_options(self) -> BatchOptions:
        """How the model's micro-batcher groups photos under this configuration."""
        return BatchOptions(max_batch=self.max_batch, max_wait_s=self.max_wait_ms / 1000, queue_limit=self.queue_limit)

    @model_validator(mode="after")
    def _category_map_readable(self) -> Settings:
        if self.category_map is not None:
            if not self.labels_from:
                raise ValueError("FASHION_CATEGORY_MAP names the values of FASHION_LABELS_FROM, which is empty")
            try:
                read_category_map(self.category_map)  # its labels are checked against the model at start
            except CategoryMapError as exc:
                raise ValueError(f"FASHION_CATEGORY_MAP: {exc}") from None
        return self

    @model_validator(mode="after")
    def _serve_autoscaling_bounds(self) -> Settings:
        if self.serve_autoscaling_min is not None and self.serve_autoscaling_max is None:
            raise ValueError("FASHION_SERVE_AUTOSCALING_MIN needs FASHION_SERVE_AUTOSCALING_MAX")
        low, high = self.serve_autoscaling_min or 0, self.serve_autoscaling_max
        if high is not None and low > high:
            raise ValueError("FASHION_SERVE_AUTOSCALING_MIN is above FASHION_SERVE_AUTOSCALING_MAX")
        return self

    @model_validator(mode="after")
    def _no_default_secret_in_production(self) -> Settings:
        if self.environment != "development" and self.admin_api_key.get_secret_value() == DEFAULT_ADMIN_KEY:
            raise ValueError("FASHION_ADMIN_API_KEY must be set outside development")
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
