"""Request and response models of the API."""

from __future__ import annotations

import time
import uuid
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from model.imaging import PHOTO_TYPES


class Item(BaseModel):
    id: str
    distance: float = Field(description="squared L2 between unit embeddings: 2 − 2·cosine")
    metadata: dict[str, Any]


class PartRecommendation(BaseModel):
    label: str | None = Field(
        description="the part's label: the model's most probable one in its group; null in global"
    )
    index_label: str | None = Field(
        None,
        description="the label whose catalogue index answered the part: `label` itself, or the most probable "
        "label of its group that the catalogue has products for (a blouse answered from the tops); null in global",
    )
    group: str | None = Field(None, description="the part's item group (footwear, bags, tops…); null in global mode")
    score: float | None = Field(
        description="probability that the photo has an item of the part's group (one part per group); null in global"
    )
    confident: bool | None = Field(
        None,
        description="false when no group reached the part threshold and this is the photo's most probable group, "
        "answered anyway (a photo with nothing to wear gets no part); null in global mode",
    )
    box: list[float] | None = Field(description="x0, y0, x1, y1 in the photo's pixels")
    item: Item | None = Field(description="the part's catalogue item; null when none is left")


class RecommendResponse(BaseModel):
    mode: Literal["parts", "global"]
    parts: list[PartRecommendation]
    bundle_version: str
    model_version: str
    image: dict[str, int]
    timings_ms: dict[str, float] = Field(
        description="queue: waiting for a batch; decode, model, search: the stages of the batch the photo was "
        "answered in (its photos decoded and searched side by side)"
    )
    cached: bool = False


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its nested models written in place, for a request body
    documented by hand (pydantic's ``$defs`` would not resolve inside the OpenAPI document)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    return resolve(schema)  # type: ignore[no-any-return]


class ErrorResponse(BaseModel):
    detail: str
    code: str


class ReindexRequest(BaseModel):
    model_config = ConfigDict(strict=True)  # `force: 0` is not a yes or a no

    catalogue: str | None = Field(
        None,
        description="catalogue folder or list file on the worker's disk (default: FASHION_CATALOGUE, else the "
        "catalogue the live bundle was built from)",
    )
    metadata: str | None = Field(None, description="CSV or JSON-lines metadata file")
    force: bool = Field(
        False, description="publish even when far fewer items than the live bundle's are indexed (never zero)"
    )
    category_map: str | None = Field(
        None,
        min_length=1,
        pattern=r"\.([cC][sS][vV]|[yY][aA]?[mM][lL])$",
        description="the shop's names for the FASHION_LABELS_FROM field's values: a CSV (category,label) or YAML "
        "(category: label) file on the worker's disk, each label a part label of the model or `none`. A bad map is "
        "refused (422) with its problem. Default: FASHION_CATEGORY_MAP, else the live bundle's map when its own "
        "catalogue is indexed again",
    )


ITEM_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"  # also a safe file name
IMAGE_TYPES = ", ".join(t.media_type for t in PHOTO_TYPES)
SKIPPED_LISTED = 20  # a job's skipped catalogue entries listed in its status (all are in the manifest)


class AddItem(BaseModel):
    model_config = ConfigDict(strict=True)

    id: str = Field(pattern=ITEM_ID_PATTERN)
    path: str = Field(description="image file on the worker's disk")
    metadata: dict[str, Any] = Field(default_factory=dict)


class AddItemsRequest(BaseModel):
    model_config = ConfigDict(strict=True)

    items: list[AddItem] = Field(min_length=1, max_length=10_000)


class DeleteItemsRequest(BaseModel):
    model_config = ConfigDict(strict=True)

    ids: list[str] = Field(min_length=1, max_length=100_000)


class JobAccepted(BaseModel):
    job_id: str
    status_url: str


class JobKind(StrEnum):
    REINDEX = "reindex"  # the whole bundle from a catalogue
    COMPLETE = "complete"  # the rest of a first-slice bundle's catalogue
    ADD = "add"
    DELETE = "delete"


class Job(BaseModel):
    """An admin job: queued and stored by the coordinator (as JSON in Redis), run by a worker."""

    id: str
    kind: JobKind
    state: Literal["queued", "running", "succeeded", "failed"]
    progress: dict[str, int] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    version: str | None = None
    error: str | None = None
    created: float
    updated: float
    attempts: int = Field(
        0,
        description="runs started and not handed back: a run whose worker was lost counts; after "
        "FASHION_JOB_MAX_ATTEMPTS of them the job fails",
    )
    worker: str | None = Field(None, description="the worker running the job, or the last one that ran it")
    requeued: list[str] = Field(
        default_factory=list,
        description="each time the job went back to the queue, why: its worker was stopped (handed back) or lost",
    )
    skipped_count: int = Field(
        0, description="catalogue entries the job left out (a missing or unreadable image, a duplicate id…)"
    )
    skipped: list[dict[str, str]] = Field(
        default_factory=list,
        description=f"the first {SKIPPED_LISTED} of them, each with its id, path and reason; the bundle's "
        "manifest lists them all",
    )

    @classmethod
    def new(cls, kind: JobKind, params: dict[str, Any]) -> Job:
        now = time.time()
        return cls(id=uuid.uuid4().hex, kind=kind, state="queued", params=params, created=now, updated=now)

    def requeue_lost(self, why: str, max_attempts: int) -> None:
        """Its worker vanished mid-run (killed, lost): back to the queue, or failed once it has had
        ``max_attempts`` runs (a job that keeps killing its worker must not loop for ever)."""
        self.updated = time.time()
        if self.attempts >= max_attempts:
            self.state = "failed"
            self.error = (
                f"{why}; failed after {self.attempts} attempts (FASHION_JOB_MAX_ATTEMPTS={max_attempts}); "
                "bundles are published whole or not at all, so the live one still serves"
            )
        else:
            self.state = "queued"
            self.requeued.append(f"{why}; re-queued for attempt {self.attempts + 1} of {max_attempts}")

    def hand_back(self, why: str) -> None:
        """Its worker was stopped before the job finished: back to the queue; this run does not count."""
        self.state, self.updated = "queued", time.time()
        self.attempts = max(0, self.attempts - 1)
        self.requeued.append(why)


class Readiness(BaseModel):
    ready: bool
    model_version: str | None
    bundle_version: str | None
    coordination: Literal["memory", "redis", "redis-unavailable"]
    detail: str | None = None
