from pathlib import Path

import pytest

from app import bootstrap
from app.settings import get_settings
from indexer.bundle import BundleStore
from tests.helpers import make_catalogue


def test_bootstrap_indexes_only_when_needed(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data" / "ccp" / "photos").mkdir(parents=True)  # present: nothing is downloaded
    monkeypatch.setenv("FASHION_CHECKPOINT", str(tiny_checkpoint))
    monkeypatch.setenv("FASHION_BUNDLES_DIR", str(tmp_path / "bundles"))
    monkeypatch.setenv("FASHION_CATALOGUE", str(make_catalogue(tmp_path / "cat", count=5)))
    get_settings.cache_clear()
    try:
        bootstrap.main(["--data", str(tmp_path / "data")])
        store = BundleStore(tmp_path / "bundles")
        first = store.current_version()
        assert first is not None and store.open().manifest["items"] == 5
        bootstrap.main(["--data", str(tmp_path / "data")])  # model unchanged: the bundle is kept
        assert store.versions() == [first]
    finally:
        get_settings.cache_clear()


def test_default_catalogue_prefers_the_products(tmp_path: Path) -> None:
    assert bootstrap.default_catalogue(tmp_path) == tmp_path / "ccp" / "photos"
    (tmp_path / "fashion-product").mkdir()
    (tmp_path / "fashion-product" / "styles.csv").write_text("id\n")
    assert bootstrap.default_catalogue(tmp_path) == tmp_path / "fashion-product"
