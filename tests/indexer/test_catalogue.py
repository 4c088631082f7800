import json
from pathlib import Path

import pytest
from PIL import Image

from indexer.catalogue import CatalogueError, load_catalogue
from tests.helpers import SHARED_DATA, make_catalogue


def test_kaggle_layout_as_it_is() -> None:
    root = SHARED_DATA / "fashion-product"
    if not root.is_dir():
        pytest.skip("fashion-product data not present")
    catalogue = load_catalogue(root)
    assert len(catalogue.items) == 9583 and catalogue.skipped == []
    first = catalogue.items[0]
    assert first.path == root / "images" / f"{first.id}.jpg"
    assert {"articleType", "productDisplayName"} <= set(first.metadata)


def test_metadata_csv_reports_missing_and_duplicates(tmp_path: Path) -> None:
    catalogue = load_catalogue(make_catalogue(tmp_path, count=3, bad=True))
    reasons = {(s["id"], s["reason"]) for s in catalogue.skipped}
    assert ("missing", "missing image file") in reasons and ("p1", "duplicate id") in reasons
    assert [i.id for i in catalogue.items][:3] == ["p0", "p1", "p2"]
    assert catalogue.items[1].metadata["name"] == "product 1"  # the first of two duplicates wins


def test_folder_without_metadata_and_list_file(tmp_path: Path) -> None:
    for name in ("a", "b"):
        Image.new("RGB", (4, 4)).save(tmp_path / f"{name}.png")
    assert [i.id for i in load_catalogue(tmp_path).items] == ["a", "b"]
    listing = tmp_path / "list.txt"
    listing.write_text("a.png\nb.png\n\n")
    assert [i.id for i in load_catalogue(listing).items] == ["a", "b"]


def test_jsonl_metadata_with_paths(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "x.png")
    (tmp_path / "items.jsonl").write_text(json.dumps({"id": 7, "path": "x.png", "price": 9.5}) + "\n")
    [item] = load_catalogue(tmp_path).items
    assert item.id == "7" and item.metadata == {"price": "9.5"}


def test_bad_catalogue_errors(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match="no catalogue"):
        load_catalogue(tmp_path / "nope")
    (tmp_path / "metadata.csv").write_text("sku,name\n1,a\n")
    with pytest.raises(CatalogueError, match="no 'id' column"):
        load_catalogue(tmp_path)


def test_fingerprint_changes_with_the_files(tmp_path: Path) -> None:
    folder = make_catalogue(tmp_path, count=2)
    before = load_catalogue(folder).fingerprint()
    assert load_catalogue(folder).fingerprint() == before
    Image.new("RGB", (9, 9)).save(folder / "images" / "p1.jpg")
    assert load_catalogue(folder).fingerprint() != before
