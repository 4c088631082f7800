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
import io
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


def utf8_text(path: Path, data: bytes, error: type[IndexerError], what: str) -> str:
    """``data`` (``path``'s bytes) as text: UTF-8, a leading byte-order mark dropped. Anything else
    is refused with the line and byte that are not UTF-8 (``what``: the file, as the message names
    it): a Latin-1 or Windows-1252 export read leniently would turn every accented name into
    replacement characters, unsaid."""
    if b"\0" in data:
        raise error(f"{path}: not UTF-8 text (it holds NUL bytes: UTF-16, or not text); save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise error(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save {what} as UTF-8") from None


def _read_text(path: Path, what: str) -> str:
    """A catalogue's metadata or list file as text (utf8_text); an unreadable one: CatalogueError."""
    try:
        return utf8_text(path, path.read_bytes(), CatalogueError, what)
    except OSError as exc:
        raise CatalogueError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _read_metadata(path: Path) -> Iterator[dict[str, str]]:
    text = _read_text(path, "the metadata")
    if path.suffix == ".jsonl":
        # split at "\n" alone: JSON strings may hold U+2028 and the like, which splitlines() breaks at
        for number, line in enumerate(text.split("\n"), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise CatalogueError(f"{path}:{number}: not JSON ({exc.msg})") from exc
                if not isinstance(row, dict):
                    raise CatalogueError(f"{path}:{number}: not a JSON object ({type(row).__name__})")
                if "id" not in row:
                    raise CatalogueError(f"{path}:{number}: no 'id' key (its keys: {', '.join(list(row)[:12])})")
                yield {str(k): metadata_text(v) for k, v in row.items()}
    else:
        yield from _csv_rows(path, text)


def _csv_rows(path: Path, text: str) -> list[dict[str, str]]:
    """A metadata CSV's rows. Read strictly first: a quote left open runs to the file's end, every
    later row swallowed into one field, and is refused at the line it opens on. Other quoting a
    strict reader refuses (``"Nike" Air``, a space after a closing quote) is read leniently, as a
    spreadsheet would show it."""
    delimiter = csv_delimiter(text.split("\n", 1)[0], "id")
    started = 1  # the line the row being read starts on (a quoted field may span lines)

    def rows(strict: bool) -> list[dict[str, str]]:
        nonlocal started
        reader = csv.DictReader(
            io.StringIO(text, newline=""), delimiter=delimiter, skipinitialspace=True, strict=strict
        )
        names = [name.strip() for name in reader.fieldnames or []]
        if "id" not in names:  # said even when no row follows the header
            raise _no_id_column(path, names)
        reader.fieldnames = names
        out, started = [], reader.line_num + 1
        for row in reader:
            out.append(row)
            started = reader.line_num + 1
        return out

    def refused(exc: csv.Error) -> CatalogueError:
        return CatalogueError(
            f"{path}:{started}: not CSV ({exc}); a field with a quote in it is quoted whole, its quotes doubled"
        )

    try:
        return rows(strict=True)
    except csv.Error as exc:
        if "unexpected end of data" in str(exc) or "field larger" in str(exc):
            raise refused(exc) from None
    try:
        return rows(strict=False)
    except csv.Error as exc:
        raise refused(exc) from None


def metadata_text(value: object) -> str:
    """A metadata value as text: a string as it is, null as empty, anything else as JSON."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _no_id_column(path: Path, columns: list[str]) -> CatalogueError:
    named = ", ".join(repr(c) for c in columns[:12]) or "none: the file is empty"
    return CatalogueError(f"{path} has no 'id' column (its columns: {named}); name the items' id column id")


def csv_delimiter(header: str, column: str) -> str:
    """The separator that splits a CSV's header line into a ``column`` column (quotes respected, case
    and spaces ignored), else the one that splits it into the most columns; a comma for one column."""
    split = {d: [f.strip().lower() for f in next(csv.reader([header], delimiter=d), [])] for d in CSV_DELIMITERS}
    with_id = [d for d in CSV_DELIMITERS if column in split[d]]
    return with_id[0] if with_id else max(CSV_DELIMITERS, key=lambda d: len(split[d]))


class _ImageFinder:
    """An item's image by its id: ``<folder>/<id>.<ext>`` or ``<folder>/images/<id>.<ext>``, the
    suffix's case aside (``123.Jpg``; the id's own case counts). The exact names are tried first;
    each folder is listed once, and only when an id is not found so."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.listed: dict[Path, dict[tuple[str, str], Path]] = {}  # (stem, lower-case suffix) -> file

    def find(self, item_id: str) -> Path | None:
        bases = (self.folder, self.folder / "images")
        for base in bases:
            for suffix in (*IMAGE_SUFFIXES, *(s.upper() for s in IMAGE_SUFFIXES)):  # IMG_0001.HEIC
                candidate = base / f"{item_id}{suffix}"
                if _is_file(candidate):
                    return candidate
        for base in bases:
            names = self._names((base / item_id).parent)
            for suffix in IMAGE_SUFFIXES:
                found = names.get((Path(item_id).name, suffix))
                if found is not None and _is_file(found):
                    return found
        return None

    def _names(self, folder: Path) -> dict[tuple[str, str], Path]:
        if folder not in self.listed:
            try:
                with os.scandir(folder) as entries:
                    files = [Path(entry.path) for entry in entries]
                # a.JPG and a.jpg both: the first in name order, as the exact lookup would have it
                self.listed[folder] = {(f.stem, f.suffix.lower()): f for f in sorted(files, reverse=True)}
            except OSError:
                self.listed[folder] = {}
        return self.listed[folder]


def _is_file(path: Path) -> bool:
    """Path.is_file, but False for any path the system refuses (a name over 255 bytes, a folder
    it may not read): one such item is skipped, the catalogue is not."""
    try:
        return path.is_file()
    except OSError:
        return False


def _dedupe(
    entries: list[tuple[str, Path | None, dict[str, str]]], source: str, root: str, metadata_file: str | None = None
) -> Catalogue:
    items, skipped, seen = [], [], set()
    for item_id, path, metadata in entries:
        if not item_id:
            skipped.append({"id": "", "path": str(path or ""), "reason": "empty id"})
        elif item_id in seen:
            skipped.append({"id": item_id, "path": str(path or ""), "reason": "duplicate id"})
        elif path is None or not _is_file(path):
            seen.add(item_id)
            skipped.append({"id": item_id, "path": str(path or ""), "reason": _why_not_a_file(path)})
        else:
            seen.add(item_id)
            items.append(CatalogueItem(item_id, path, metadata))
    return Catalogue(items, skipped, source, root, metadata_file)


def load_catalogue(source: str | os.PathLike[str], metadata: str | os.PathLike[str] | None = None) -> Catalogue:
    """Read a catalogue from a folder (with optional metadata) or a list file."""
    source = Path(source)
    if source.is_file():
        if metadata:
            raise CatalogueError(
                f"{source} is a list of image files, which takes no metadata file; give the folder of the images "
                f"with {metadata} instead (its rows name each image by id or path)"
            )
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
    images = _ImageFinder(source)
    for row in _read_metadata(meta_path):
        item_id = (row.pop("id") or "").strip()
        given = (row.pop("path", None) or row.pop("image", None) or "").strip()
        path = images.find(item_id) if not given else _given_path(source, given)
        entries.append((item_id, path, {k: v for k, v in row.items() if k is not None}))
    return _dedupe(entries, str(meta_path), str(source), str(meta_path))


def _given_path(folder: Path, given: str) -> Path:
    """A metadata row's image path, under ``folder``; one written on Windows (``images\\1.jpg``)
    is read with its backslashes as separators when no file has the name as written."""
    path = folder / given
    if "\\" in given and not _is_file(path):
        return folder / given.replace("\\", "/")
    return path


def _walk(folder: Path) -> Iterator[Path]:
    """Every file under ``folder``, hidden ones (and hidden folders) aside, through linked folders
    too (a season's photos linked in from a share), each real folder once; a link to the folder
    itself or to one above it is not followed."""
    seen: set[str] = set()
    root = os.path.realpath(folder)
    for top, folders, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(top)
        if real in seen or (real != root and root.startswith(real.rstrip(os.sep) + os.sep)):
            folders[:] = []  # seen, or a folder above the catalogue's (its neighbours are not its items)
            continue
        seen.add(real)
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        yield from (Path(top) / name for name in names if not name.startswith("."))


def _from_folder(folder: Path) -> Catalogue:
    """Every image under ``folder``, its id the file's stem; its other files (hidden ones aside)
    reported as skipped."""
    files = sorted(p for p in _walk(folder) if _is_file(p))
    catalogue = _dedupe(
        [(p.stem, p, {}) for p in files if p.suffix.lower() in IMAGE_SUFFIXES], str(folder), str(folder)
    )
    others = [
        {"id": "", "path": str(p), "reason": NOT_AN_IMAGE} for p in files if p.suffix.lower() not in IMAGE_SUFFIXES
    ]
    return dataclasses.replace(catalogue, skipped=catalogue.skipped + others)


def _why_not_a_file(path: Path | None) -> str:
    if path is None:
        return "missing image file"
    try:
        return "not a regular file" if path.exists() else "missing image file"
    except OSError as exc:
        return f"unreadable path ({exc.strerror or exc})"


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
    lines = [line.strip() for line in _read_text(list_file, "the list").splitlines() if line.strip()]
    paths = [Path(line) if Path(line).is_absolute() else list_file.parent / line for line in lines]
    return _dedupe([(p.stem, p, {}) for p in paths], str(list_file), str(list_file))


def merge_catalogues(base: Catalogue, extra: Catalogue) -> Catalogue:
    """``base`` plus ``extra``'s items, an id in both taking ``extra``'s (items added by upload
    over the shop's catalogue); ``base`` stays the source to read again."""
    ids = {item.id for item in extra.items}
    items = [item for item in base.items if item.id not in ids] + extra.items
    return dataclasses.replace(base, items=items, skipped=base.skipped + extra.skipped)
