"""Which server paths admin jobs may read: only inside the configured catalogue roots, judged after
symlinks are resolved, so a leaked admin key cannot turn item metadata or photos into a file reader."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from indexer.catalogue import Catalogue
from indexer.errors import IndexerError


def inside(path: str | os.PathLike[str], roots: list[Path]) -> bool:
    """Whether ``path`` (resolved: symlinks followed, ``..`` removed) lies within one of ``roots``."""
    try:
        resolved = Path(path).resolve()
    except (OSError, ValueError, RuntimeError):  # a NUL byte; a loop of links (RuntimeError before 3.13)
        return False
    return any(resolved.is_relative_to(root) for root in roots)


def first_outside(paths: Sequence[str | os.PathLike[str] | None], roots: list[Path]) -> str | None:
    """The first of ``paths`` (None entries skipped) that lies outside ``roots``, or None."""
    return next((str(path) for path in paths if path and not inside(path, roots)), None)


def confine(catalogue: Catalogue, roots: list[Path]) -> Catalogue:
    """The catalogue less the items whose photo lies outside ``roots`` (reported as skipped). The
    file it was read from (a metadata file found in the folder, too) must lie inside them."""
    if not inside(catalogue.source, roots):
        raise IndexerError(f"{catalogue.source} is outside the catalogue roots")
    kept, outside = [], []
    for item in catalogue.items:
        if inside(item.path, roots):
            kept.append(item)
        else:
            outside.append({"id": item.id, "path": str(item.path), "reason": "outside the catalogue roots"})
    return dataclasses.replace(catalogue, items=kept, skipped=catalogue.skipped + outside)
