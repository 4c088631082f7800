import json
from pathlib import Path

import pytest
from PIL import Image

from indexer.catalogue import NOT_AN_IMAGE, CatalogueError, load_catalogue, skipped_summary
from tests.helpers import SHARED_DATA, encode, make_catalogue


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
    with pytest.raises(CatalogueError, match=r"no 'id' column \(its columns: 'sku', 'name'\)"):
        load_catalogue(tmp_path)


@pytest.mark.parametrize(
    "text",
    [
        "\ufeffid,kind\r\nx,Jackets\r\n",  # a spreadsheet's "CSV UTF-8": a byte-order mark, CRLF
        "id;kind\nx;Jackets\n",  # where the decimal mark is a comma, fields are split by semicolons
        "id\tkind\nx\tJackets\n",
        " id , kind\nx, Jackets\n",  # spaces around the header's names and after a separator
        'id;"Preis, EUR";kind\nx;"9,50";Jackets\n',  # a quoted comma does not make it a comma file
    ],
)
def test_metadata_as_spreadsheets_save_it(tmp_path: Path, text: str) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "x.jpg")
    (tmp_path / "metadata.csv").write_text(text, encoding="utf-8")
    [item] = load_catalogue(tmp_path).items
    assert item.id == "x" and item.metadata["kind"] == "Jackets"


def test_a_metadata_file_without_ids_is_refused_even_with_no_rows(tmp_path: Path) -> None:
    for text, columns in (("", "none: the file is empty"), ("sku;name\n", "'sku', 'name'")):
        (tmp_path / "metadata.csv").write_text(text)
        with pytest.raises(CatalogueError, match=f"no 'id' column \\(its columns: {columns}\\)"):
            load_catalogue(tmp_path)


def test_json_lines_with_a_byte_order_mark_and_a_path_with_spaces(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "x.png")
    (tmp_path / "items.jsonl").write_text(
        "\ufeff" + json.dumps({"id": "x", "path": " x.png "}) + "\n", encoding="utf-8"
    )
    [item] = load_catalogue(tmp_path).items
    assert item.id == "x" and item.path == tmp_path / "x.png"


def test_a_folders_photos_are_indexed_and_its_other_files_reported(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "a.jpg")
    (tmp_path / "d.HEIC").write_bytes(encode(Image.new("RGB", (16, 16)), "HEIF"))  # an iPhone's
    Image.new("RGB", (16, 16)).save(tmp_path / "e.avif")
    Image.new("RGB", (4, 4)).save(tmp_path / "b.tif")
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "sub" / "c.gif")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".DS_Store").write_bytes(b"\0")  # a system's own file: not the shop's
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref")  # nor what is in a hidden folder
    catalogue = load_catalogue(tmp_path)
    assert [i.id for i in catalogue.items] == ["a", "d", "e"]
    assert sorted(Path(s["path"]).name for s in catalogue.skipped) == ["b.tif", "c.gif", "notes.txt"]
    assert {s["reason"] for s in catalogue.skipped} == {NOT_AN_IMAGE}


def test_skipped_summary_counts_by_reason_with_examples() -> None:
    skipped = [{"id": f"m{i}", "path": "", "reason": "missing image file"} for i in range(5)]
    skipped += [{"id": "", "path": "/shop/b.tif", "reason": NOT_AN_IMAGE}]
    assert skipped_summary(skipped) == (
        "6 catalogue entries skipped: 5 missing image file (m0, m1, m2, …); "
        "1 not a JPEG, PNG, WebP, HEIC or AVIF file (b.tif)"
    )


def test_fingerprint_changes_with_the_files(tmp_path: Path) -> None:
    folder = make_catalogue(tmp_path, count=2)
    before = load_catalogue(folder).fingerprint()
    assert load_catalogue(folder).fingerprint() == before
    Image.new("RGB", (9, 9)).save(folder / "images" / "p1.jpg")
    assert load_catalogue(folder).fingerprint() != before


def test_metadata_that_is_not_utf8_is_refused_with_its_line_and_byte(tmp_path: Path) -> None:
    # Excel's plain "CSV" on Windows is Windows-1252: read leniently, "Hüte" became "H\ufffdte" unsaid
    Image.new("RGB", (4, 4)).save(tmp_path / "x.jpg")
    (tmp_path / "metadata.csv").write_bytes("id,kind\nx,Hüte\n".encode("cp1252"))
    with pytest.raises(CatalogueError, match=r"metadata.csv:2: not UTF-8 text \(byte 0xfc\)"):
        load_catalogue(tmp_path)
    (tmp_path / "metadata.csv").write_bytes("id,kind\nx,Hüte\n".encode("utf-16"))  # PowerShell's
    with pytest.raises(CatalogueError, match="not UTF-8 text .*UTF-16"):
        load_catalogue(tmp_path)
    (tmp_path / "metadata.csv").write_text("id,kind\nx,Hüte\n", encoding="utf-8")
    assert load_catalogue(tmp_path).items[0].metadata["kind"] == "Hüte"


def test_a_quote_left_open_is_an_error_at_its_line_not_the_rest_of_the_file_lost(tmp_path: Path) -> None:
    for name in ("p1", "p2", "p3"):
        Image.new("RGB", (4, 4)).save(tmp_path / f"{name}.jpg")
    (tmp_path / "metadata.csv").write_text('id,name\np1,"Tote, black\np2,Boot\np3,Cap\n')
    with pytest.raises(CatalogueError, match=r"metadata.csv:2: not CSV \(unexpected end of data\); a field with"):
        load_catalogue(tmp_path)  # line 2: where the open quote is, not the file's end
    # quoting a strict reader refuses but which closes is read as before: as a spreadsheet shows it
    (tmp_path / "metadata.csv").write_text('id,name,kind\np1,"Nike" Air,shoe\np2, "Tote, black" , bag\np3,5" heel,x\n')
    catalogue = load_catalogue(tmp_path)
    assert [i.metadata["name"] for i in catalogue.items] == ["Nike Air", "Tote, black ", '5" heel']


def test_one_unusable_id_is_skipped_and_the_catalogue_read(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "x.jpg")
    long_id = " ".join(["Langer Produktname"] * 20)  # 379 bytes: over the file system's 255 for a name
    (tmp_path / "metadata.csv").write_text(f"id,name\nx,ok\n{long_id},too long\n")
    catalogue = load_catalogue(tmp_path)
    assert [i.id for i in catalogue.items] == ["x"]
    assert [(s["id"], s["reason"]) for s in catalogue.skipped] == [(long_id, "missing image file")]


def test_images_are_found_whatever_their_suffixs_case_or_windows_separators(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "images" / "a.Jpg", "JPEG")
    Image.new("RGB", (4, 4)).save(tmp_path / "images" / "b.jpeg")
    Image.new("RGB", (4, 4)).save(tmp_path / "images" / "c.png")
    (tmp_path / "metadata.csv").write_text("id,path\na,\nb,\nc,images\\c.png\n")
    catalogue = load_catalogue(tmp_path)
    assert {i.id: i.path.name for i in catalogue.items} == {"a": "a.Jpg", "b": "b.jpeg", "c": "c.png"}
    assert catalogue.skipped == []
    (tmp_path / "metadata.csv").write_text("id\nA\n")  # the id's own case counts: no A's photo
    assert [s["reason"] for s in load_catalogue(tmp_path).skipped] == ["missing image file"]


def test_a_linked_folder_is_read_and_a_link_round_to_its_parent_is_not_followed_again(tmp_path: Path) -> None:
    shop, share = tmp_path / "shop", tmp_path / "share" / "summer"
    share.mkdir(parents=True)
    shop.mkdir()
    Image.new("RGB", (4, 4)).save(shop / "a.jpg")
    Image.new("RGB", (4, 4)).save(share / "b.jpg")
    (shop / "summer").symlink_to(share)  # a season's photos linked in from a share
    (share / "back").symlink_to(shop)  # and a link round to the shop's folder
    Image.new("RGB", (4, 4)).save(tmp_path / "neighbour.jpg")  # beside the shop: not its item
    (shop / "up").symlink_to(tmp_path)  # a link to the folder above the shop's
    catalogue = load_catalogue(shop)
    assert [i.id for i in catalogue.items] == ["a", "b"] and catalogue.skipped == []


def test_list_files_are_read_as_utf8_and_take_no_metadata_file(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "ä.png")
    listing = tmp_path / "list.txt"
    listing.write_text("\ufeffä.png\n", encoding="utf-8")  # Notepad's UTF-8: a byte-order mark
    assert [i.id for i in load_catalogue(listing).items] == ["ä"]
    with pytest.raises(CatalogueError, match="is a list of image files, which takes no metadata file"):
        load_catalogue(listing, tmp_path / "metadata.csv")
    listing.write_bytes("ä.png\n".encode("latin-1"))
    with pytest.raises(CatalogueError, match=r"list.txt:1: not UTF-8 text \(byte 0xe4\)"):
        load_catalogue(listing)


def test_json_lines_name_the_line_that_is_not_an_item_and_keep_values_as_json(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "x.png")
    row = {"id": "x", "path": "x.png", "in_stock": True, "sizes": ["S", "M"], "note": None, "name": "Hüte"}
    for bad, message in (("[1, 2]", "not a JSON object"), ('{"sku": "y"}', "no 'id' key")):
        (tmp_path / "items.jsonl").write_text(json.dumps(row) + "\n" + bad + "\n")
        with pytest.raises(CatalogueError, match=f"items.jsonl:2: {message}"):
            load_catalogue(tmp_path)
    (tmp_path / "items.jsonl").write_text(json.dumps(row) + "\n")
    [item] = load_catalogue(tmp_path).items
    assert item.metadata == {"in_stock": "true", "sizes": '["S", "M"]', "note": "", "name": "Hüte"}
    # a line separator inside a string, as json.dumps(ensure_ascii=False) writes it, is no line's end
    (tmp_path / "items.jsonl").write_text(json.dumps({**row, "name": "a\u2028b"}, ensure_ascii=False) + "\n")
    assert load_catalogue(tmp_path).items[0].metadata["name"] == "a\u2028b"
