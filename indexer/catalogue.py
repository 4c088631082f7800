"""Catalogue input: what items to index, where their images are, and what to return with them.

Accepted forms:
- a folder of images, optionally with metadata (CSV or JSON lines with an ``id`` column/key, and an
  optional ``path``/``image`` field; otherwise the image is found as ``<folder>/<id>.<ext>`` or
  ``<folder>/images/<id>.<ext>``);
- the Kaggle fashion-product layout (``styles.csv`` + ``images/<id>.jpg``) as it is;
- a text file listing image paths, one per line (the id is the file's stem).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from indexer.errors import IndexerError
from model.imaging import PHOTO_TYPE_NAMES, PHOTO_TYPES

IMAGE_SUFFIXES = tuple(suffix for t in PHOTO_TYPES for suffix in t.suffixes)
NOT_AN_IMAGE = f"not a {PHOTO_TYPE_NAMES} file"  # a folder's other files: reported, so that none vanishes unsaid
# A metadata CSV's field separator, read off its header line: a spreadsheet saved where the decimal
# mark is a comma writes semicolons.
CSV_DELIMITERS = (",", ";", "\t", "|")
METADATA_NAMES = ("metadata.csv", "metadata.jsonl", "styles.csv", "items.csv", "items.jsonl")


class CatalogueError(IndexerError):
    """The catalogue as a whole cannot be read (single bad items are skipped, not raised)."""


@dataclass(frozen=True)
class CatalogueItem:
    id: str
    path: Path
    metadata: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


@dataclass
class Catalogue:
    items: list[CatalogueItem]
    skipped: list[dict[str, str]]  # {"id", "path", "reason"} for entries that cannot be indexed
    source: str  # what the entries were read from (the metadata file, the folder or the list file)
    root: str = ""  # the arguments that read it again: load_catalogue(root, metadata)
    metadata: str | None = None

    def fingerprint(self) -> str:
        """Changes whenever an id, a path or a file's size or mtime changes."""
        digest = hashlib.sha256()
        for item in sorted(self.items, key=lambda i: i.id):
            try:
                stat = item.path.stat()
                digest.update(f"{item.id}\0{item.path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            except OSError:
                digest.update(f"{item.id}\0{item.path}\0missing\n".encode())
        return digest.hexdigest()


def _read_metadata(path: Path) -> Iterator[dict[str, str]]:
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8-sig") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise CatalogueError(f"{path}:{number}: not JSON ({exc.msg})") from exc
                    yield {str(k): "" if v is None else str(v) for k, v in row.items()}
    else:
        # utf-8-sig: a spreadsheet's "CSV UTF-8" starts with a byte-order mark, which would otherwise
        # become part of the first column's name ("\ufeffid")
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as handle:
            header = handle.readline()
            handle.seek(0)
            reader = csv.DictReader(handle, delimiter=csv_delimiter(header, "id"), skipinitialspace=True)
            names = [name.strip() for name in reader.fieldnames or []]
            if "id" not in names:  # said even when no row follows the header
                raise _no_id_column(path, names)
            reader.fieldnames = names
            yield from reader


def _no_id_column(path: Path, columns: list[str]) -> CatalogueError:
    named = ", ".join(repr(c) for c in columns[:12]) or "none: the file is empty"
    return CatalogueError(f"{path} has no 'id' column (its columns: {named}); name the items' id column id")


def csv_delimiter(header: str, column: str) -> str:
    """The separator that splits a CSV's header line into a ``column`` column (quotes respected, case
    and spaces ignored), else the one that splits it into the most columns; a comma for one column."""
    split = {d: [f.strip().lower() for f in next(csv.reader([header], delimiter=d), [])] for d in CSV_DELIMITERS}
    with_id = [d for d in CSV_DELIMITERS if column in split[d]]
    return with_id[0] if with_id else max(CSV_DELIMITERS, key=lambda d: len(split[d]))


def _find_image(folder: Path, item_id: str) -> Path | None:
    for base in (folder, folder / "images"):
        for suffix in (*IMAGE_SUFFIXES, *(s.upper() for s in IMAGE_SUFFIXES)):  # IMG_0001.HEIC
            candidate = base / f"{item_id}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _dedupe(
    entries: list[tuple[str, Path | None, dict[str, str]]], source: str, root: str, metadata_file: str | None = None
) -> Catalogue:
    items, skipped, seen = [], [], set()
    for item_id, path, metadata in entries:
        if not item_id:
            skipped.append({"id": "", "path": str(path or ""), "reason": "empty id"})
        elif item_id in seen:
            skipped.append({"id": item_id, "path": str(path or ""), "reason": "duplicate id"})
        elif path is None or not path.is_file():
            seen.add(item_id)
            reason = "not a regular file" if path is not None and path.exists() else "missing image file"
            skipped.append({"id": item_id, "path": str(path or ""), "reason": reason})
        else:
            seen.add(item_id)
            items.append(CatalogueItem(item_id, path, metadata))
    return Catalogue(items, skipped, source, root, metadata_file)


def load_catalogue(source: str | os.PathLike[str], metadata: str | os.PathLike[str] | None = None) -> Catalogue:
    """Read a catalogue from a folder (with optional metadata) or a list file."""
    source = Path(source)
    if source.is_file():
        return _from_list(source)
    if not source.is_dir():
        raise CatalogueError(f"no catalogue at {source}")
    meta_path = (
        Path(metadata) if metadata else next((source / n for n in METADATA_NAMES if (source / n).is_file()), None)
    )
    if meta_path is None:
        return _from_folder(source)
    entries: list[tuple[str, Path | None, dict[str, str]]] = []
    if not meta_path.is_file():
        raise CatalogueError(f"no metadata file at {meta_path}")
    for row in _read_metadata(meta_path):
        if "id" not in row:  # a JSON line without one (a CSV's header is checked as it is read)
            raise _no_id_column(meta_path, [k for k in row if k is not None])
        item_id = (row.pop("id") or "").strip()
        given = (row.pop("path", None) or row.pop("image", None) or "").strip()
        path = source / given if given else _find_image(source, item_id)
        entries.append((item_id, path, {k: v for k, v in row.items() if k is not None}))
    return _dedupe(entries, str(meta_path), str(source), str(meta_path))


def _from_folder(folder: Path) -> Catalogue:
    """Every image under ``folder``, its id the file's stem; its other files (hidden ones aside)
    reported as skipped."""
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    catalogue = _dedupe(
        [(p.stem, p, {}) for p in files if p.suffix.lower() in IMAGE_SUFFIXES], str(folder), str(folder)
    )
    others = [
        {"id": "", "path": str(p), "reason": NOT_AN_IMAGE} for p in files if p.suffix.lower() not in IMAGE_SUFFIXES
    ]
    return dataclasses.replace(catalogue, skipped=catalogue.skipped + others)


def skipped_summary(skipped: list[dict[str, str]], examples: int = 3) -> str:
    """One line: how many entries were skipped, by reason, with a few of each reason's ids."""
    by_reason: dict[str, list[str]] = {}
    for entry in skipped:
        by_reason.setdefault(entry["reason"], []).append(entry["id"] or Path(entry["path"]).name)
    parts = [
        f"{len(ids)} {reason} ({', '.join(ids[:examples])}{', …' if len(ids) > examples else ''})"
        for reason, ids in sorted(by_reason.items(), key=lambda kv: -len(kv[1]))
    ]
    return f"{len(skipped)} catalogue entries skipped: " + "; ".join(parts)


def _from_list(list_file: Path) -> Catalogue:
    lines = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
    paths = [Path(line) if Path(line).is_absolute() else list_file.parent / line for line in lines]
    return _dedupe([(p.stem, p, {}) for p in paths], str(list_file), str(list_file))


def merge_catalogues(base: Catalogue, extra: Catalogue) -> Catalogue:
    """``base`` plus ``extra``'s items, an id in both taking ``extra``'s (items added by upload
    over the shop's catalogue); ``base`` stays the source to read again."""
    ids = {item.id for item in extra.items}
    items = [item for item in base.items if item.id not in ids] + extra.items
    return dataclasses.replace(base, items=items, skipped=base.skipped + extra.skipped)
