import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import indexer.build
from indexer.__main__ import main
from indexer.build import IndexOptions, add_items, build_bundle
from indexer.bundle import BundleStore
from indexer.catalogue import CatalogueItem, load_catalogue
from indexer.category_map import (
    CategoryMap,
    CategoryMapError,
    category_map_from_mapping,
    destination,
    load_category_map,
    read_category_map,
)
from tests.helpers import add_field, make_catalogue
from tests.indexer.bad_maps import BAD_MAPS, LABELS, BadMap

SHOP_MAP = (
    "category,label\n"
    "# the shop's names, as its metadata writes them\n"
    "T-Shirt,t-shirt\n"
    "Longsleeve,Top\n"
    "Outwear,jacket\n"
    '"Pants, chinos",pants\n'
    "Gift card,none\n"
)


@pytest.mark.parametrize("bad", BAD_MAPS, ids=[b.kind for b in BAD_MAPS])
def test_a_bad_map_is_refused_with_one_line_naming_the_row(bad: BadMap, tmp_path: Path) -> None:
    path = bad.write(tmp_path)
    with pytest.raises(CategoryMapError) as refused:
        load_category_map(path, LABELS)
    assert str(refused.value) == bad.expected(path)
    assert "\n" not in str(refused.value)


def test_there_are_many_kinds_of_bad_map() -> None:
    assert len({b.kind for b in BAD_MAPS}) == len(BAD_MAPS) >= 5


def test_a_good_csv_map(tmp_path: Path) -> None:
    path = tmp_path / "map.csv"
    path.write_bytes(b"\xef\xbb\xbf" + SHOP_MAP.encode())  # a spreadsheet's BOM is no part of the header
    mapped = load_category_map(path, LABELS)
    assert mapped.entries == {
        "T-Shirt": "t-shirt",
        "Longsleeve": "top",  # labels are lower-cased
        "Outwear": "jacket",
        "Pants, chinos": "pants",
        "Gift card": "none",
    }
    assert mapped.lines["Outwear"] == 5 and mapped.source == str(path)
    assert CategoryMap.from_record(mapped.record()) == mapped


@pytest.mark.parametrize("separator", [";", "\t"], ids=["semicolons", "tabs"])
def test_a_spreadsheets_separator_is_read_off_the_header(separator: str, tmp_path: Path) -> None:
    # where the decimal mark is a comma, a spreadsheet saves "category;label"
    path = tmp_path / "map.csv"
    text = 'Category{0} Label\nT-Shirt{0}t-shirt\n"Pants{0} chinos"{0}pants\nShirts, long sleeve{0}shirt\n'
    path.write_text(text.format(separator), encoding="utf-8")
    mapped = load_category_map(path, LABELS)
    assert mapped.entries == {"T-Shirt": "t-shirt", f"Pants{separator} chinos": "pants", "Shirts, long sleeve": "shirt"}
    assert mapped.lines["Shirts, long sleeve"] == 4


def test_the_separator_is_read_off_the_header_past_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "map.csv"
    path.write_text('# exported, v2\n\n"Category";"Label"\nT-Shirt;t-shirt\n', encoding="utf-8")
    assert load_category_map(path, LABELS).entries == {"T-Shirt": "t-shirt"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "category;label\nShirts; long sleeve;shirt\n",
            "3 fields, not 2 (category,label) (quote a category that holds ';')",
        ),
        ("category;label\nHat,hat\n", "1 field, not 2 (category,label) (the header separates its fields with ';')"),
    ],
    ids=["three fields", "mixed separators"],
)
def test_a_bad_row_of_a_semicolon_map_names_the_separator(text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "map.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CategoryMapError) as refused:
        load_category_map(path, LABELS)
    assert str(refused.value) == f"{path}:2: {message}"


def test_a_good_yaml_map_keeps_every_name_as_written(tmp_path: Path) -> None:
    path = tmp_path / "map.yml"
    path.write_text("# YAML 1.1 would read No as false and 1.0 as a number\nNo: none\n'1.0': hat\n  # note\nOn: Bag\n")
    assert read_category_map(path).entries == {"No": "none", "1.0": "hat", "On": "bag"}
    assert read_category_map(path).lines == {"No": 2, "1.0": 3, "On": 5}


def test_a_map_sent_as_a_mapping_is_checked_as_a_file_is() -> None:
    assert category_map_from_mapping({"Hat": "HAT"}, LABELS).entries == {"Hat": "hat"}
    with pytest.raises(CategoryMapError, match=r"^category_map\['Hat'\]: 'hats' \(for 'Hat'\) is not a part label"):
        category_map_from_mapping({"Hat": "hats"}, LABELS)
    with pytest.raises(CategoryMapError, match=r"^category_map: no categories"):
        category_map_from_mapping({}, LABELS)


def test_where_a_value_goes_map_first_then_built_in_names_then_the_model() -> None:
    shop = CategoryMap({"Jeans": "pants", "Hat": "hat", "Gift card": "none"}, "map.csv")
    assert destination("Jeans", LABELS, shop) == destination(" Jeans ", LABELS, shop)
    assert (destination("Jeans", LABELS, shop).route, destination("Jeans", LABELS, shop).label) == ("map", "pants")
    assert (destination("Jeans", LABELS).route, destination("Jeans", LABELS).label) == ("built-in", "jeans")
    assert (destination("Gift card", LABELS, shop).route, destination("Gift card", LABELS, shop).label) == ("map", None)
    assert (destination("Handbags", LABELS).route, destination("Handbags", LABELS).label) == ("built-in", "bag")
    assert (destination("Perfume and Body Mist", LABELS).route, destination("Perfume and Body Mist", LABELS).label) == (
        "built-in",
        None,
    )
    assert (destination("sneakers", LABELS).route, destination("sneakers", LABELS).label) == ("built-in", "sneakers")
    assert destination("Longsleeve", LABELS).route == "model"  # a shop's own name nobody mapped
    assert destination("", LABELS).route == "model"
    assert destination("Handbags", ["red"]).label is None  # a built-in label the model lacks: no part


def shop_catalogue(folder: Path, values: list[str]) -> Path:
    return add_field(make_catalogue(folder, count=len(values)), "category", values)


def test_a_build_places_a_shops_names_by_its_map_and_records_it(tmp_path: Path, shop_checkpoint: Path) -> None:
    folder = shop_catalogue(tmp_path / "cat", ["T-Shirt", "Outwear", "Longsleeve", "Gift card", "Outwear", "Jeans"])
    (tmp_path / "map.csv").write_text(SHOP_MAP)
    shop_map = read_category_map(tmp_path / "map.csv")
    store = BundleStore(tmp_path / "bundles")
    options = IndexOptions(threshold=0.0, max_parts=1, batch_size=4, workers=0, labels_from="category")
    build_bundle(store, shop_checkpoint, load_catalogue(folder), dataclasses.replace(options, category_map=shop_map))
    bundle = store.open()
    parts = {r.id: r.metadata["parts"] for r in bundle.items.values()}
    assert parts == {"p0": ["t-shirt"], "p1": ["jacket"], "p2": ["top"], "p3": [], "p4": ["jacket"], "p5": ["jeans"]}
    assert bundle.manifest["index"]["counts"] == {"jacket": 2, "jeans": 1, "t-shirt": 1, "top": 1}
    assert bundle.manifest["options"]["category_map"] == shop_map.record()

    # items added later are placed by the map the bundle was built with, not by the caller's options
    added = CatalogueItem("extra", folder / "images" / "p0.jpg", {"category": "Longsleeve"})
    add_items(store, shop_checkpoint, [added], options)
    assert store.open().items[store.open().keys_by_id["extra"]].metadata["parts"] == ["top"]


def test_a_value_nobody_maps_is_placed_by_the_product_head(tmp_path: Path, shop_checkpoint: Path) -> None:
    folder = shop_catalogue(tmp_path / "cat", ["Hoodie-ish", "Hoodie-ish", ""])
    store = BundleStore(tmp_path / "bundles")
    options = IndexOptions(threshold=0.0, max_parts=1, batch_size=4, workers=0, labels_from="category")
    build_bundle(store, shop_checkpoint, load_catalogue(folder), options)
    bundle = store.open()
    for item in bundle.items.values():  # one category per product, the product head's (possibly "other": none)
        assert len(item.metadata["parts"]) <= 1
    assert sum(bundle.manifest["index"]["counts"].values()) >= 1


def test_a_map_naming_a_label_the_model_lacks_fails_before_embedding(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(indexer.build, "embed_items", lambda *a, **k: pytest.fail("embedded before the check"))
    folder = shop_catalogue(tmp_path / "cat", ["T-Shirt", "Hat"])
    shop = category_map_from_mapping({"T-Shirt": "red", "Hat": "hat"})
    options = IndexOptions(workers=0, labels_from="category", category_map=shop)
    store = BundleStore(tmp_path / "bundles")
    with pytest.raises(CategoryMapError, match=r"^category_map\['Hat'\]: 'hat' \(for 'Hat'\) is not a part label"):
        build_bundle(store, tiny_checkpoint, load_catalogue(folder), options)
    with pytest.raises(CategoryMapError, match="--labels-from FIELD"):
        build_bundle(store, tiny_checkpoint, load_catalogue(folder), IndexOptions(labels_from=None, category_map=shop))
    assert store.current_version() is None


DRY_RUN_VALUES = ["T-Shirt", "T-Shirt", "Outwear", "Hat", "Hat", "Hat", "Handbags", "Perfume and Body Mist", "", "Tee"]


def test_the_dry_run_says_where_each_value_goes(tmp_path: Path, shop_checkpoint: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    folder = shop_catalogue(tmp_path / "cat", DRY_RUN_VALUES)
    (tmp_path / "map.csv").write_text("category,label\nT-Shirt,t-shirt\nOutwear,jacket\nSweats,sweatshirt\n")
    common = ["categories", "--catalogue", str(folder), "--labels-from", "category", "--workers", "0"]
    args = [*common, "--map", str(tmp_path / "map.csv"), "--checkpoint", str(shop_checkpoint), "--sample", "2"]
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {r["value"]: r for r in report["rows"]}
    assert [r["value"] for r in report["rows"]][:2] == ["Hat", "T-Shirt"]  # most products first
    assert (rows["T-Shirt"]["items"], rows["T-Shirt"]["route"], rows["T-Shirt"]["label"]) == (2, "map", "t-shirt")
    assert (rows["T-Shirt"]["group"], rows["Outwear"]["group"]) == ("tops", "outerwear")
    assert (rows["Handbags"]["route"], rows["Handbags"]["label"]) == ("built-in", "bag")
    assert (rows["Perfume and Body Mist"]["route"], rows["Perfume and Body Mist"]["label"]) == ("built-in", None)
    assert (rows["Hat"]["route"], rows["Hat"]["label"]) == ("built-in", "hat")  # a product set's articleType too
    for value in ("Tee", "(empty)"):  # nobody's name: the model places a sample of them
        row = rows[value]
        assert (row["route"], row["label"], row["sampled"]) == ("model", None, 1)
        assert sum(row["placed"].values()) == pytest.approx(1)
    assert report["unused"] == ["Sweats"] and report["placed_by"] == "product head"

    assert main(args) == 0
    text = capsys.readouterr().out
    assert "map → t-shirt (tops)" in text and "built-in → none" in text and "(1 of 1)" in text
    assert "map categories no product carries: Sweats" in text


def test_the_dry_run_samples_each_value_the_model_places(
    tmp_path: Path, shop_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import indexer.categories

    placed: list[int] = []
    original = indexer.categories._place
    monkeypatch.setattr(
        indexer.categories, "_place", lambda m, items, *a: (placed.append(len(items)), original(m, items, *a))[1]
    )
    folder = shop_catalogue(tmp_path / "cat", ["Tee"] * 7 + ["Cap-ish"] * 2 + ["Jeans"] * 3)
    from model.checkpoint import load_checkpoint

    model, _ = load_checkpoint(shop_checkpoint)
    report = indexer.categories.category_report(
        load_catalogue(folder), "category", model, "shop.pt", sample=3, workers=0
    )
    assert placed == [5]  # 3 of the 7 Tee, both Cap-ish; Jeans is a built-in name: not run through the model
    rows = {r.value: r for r in report.rows}
    assert (rows["Tee"].sampled, rows["Cap-ish"].sampled, rows["Jeans"].sampled) == (3, 2, 0)
    assert all(np.isclose(sum(rows[v].placed.values()), 1) for v in ("Tee", "Cap-ish"))
    assert indexer.categories.category_report(load_catalogue(folder), "category", model, "x", sample=0).rows


@pytest.mark.parametrize("bad", BAD_MAPS, ids=[b.kind for b in BAD_MAPS])
def test_the_dry_run_refuses_a_bad_map_in_one_line(bad: BadMap, tmp_path: Path, shop_checkpoint: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    folder = shop_catalogue(tmp_path / "cat", ["T-Shirt"])
    path = bad.write(tmp_path)
    args = ["categories", "--catalogue", str(folder), "--labels-from", "category", "--map", str(path)]
    assert main([*args, "--checkpoint", str(shop_checkpoint), "--workers", "0"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {bad.expected(path)}"


def test_the_dry_run_of_a_model_without_a_product_head_shows_its_predicted_groups(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    from indexer.categories import category_report
    from model.checkpoint import load_checkpoint

    model, _ = load_checkpoint(tiny_checkpoint)
    folder = shop_catalogue(tmp_path / "cat", ["Tee", "Tee", "red"])
    report = category_report(load_catalogue(folder), "category", model, "tiny.pt", workers=0)
    rows = {r.value: r for r in report.rows}
    assert report.placed_by == "predicted labels" and rows["Tee"].sampled == 2
    assert set(rows["Tee"].placed) <= {"red", "green", "blue", "none"}  # labels outside the table: own groups
    assert (rows["red"].route, rows["red"].label) == ("built-in", "red")  # a label's own name
