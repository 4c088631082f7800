from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import torch

from app import bootstrap
from app.settings import get_settings
from indexer.bundle import BundleStore
from model.checkpoint import file_sha256, save_checkpoint
from model.network import PartAttentionNetwork
from tests.app.live import bundle_version, service_env, wait_until
from tests.conftest import RedisServer, free_port
from tests.helpers import make_catalogue, tiny_config

if TYPE_CHECKING:
    from tests.app.live import Processes


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


def test_bootstrap_rebuilds_a_bundle_of_another_model_and_says_so(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "data" / "ccp" / "photos").mkdir(parents=True)
    monkeypatch.setenv("FASHION_BUNDLES_DIR", str(tmp_path / "bundles"))
    monkeypatch.setenv("FASHION_CATALOGUE", str(make_catalogue(tmp_path / "cat", count=3)))
    torch.manual_seed(1)
    other = save_checkpoint(tmp_path / "other.pt", PartAttentionNetwork(tiny_config()).eval())
    store = BundleStore(tmp_path / "bundles")
    caplog.set_level(logging.INFO, logger="app.bootstrap")
    try:
        for checkpoint in (tiny_checkpoint, other):
            monkeypatch.setenv("FASHION_CHECKPOINT", str(checkpoint))
            get_settings.cache_clear()
            bootstrap.main(["--data", str(tmp_path / "data")])
            assert store.open().model_sha256 == file_sha256(checkpoint)
    finally:
        get_settings.cache_clear()
    first, second = store.versions()
    assert f"bundle {first} was built with another model: indexing" in caplog.text


def test_a_rebuild_at_start_keeps_the_uploaded_products(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.uploads import UploadStore
    from tests.app.conftest import photo_bytes

    (tmp_path / "data" / "ccp" / "photos").mkdir(parents=True)
    UploadStore(tmp_path / "uploads").save("upload-1", photo_bytes("PNG"), "image/png", {"name": "kept"})
    monkeypatch.setenv("FASHION_CHECKPOINT", str(tiny_checkpoint))
    monkeypatch.setenv("FASHION_BUNDLES_DIR", str(tmp_path / "bundles"))
    monkeypatch.setenv("FASHION_UPLOADS_DIR", str(tmp_path / "uploads"))
    monkeypatch.setenv("FASHION_CATALOGUE", str(make_catalogue(tmp_path / "cat", count=3)))
    get_settings.cache_clear()
    try:
        bootstrap.main(["--data", str(tmp_path / "data")])  # no bundle live: the catalogue and its uploads
    finally:
        get_settings.cache_clear()
    bundle = BundleStore(tmp_path / "bundles").open()
    assert set(bundle.keys_by_id) == {"p0", "p1", "p2", "upload-1"} and bundle.complete


def test_bootstrap_needs_no_data_to_index_a_given_catalogue_with_a_given_model(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_download(root: Path) -> Path:
        raise AssertionError("nothing to download: the model and the catalogue are given (a container's start)")

    monkeypatch.setattr(bootstrap, "ensure_ccp", no_download)
    monkeypatch.setenv("FASHION_CHECKPOINT", str(tiny_checkpoint))
    monkeypatch.setenv("FASHION_BUNDLES_DIR", str(tmp_path / "bundles"))
    monkeypatch.setenv("FASHION_CATALOGUE", str(make_catalogue(tmp_path / "cat", count=5)))
    get_settings.cache_clear()
    try:
        bootstrap.main(["--data", str(tmp_path / "no-data")])
        assert BundleStore(tmp_path / "bundles").open().manifest["items"] == 5
    finally:
        get_settings.cache_clear()


def test_a_first_start_serves_a_first_slice_and_completes_it_in_the_background(
    tmp_path: Path, tiny_checkpoint: Path, redis_server: RedisServer, processes: Processes
) -> None:
    """The compose stack's first start without Docker: `python -m app --bootstrap` on an empty
    bundle store, a catalogue, Redis and a separate worker; no admin call."""
    bundles = tmp_path / "bundles"
    catalogue = make_catalogue(tmp_path / "cat", count=9)
    env = {
        **service_env(tiny_checkpoint, bundles, redis_server.url),
        "FASHION_CATALOGUE": str(catalogue),
        "FASHION_FIRST_SLICE": "4",
        "FASHION_DATA_DIR": str(tmp_path / "no-data"),  # nothing to download
    }
    processes.start(["-m", "app.worker"], env, tmp_path / "worker.log")
    port = free_port()
    api = processes.start(["-m", "app", "--bootstrap", "--port", str(port)], env, tmp_path / "api.log")
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert api.poll() is None, (tmp_path / "api.log").read_text()[-3000:]
        try:
            return httpx.get(url + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, "the API to index its first slice and answer", 120)
    store = BundleStore(bundles)
    first = store.open()
    assert len(first.items) == 4 and not first.complete
    wait_until(lambda: store.open().complete, "the worker to add the rest", 120)
    wait_until(lambda: bundle_version(url) == store.current_version(), "the API to swap to it", 30)
    assert len(store.open().items) == 9 and len(store.versions()) == 2
