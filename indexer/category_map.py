"""A shop's own category names: the category map, and where a product's category value sends it.

A product's part index comes from a metadata field (``--labels-from FIELD``). Its value is looked up
in this order:

1. the shop's **category map**, a small file the shop writes: CSV with the header ``category,label``
   (separated by commas, or as a spreadsheet saves it: semicolons, tabs, |) or a YAML mapping
   ``category: label``; each label a part label of the model, or ``none`` (the product joins no
   part index, only the global one);
2. the **built-in names**: the Kaggle product set's ``articleType`` values (model/article_types.py,
   those with no item label going nowhere) and the model's own label names;
3. else the **model**: its product head places the product by its photo, as it places a product
   whose metadata has no such field.

Values are matched exactly, spaces around them trimmed. A map is read and checked whole before
anything is embedded; every problem is one :class:`CategoryMapError` whose message names the file
and the line (``python -m indexer categories`` shows where each value of a catalogue would go).
"""

from __future__ import annotations

import csv
import difflib
import io
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from indexer.catalogue import CSV_DELIMITERS, csv_delimiter, utf8_text
from indexer.errors import IndexerError
from model.article_types import ARTICLE_TYPE_TO_LABEL, ARTICLE_TYPES_WITHOUT_LABEL

NO_LABEL = "none"  # a map's label for "no part index": the product is in the global index only
HEADER = ("category", "label")
MAP_KINDS = {".csv": "csv", ".yaml": "yaml", ".yml": "yaml"}
MAX_MAP_BYTES = 4 * 1024 * 1024  # a map names categories, not products: a bigger file is the wrong file
REQUEST = "category_map"  # the source of a map sent as a mapping (the reindex request's field)

Route = Literal["map", "built-in", "model"]  # who decides a category value's part index


class CategoryMapError(IndexerError):
    """A category map that cannot be used; the message is one line naming the file and the row."""


@dataclass(frozen=True)
class CategoryMap:
    entries: dict[str, str]  # category value -> a part label of the model, or NO_LABEL
    source: str  # the file it was read from (REQUEST for a mapping sent to the API)
    lines: dict[str, int] = field(default_factory=dict, compare=False)  # each category's line in the file

    def where(self, category: str) -> str:
        """``file:line`` of a category, for messages."""
        line = self.lines.get(category)
        return f"{self.source}:{line}" if line else f"{self.source}[{category!r}]"

    def check_labels(self, labels: Collection[str]) -> CategoryMap:
        """The map itself, when every label is one of ``labels`` (the model's) or ``none``."""
        for category, label in self.entries.items():
            if label != NO_LABEL and label not in labels:
                raise CategoryMapError(f"{self.where(category)}: {_unknown_label(label, category, labels)}")
        return self

    def record(self) -> dict[str, Any]:
        """What a bundle's manifest keeps of the map (items added later are placed by it too)."""
        return {"source": self.source, "entries": dict(self.entries)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> CategoryMap | None:
        if not record:
            return None
        return cls({str(k): str(v) for k, v in record["entries"].items()}, str(record.get("source", "")))


def _unknown_label(label: str, category: str, labels: Collection[str]) -> str:
    close = difflib.get_close_matches(label, sorted(labels), n=1, cutoff=0.8)
    hint = f"did you mean {close[0]!r}?" if close else f"its labels: {', '.join(sorted(labels))}"
    return f"{label!r} (for {category!r}) is not a part label of the model nor {NO_LABEL!r}; {hint}"


def read_category_map(path: str | os.PathLike[str]) -> CategoryMap:
    """A map file, checked for everything but its labels (``check_labels``, with the model's)."""
    path = Path(path)
    kind = MAP_KINDS.get(path.suffix.lower())
    if kind is None:
        raise CategoryMapError(f"{path}: a category map is a .csv, .yaml or .yml file, not {path.suffix or 'this'}")
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise CategoryMapError(f"{path}: not a file")
        if size > MAX_MAP_BYTES:
            raise CategoryMapError(f"{path}: {size / 2**20:.0f} MiB is no category map (at most 4 MiB)")
        data = path.read_bytes()
    except FileNotFoundError:
        raise CategoryMapError(f"{path}: no such file") from None
    except OSError as exc:
        raise CategoryMapError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    text = utf8_text(path, data, CategoryMapError, "the map")
    if not text.strip():
        raise CategoryMapError(f"{path}: empty file; a map holds a header category,label and one row per category")
    rows = _csv_rows(path, text) if kind == "csv" else _yaml_rows(path, text)
    return _from_rows(str(path), rows)


def load_category_map(path: str | os.PathLike[str], labels: Collection[str]) -> CategoryMap:
    """A map file checked whole, its labels against the model's ``labels``."""
    return read_category_map(path).check_labels(labels)


def category_map_from_mapping(entries: Mapping[str, str], labels: Collection[str] | None = None) -> CategoryMap:
    """A map given as a mapping (the reindex request's ``category_map``), checked as a file is."""
    mapped = _from_rows(REQUEST, [(0, str(k), str(v)) for k, v in entries.items()])
    return mapped.check_labels(labels) if labels is not None else mapped


def _csv_rows(path: Path, text: str) -> list[tuple[int, str, str]]:
    # The separator is read off the header, as for a metadata CSV: where the decimal mark is a comma,
    # a spreadsheet saves "category;label".
    first = next((line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")), "")
    delimiter = csv_delimiter(first, HEADER[0])
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows, header = [], None
    try:
        for row in reader:
            line = reader.line_num
            cells = [cell.strip() for cell in row]
            if not any(cells) or cells[0].startswith("#"):
                continue  # blank lines and comments
            if header is None:
                header = [cell.lower() for cell in cells]
                if tuple(header) != HEADER:
                    written = delimiter.join(row)
                    raise CategoryMapError(f"{path}:{line}: the header must be 'category,label', not {written!r}")
                continue
            if len(cells) != 2:
                held = "a comma" if delimiter == "," else repr(delimiter)
                hint = f" (quote a category that holds {held})" if len(cells) > 2 else ""
                if len(cells) == 1 and any(d in cells[0] for d in CSV_DELIMITERS if d != delimiter):
                    hint = f" (the header separates its fields with {held})"
                fields = f"{len(cells)} field" + ("s" if len(cells) > 1 else "")
                raise CategoryMapError(f"{path}:{line}: {fields}, not 2 (category,label){hint}")
            rows.append((line, cells[0], cells[1]))
    except csv.Error as exc:
        raise CategoryMapError(f"{path}:{reader.line_num}: not CSV ({exc})") from None
    return rows


def _yaml_rows(path: Path, text: str) -> list[tuple[int, str, str]]:
    try:
        import yaml
    except ImportError:
        raise CategoryMapError(
            f"{path}: reading a YAML map needs PyYAML (pip install pyyaml); or write it as CSV"
        ) from None
    try:
        # BaseLoader: every scalar stays the text written ("No", "1.0" and "null" are categories, not
        # a boolean, a number and nothing); composed, not constructed, so each key keeps its line.
        root = yaml.compose(text, Loader=yaml.BaseLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.context_mark or exc.problem_mark  # where the broken construct starts
        line = f":{mark.line + 1}" if mark else ""
        problem = "; ".join(filter(None, [exc.context, exc.problem]))
        raise CategoryMapError(f"{path}{line}: not valid YAML ({problem})") from None
    except yaml.YAMLError as exc:
        raise CategoryMapError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if root is None:
        raise CategoryMapError(f"{path}: no categories; a YAML map is one 'category: label' line per category")
    if not isinstance(root, yaml.MappingNode):
        kind = "a list" if isinstance(root, yaml.SequenceNode) else "one value"
        raise CategoryMapError(
            f"{path}:{root.start_mark.line + 1}: a YAML map is a mapping 'category: label', not {kind}"
        )
    rows = []
    for key, value in root.value:
        line = key.start_mark.line + 1
        if not isinstance(key, yaml.ScalarNode):
            raise CategoryMapError(f"{path}:{line}: a category is a name, not a list or mapping")
        if not isinstance(value, yaml.ScalarNode):
            raise CategoryMapError(f"{path}:{line}: the label of {key.value!r} is one label, not a list or mapping")
        rows.append((line, str(key.value).strip(), str(value.value).strip()))
    return rows


def _from_rows(source: str, rows: list[tuple[int, str, str]]) -> CategoryMap:
    """(line, category, label) rows -> the map; line 0: a mapping's entry, named by its category."""
    entries: dict[str, str] = {}
    lines: dict[str, int] = {}
    for line, category, label in rows:
        where = f"{source}:{line}" if line else f"{source}[{category!r}]"
        category = category.strip()
        if not category:
            raise CategoryMapError(f"{where}: empty category")
        if category in entries:
            first = f" (first on line {lines[category]})" if lines.get(category) else ""
            raise CategoryMapError(f"{where}: {category!r} is mapped twice{first}")
        label = label.strip().lower()
        if not label:
            raise CategoryMapError(f"{where}: no label for {category!r} (a part label of the model, or {NO_LABEL})")
        entries[category] = label
        if line:
            lines[category] = line
    if not entries:
        raise CategoryMapError(f"{source}: no categories; a map needs at least one category,label row")
    return CategoryMap(entries, source, lines)


@dataclass(frozen=True)
class Destination:
    """Where a category value sends its products."""

    route: Route
    label: str | None  # the part index it joins; None: none (map, built-in) or the model's choice (model)


def destination(value: object, labels: Collection[str], category_map: CategoryMap | None = None) -> Destination:
    """The part index of a product whose category field holds ``value`` (module docstring's order).
    A built-in name whose label the model lacks joins no part index, as before."""
    name = str(value).strip()
    if category_map is not None and name in category_map.entries:
        label = category_map.entries[name]
        return Destination("map", None if label == NO_LABEL else label)
    if name in ARTICLE_TYPE_TO_LABEL:
        label = ARTICLE_TYPE_TO_LABEL[name]
        return Destination("built-in", label if label in labels else None)
    if name in ARTICLE_TYPES_WITHOUT_LABEL:
        return Destination("built-in", None)
    if name in labels:
        return Destination("built-in", name)
    return Destination("model", None)
