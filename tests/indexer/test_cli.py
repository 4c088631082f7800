import json
from pathlib import Path

from indexer.__main__ import main
from indexer.bundle import BundleStore
from tests.helpers import add_field, make_catalogue


def test_cli_build_passes_every_option(tmp_path: Path, tiny_checkpoint: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    folder = make_catalogue(tmp_path / "cat", count=3)
    rows = (folder / "metadata.csv").read_text().splitlines()
    (folder / "metadata.csv").write_text("\n".join([rows[0] + ",kind"] + [r + ",blue" for r in rows[1:]]) + "\n")
    args = [
        "build",
        "--catalogue",
        str(folder),
        "--checkpoint",
        str(tiny_checkpoint),
        "--bundles",
        str(tmp_path / "b"),
        "--threshold",
        "0",
        "--max-parts",
        "2",
        "--workers",
        "0",
        "--keep",
        "4",
        "--labels-from",
        "kind",
        "--runtime",
        "pytorch",
    ]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out) | {"timings": None} == {
        "version": BundleStore(tmp_path / "b").current_version(),
        "items": 3,
        "timings": None,
        "skipped": 0,
    }
    manifest = BundleStore(tmp_path / "b").open().manifest
    assert manifest["options"] == {
        "threshold": 0.0,
        "max_parts": 2,
        "factory": "auto",
        "labels_from": "kind",
        "category_map": None,
        "engine": "local",
        "runtime": "pytorch",
    }
    assert manifest["index"]["counts"] == {"blue": 3}
    assert main(["delete", "--ids", "p0", "--bundles", str(tmp_path / "b")]) == 0
    assert main(["delete", "--ids", "nope", "--bundles", str(tmp_path / "b")]) == 2
    assert main(["list", "--bundles", str(tmp_path / "b")]) == 0


def test_cli_refuses_a_bad_factory_or_checkpoint_in_one_line_before_embedding(
    tmp_path: Path,
    tiny_checkpoint: Path,
    capsys,  # type: ignore[no-untyped-def]
) -> None:
    folder = make_catalogue(tmp_path / "cat", count=3)
    common = ["build", "--catalogue", str(folder), "--bundles", str(tmp_path / "b"), "--workers", "0"]
    assert main([*common, "--checkpoint", str(tiny_checkpoint), "--factory", "BOGUS"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == "error: bad FAISS index factory 'BOGUS': could not parse index string BOGUS"
    not_ours = tmp_path / "notes.pt"
    not_ours.write_text("not a checkpoint")
    assert main([*common, "--checkpoint", str(not_ours)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: cannot load the checkpoint {not_ours}:") and "\n" not in error
    assert BundleStore(tmp_path / "b").current_version() is None  # nothing was published


def test_cli_build_takes_a_category_map(tmp_path: Path, shop_checkpoint: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    folder = add_field(make_catalogue(tmp_path / "cat", count=4), "category", ["Tee", "Hat", "Pants", "Gift"])
    shop_map = tmp_path / "map.yaml"
    shop_map.write_text("Tee: t-shirt\nPants: pants\nGift: none\n")
    common = [
        "build",
        "--catalogue",
        str(folder),
        "--checkpoint",
        str(shop_checkpoint),
        "--bundles",
        str(tmp_path / "b"),
    ]
    common += ["--workers", "0", "--runtime", "pytorch"]
    assert main([*common, "--labels-from", "category", "--map", str(shop_map)]) == 0
    manifest = BundleStore(tmp_path / "b").open().manifest
    assert manifest["options"]["category_map"] == {
        "source": str(shop_map),
        "entries": {"Tee": "t-shirt", "Pants": "pants", "Gift": "none"},
    }
    assert manifest["index"]["counts"] == {"hat": 1, "pants": 1, "t-shirt": 1}  # Hat: the built-in name
    capsys.readouterr()

    assert main([*common, "--labels-from", "", "--map", str(shop_map)]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --map names the values of a metadata field: give it with --labels-from FIELD"
    )
    shop_map.write_text("Tee: t-shirt\nPants: trousers\n")
    assert main([*common, "--labels-from", "category", "--map", str(shop_map)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: {shop_map}:2: 'trousers' (for 'Pants') is not a part label of the model")
    assert len(BundleStore(tmp_path / "b").versions()) == 1  # nothing more was published
