"""Versioned, immutable index bundles and the pointer that says which one is live.

Layout under the store root:
    versions/<version>/manifest.json    what the bundle holds (model, labels, counts, index types…)
    versions/<version>/items.jsonl      one line per item: internal key, id, metadata
    versions/<version>/global.faiss     whole-image index (the baseline mode)
    versions/<version>/parts/<label>.faiss  one index per part label
    staging/<version>/                  a bundle being written; never read
    current -> versions/<version>       the live bundle, switched by an atomic rename

A bundle is written completely under staging/, renamed into versions/, and only then does the
pointer move; a crash at any point leaves the previous bundle live and whole.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss

from indexer.errors import IndexerError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
ITEMS = "items.jsonl"
GLOBAL_INDEX = "global.faiss"
PARTS_DIR = "parts"


class BundleError(IndexerError):
    """A bundle or store is missing or inconsistent."""


def label_filename(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", label) + ".faiss"


def new_version() -> str:
    """Sortable by time, unique across machines."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:6]


@dataclass(frozen=True)
class ItemRecord:
    key: int  # the int64 id inside the FAISS indexes
    id: str  # the catalogue's id
    metadata: dict[str, Any]
    image: str = ""  # the product photo's path on the indexer's disk (served as its thumbnail)


class Bundle:
    """A published bundle, loaded read-only (flat and IVF indexes memory-mapped)."""

    def __init__(self, path: Path, mmap: bool = True, checksums: bool = True) -> None:
        self.path = path
        try:
            self.manifest: dict[str, Any] = json.loads((path / MANIFEST).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BundleError(f"cannot read the manifest of {path}: {exc}") from exc
        self.version: str = self.manifest["version"]
        if checksums:
            _verify(path, self.manifest.get("checksums", {}))
        self.items: dict[int, ItemRecord] = {}
        with open(path / ITEMS) as handle:
            for line in handle:
                row = json.loads(line)
                self.items[row["key"]] = ItemRecord(
                    row["key"], row["id"], row.get("metadata", {}), row.get("image", "")
                )
        self.keys_by_id = {record.id: key for key, record in self.items.items()}
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        try:
            self.part_indexes: dict[str, faiss.Index] = {
                label: read_index(path / PARTS_DIR / name, flags)
                for label, name in self.manifest["index"]["files"].items()
            }
            self.global_index = read_index(path / GLOBAL_INDEX, flags)
        except RuntimeError as exc:
            raise BundleError(f"bundle {self.version} has an unreadable index: {str(exc).strip()[-200:]}") from exc

    @property
    def labels(self) -> list[str]:
        return list(self.part_indexes)

    @property
    def searchable_labels(self) -> set[str]:
        """The labels whose index holds products: what a photo's part can be searched as."""
        return {label for label, index in self.part_indexes.items() if index.ntotal > 0}

    @property
    def complete(self) -> bool:
        """False for a first slice of its catalogue, published early (see indexer.build)."""
        return bool(self.manifest.get("catalogue", {}).get("complete", True))

    @property
    def model_sha256(self) -> str:
        return str(self.manifest["model"]["sha256"])


def _checksums(path: Path) -> dict[str, dict[str, Any]]:
    """Size and SHA-256 of every data file of the bundle in ``path``, by relative path."""
    sums = {}
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.name != MANIFEST):
        digest = hashlib.sha256()
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        sums[file.relative_to(path).as_posix()] = {"bytes": file.stat().st_size, "sha256": digest.hexdigest()}
    return sums


def _verify(path: Path, expected: dict[str, dict[str, Any]]) -> None:
    """A truncated or altered file fails here, before FAISS maps it (bundles written before
    checksums were recorded have none to check)."""
    if not expected:
        return
    found = _checksums(path)
    for name, want in expected.items():
        got = found.get(name)
        if got is None:
            raise BundleError(f"bundle {path.name} lacks its file {name}")
        if got["bytes"] != want["bytes"]:
            raise BundleError(f"bundle {path.name}: {name} has {got['bytes']} bytes, {want['bytes']} were written")
        if got["sha256"] != want["sha256"]:
            raise BundleError(f"bundle {path.name}: {name} differs from what was written (checksum)")


def read_index(path: Path, flags: int = 0) -> faiss.Index:
    try:
        return faiss.read_index(str(path), flags)
    except RuntimeError:
        if flags:  # not every index type can be memory-mapped
            return faiss.read_index(str(path))
        raise


def write_bundle(
    path: Path,
    manifest: dict[str, Any],
    items: Iterator[ItemRecord] | list[ItemRecord],
    part_indexes: dict[str, faiss.Index],
    global_index: faiss.Index,
) -> None:
    """Write every file of a bundle into ``path`` (a staging folder) and flush it to disk."""
    (path / PARTS_DIR).mkdir(parents=True, exist_ok=True)
    files = {label: label_filename(label) for label in sorted(part_indexes)}
    for label, name in files.items():
        faiss.write_index(part_indexes[label], str(path / PARTS_DIR / name))
    faiss.write_index(global_index, str(path / GLOBAL_INDEX))
    with open(path / ITEMS, "w") as handle:
        for record in items:
            row = {"key": record.key, "id": record.id, "metadata": record.metadata, "image": record.image}
            handle.write(json.dumps(row) + "\n")
    manifest = {**manifest, "index": {**manifest.get("index", {}), "files": files}, "checksums": _checksums(path)}
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2))  # written last: its presence marks a whole bundle
    for file in [*path.rglob("*"), path]:
        _fsync(file)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BundleStore:
    """The folder of bundle versions and the live pointer."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.staging_dir = self.root / "staging"
        self.pointer = self.root / "current"

    def current_version(self) -> str | None:
        try:
            return Path(os.readlink(self.pointer)).name
        except FileNotFoundError:
            return None

    def versions(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir() if (p / MANIFEST).is_file())

    def open(self, version: str | None = None, mmap: bool = True) -> Bundle:
        return Bundle(self._path(version), mmap=mmap)

    def manifest(self, version: str | None = None) -> dict[str, Any]:
        """A version's manifest alone (default: the live one), without opening or checking its files."""
        path = self._path(version) / MANIFEST
        try:
            return json.loads(path.read_text())  # type: ignore[no-any-return]
        except (OSError, json.JSONDecodeError) as exc:
            raise BundleError(f"cannot read {path}: {exc}") from exc

    def skipped_by(self, version: str) -> list[dict[str, str]]:
        """The catalogue entries left out by the job that published ``version`` ({"id", "path",
        "reason"}): a build's whole list; an add's own (its manifest's ``change``: the list it
        carries on is its base's too), none for a delete."""
        manifest = self.manifest(version)
        if manifest.get("parent"):
            return list(manifest.get("change", {}).get("skipped", []))
        return list(manifest.get("skipped", []))

    def _path(self, version: str | None) -> Path:
        version = version or self.current_version()
        if version is None:
            raise BundleError(f"no bundle has been published in {self.root}")
        path = self.versions_dir / version
        if not (path / MANIFEST).is_file():
            raise BundleError(f"no bundle version {version!r} in {self.root}")
        return path

    @contextmanager
    def writer(self) -> Iterator[None]:
        """One writer at a time; leftovers of crashed builds are cleared on entry."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if self.staging_dir.is_dir():
                    for leftover in self.staging_dir.iterdir():
                        log.warning("removing %s left by an interrupted build", leftover)
                        shutil.rmtree(leftover, ignore_errors=True)
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def staging(self, version: str) -> Path:
        path = self.staging_dir / version
        path.mkdir(parents=True)
        return path

    def publish(self, version: str, keep: int = 3) -> Path:
        """Move a finished staging folder into versions/ and point ``current`` at it, atomically."""
        staged = self.staging_dir / version
        if not (staged / MANIFEST).is_file():
            raise BundleError(f"staging folder {staged} holds no finished bundle")
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        final = self.versions_dir / version
        staged.rename(final)
        _fsync(self.versions_dir)
        self._point_at(version)
        self.prune(keep)
        return final

    def rollback(self, version: str) -> None:
        if version not in self.versions():
            raise BundleError(f"no bundle version {version!r} to roll back to")
        self._point_at(version)

    def _point_at(self, version: str) -> None:
        tmp = self.root / f".current-{uuid.uuid4().hex}"
        os.symlink(Path("versions") / version, tmp)
        os.replace(tmp, self.pointer)  # rename(2) is atomic: readers see the old or the new target
        _fsync(self.root)
        log.info("bundle %s is live", version)

    def prune(self, keep: int) -> list[str]:
        """Delete the oldest versions beyond ``keep``; the live one is never deleted."""
        current = self.current_version()
        old = [v for v in self.versions() if v != current][: max(0, len(self.versions()) - max(keep, 1))]
        for version in old:
            shutil.rmtree(self.versions_dir / version, ignore_errors=True)
        return old
