"""What a reindex indexes: the catalogue and the category map, from the request, the configuration or
the live bundle's own record. The route asks before it queues the job (a request that cannot run is
refused at once, 422) and the job asks again when it runs (the worker may be another process)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.settings import Settings
from indexer.bundle import BundleError, BundleStore
from indexer.category_map import CategoryMap, read_category_map
from indexer.errors import IndexerError

NO_CATALOGUE = (
    "no catalogue to index: the request names none, FASHION_CATALOGUE is not set, and no live bundle records "
    "the catalogue it was built from"
)


class NoCatalogue(IndexerError):
    """A reindex with nothing to index."""


@dataclass(frozen=True)
class ReindexSource:
    catalogue: str  # folder or list file
    metadata: str | None
    category_map: CategoryMap | None
    # Folders read although outside the catalogue roots: those of the live bundle's own catalogue,
    # which the operator indexed (the roots guard what a request names, not what the service built).
    trusted: list[Path] = field(default_factory=list)


def _live_record(settings: Settings) -> dict[str, Any]:
    try:
        return BundleStore(settings.bundles_dir).manifest()
    except BundleError:
        return {}


def _folder(path: str) -> Path:
    return Path(path).resolve() if Path(path).is_dir() else Path(path).resolve().parent


def reindex_source(params: dict[str, Any], settings: Settings) -> ReindexSource:
    """The request's catalogue, else FASHION_CATALOGUE, else the one the live bundle was built from.
    The map: the request's (``params["category_map"]``, a CategoryMap record), else
    FASHION_CATEGORY_MAP, else, when the catalogue is the live bundle's own, the map it was built with."""
    live = _live_record(settings)
    recorded = live.get("catalogue") or {}
    trusted: list[Path] = []
    if params.get("catalogue"):
        catalogue, metadata = str(params["catalogue"]), params.get("metadata")
    elif settings.catalogue is not None:
        catalogue, metadata = str(settings.catalogue), params.get("metadata")
    elif recorded.get("root"):
        catalogue, metadata = str(recorded["root"]), params.get("metadata") or recorded.get("metadata")
        trusted = [_folder(catalogue)] + ([_folder(recorded["metadata"])] if recorded.get("metadata") else [])
    else:
        raise NoCatalogue(NO_CATALOGUE)
    if params.get("category_map"):
        category_map = CategoryMap.from_record(params["category_map"])
    elif settings.category_map is not None:
        category_map = read_category_map(settings.category_map)
    elif recorded.get("root") and Path(recorded["root"]).resolve() == Path(catalogue).resolve():
        category_map = CategoryMap.from_record(live.get("options", {}).get("category_map"))  # rebuilt as it was
    else:
        category_map = None
    return ReindexSource(catalogue, metadata, category_map, trusted)
