"""Bad category maps a shop may write, each with the one line it is refused with. Fed to the loader
and the dry run by tests/indexer/test_category_map.py; bench/new_shop.py feeds them again and
records the kinds and messages (reports/new_shop.json)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from model.labels import LABEL_TO_GROUP

LABELS = sorted(LABEL_TO_GROUP)  # CCP's item labels: the committed model's part labels


@dataclass(frozen=True)
class BadMap:
    kind: str
    name: str  # the file's name (its suffix says CSV or YAML)
    content: bytes | None  # None: no file at all
    message: str  # the refusal, ``{path}`` standing for the file's path

    def write(self, folder: Path) -> Path:
        path = folder / self.name
        if self.content is not None:
            path.write_bytes(self.content)
        return path

    def expected(self, path: Path) -> str:
        return self.message.format(path=path)


BAD_MAPS = [
    BadMap(
        "unknown part label",
        "unknown-label.csv",
        b"category,label\nT-Shirt,t-shirt\nLongsleeve,tshirt\n",
        "{path}:3: 'tshirt' (for 'Longsleeve') is not a part label of the model nor 'none'; did you mean 't-shirt'?",
    ),
    BadMap(
        "duplicate category",
        "duplicate.csv",
        b"category,label\nHat,hat\nPants,pants\nHat,scarf\n",
        "{path}:4: 'Hat' is mapped twice (first on line 2)",
    ),
    BadMap(
        "empty file",
        "empty.csv",
        b"",
        "{path}: empty file; a map holds a header category,label and one row per category",
    ),
    BadMap(
        "header only",
        "header-only.csv",
        b"category,label\n",
        "{path}: no categories; a map needs at least one category,label row",
    ),
    BadMap(
        "wrong header",
        "wrong-header.csv",
        b"name,part\nHat,hat\n",
        "{path}:1: the header must be 'category,label', not 'name,part'",
    ),
    BadMap(
        "no header",
        "no-header.csv",
        b"T-Shirt,t-shirt\nHat,hat\n",
        "{path}:1: the header must be 'category,label', not 'T-Shirt,t-shirt'",
    ),
    BadMap(
        "wrong number of fields",
        "three-fields.csv",
        b"category,label\nShirts, long sleeve,shirt\n",
        "{path}:2: 3 fields, not 2 (category,label) (quote a category that holds a comma)",
    ),
    BadMap(
        "missing label",
        "no-label.csv",
        b"category,label\nHat,\n",
        "{path}:2: no label for 'Hat' (a part label of the model, or none)",
    ),
    BadMap(
        "unterminated quote",
        "open-quote.csv",
        b'category,label\n"Hat,hat\n',
        "{path}:2: not CSV (unexpected end of data)",
    ),
    BadMap(
        "not UTF-8 (Latin-1)",
        "latin-1.csv",
        "category,label\nHüte,hat\n".encode("latin-1"),
        "{path}:2: not UTF-8 text (byte 0xfc); save the map as UTF-8",
    ),
    BadMap(
        "UTF-16 or binary",
        "utf-16.csv",
        "category,label\nHat,hat\n".encode("utf-16"),
        "{path}: not UTF-8 text (it holds NUL bytes: UTF-16, or not text); save it as UTF-8",
    ),
    BadMap(
        "malformed YAML",
        "malformed.yaml",
        b"T-Shirt: t-shirt\nHat: [hat\n",
        "{path}:2: not valid YAML (while parsing a flow sequence; expected ',' or ']', but got '<stream end>')",
    ),
    BadMap(
        "YAML list, not mapping",
        "list.yaml",
        b"- T-Shirt\n- Hat\n",
        "{path}:1: a YAML map is a mapping 'category: label', not a list",
    ),
    BadMap(
        "YAML duplicate key",
        "duplicate.yaml",
        b"Hat: hat\nCap: hat\nHat: scarf\n",
        "{path}:3: 'Hat' is mapped twice (first on line 1)",
    ),
    BadMap(
        "YAML label list",
        "label-list.yaml",
        b"Hat:\n  - hat\n  - scarf\n",
        "{path}:1: the label of 'Hat' is one label, not a list or mapping",
    ),
    BadMap(
        "not a map file type",
        "map.txt",
        b"category,label\nHat,hat\n",
        "{path}: a category map is a .csv, .yaml or .yml file, not .txt",
    ),
    BadMap("missing file", "missing.csv", None, "{path}: no such file"),
]
