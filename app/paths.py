"""Which server paths admin jobs may read: only inside the configured catalogue roots, judged after
symlinks are resolved, so a leaked admin key cannot turn item metadata or photos into a file reader."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from indexer.catalogue import Catalogue


def inside(path: str | os.PathLike[str], roots: list[Path]) -> bool:
    """Whether ``path`` (resolved: symlinks followed, ``..`` removed) lies within one of ``roots``."""
    try:
        resolved = Path(path).resolve()
    except (OSError, ValueError):  # a NUL byte, a loop of links: not a path we read
        return False
    return any(resolved.is_relative_to(root) for root in roots)


def confine(catalogue: Catalogue, roots: list[Path]) -> Catalogue:
    """The catalogue less the items whose photo lies outside ``roots`` (reported as skipped)."""
    kept, outside = [], []
    for item in catalogue.items:
        if inside(item.path, roots):
            kept.append(item)
        else:
            outside.append({"id": item.id, "path": str(item.path), "reason": "outside the catalogue roots"})
    return dataclasses.replace(catalogue, items=kept, skipped=catalogue.skipped + outside)
