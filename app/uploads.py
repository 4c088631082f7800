"""Items added by upload (``POST /admin/items``): kept on disk as a catalogue of their own, so that
every later reindex finds them beside the shop's catalogue.

Layout under the store's root: ``images/<id>.<ext>`` and ``items.jsonl`` (one line per item: id,
path, metadata), which ``indexer.catalogue.load_catalogue`` reads like any catalogue folder.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from app.schemas import ITEM_ID_PATTERN
from indexer.catalogue import Catalogue, CatalogueItem, load_catalogue, merge_catalogues, metadata_text
from model.imaging import PHOTO_TYPES

ITEMS = "items.jsonl"
ITEM_ID = re.compile(ITEM_ID_PATTERN)
RESERVED = ("id", "path", "image")  # columns the catalogue reader takes for itself
EXTENSIONS = {t.media_type: t.suffixes[0] for t in PHOTO_TYPES}


class UploadStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.images = self.root / "images"
        self.index = self.root / ITEMS

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.images.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # API processes and workers may share the folder
            yield

    def save(self, item_id: str, data: bytes, content_type: str, metadata: dict[str, Any]) -> CatalogueItem:
        """Keep the image and its metadata (replacing an item of the same id); both writes are
        atomic renames, so a crash leaves either the old item or the new one."""
        if not ITEM_ID.fullmatch(item_id):  # match() would let a trailing newline through
            raise ValueError("an item id is 1-128 letters, digits, '_', '.' or '-', starting with a letter or digit")
        clash = sorted(set(metadata) & set(RESERVED))
        if clash:
            raise ValueError(f"metadata may not set {', '.join(clash)}")
        with self._locked():
            path = self.images / f"{item_id}{EXTENSIONS[content_type]}"
            _write_atomic(path, data)
            rows = [row for row in self._rows() if row.get("id") != item_id]
            rows.append({"id": item_id, "path": str(path.relative_to(self.root)), **metadata})
            self._write_rows(rows)
            for stale in self.images.glob(f"{item_id}.*"):  # the same id uploaded before in another format
                if stale != path and stale.stem == item_id:  # not item "a.b"'s photo when "a" is uploaded
                    stale.unlink()
        return CatalogueItem(item_id, path, {k: metadata_text(v) for k, v in metadata.items()})  # as a reindex reads it

    def remove(self, ids: Collection[str], saved_before: float | None = None) -> None:
        """Forget the uploaded items among ``ids`` (their rows and photos), so that no later reindex
        brings a deleted item back. ``saved_before`` (a time): only those whose photo was saved
        before it (an id uploaded again after its delete was asked for stays)."""
        if not self.index.is_file():
            return

        def older(row: dict[str, Any]) -> bool:
            photo = self.root / str(row.get("path", ""))
            return saved_before is None or not photo.is_file() or photo.stat().st_mtime < saved_before

        with self._locked():
            rows = self._rows()
            gone = {str(row.get("id")) for row in rows if row.get("id") in ids and older(row)}
            if gone:
                self._write_rows([row for row in rows if row.get("id") not in gone])
                for row in rows:
                    if row.get("id") in gone:
                        (self.root / str(row.get("path", ""))).unlink(missing_ok=True)

    def _write_rows(self, rows: list[dict[str, Any]]) -> None:
        _write_atomic(self.index, "".join(json.dumps(row) + "\n" for row in rows).encode())

    def _rows(self) -> list[dict[str, Any]]:
        if not self.index.is_file():
            return []
        return [json.loads(line) for line in self.index.read_text().splitlines() if line.strip()]

    def catalogue(self) -> Catalogue | None:
        return load_catalogue(self.root, self.index) if self.index.is_file() else None

    def added_to(self, catalogue: Catalogue) -> Catalogue:
        """``catalogue`` with the uploaded items (which win over an item of the same id)."""
        uploads = self.catalogue()
        return merge_catalogues(catalogue, uploads) if uploads else catalogue


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)
