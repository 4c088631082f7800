from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.settings import Settings
from indexer.build import IndexOptions, build_bundle
from indexer.bundle import BundleStore
from indexer.catalogue import load_catalogue
from tests.helpers import encode, make_catalogue

if TYPE_CHECKING:
    from tests.app.live import Processes

ADMIN_KEY = "test-admin-key"


@pytest.fixture
def catalogue_dir(tmp_path: Path) -> Path:
    return make_catalogue(tmp_path / "catalogue", count=12)


@pytest.fixture
def bundles_dir(tmp_path: Path, tiny_checkpoint: Path, catalogue_dir: Path) -> Path:
    store = BundleStore(tmp_path / "bundles")
    build_bundle(store, tiny_checkpoint, load_catalogue(catalogue_dir), IndexOptions(threshold=0.0, workers=0))
    return store.root


def make_settings(checkpoint: Path, bundles: Path, catalogue: Path | None = None, **overrides: object) -> Settings:
    values: dict[str, object] = dict(
        checkpoint=checkpoint,
        bundles_dir=bundles,
        catalogue=catalogue,
        admin_api_key=ADMIN_KEY,
        max_upload_bytes=2_000_000,
        max_pixels=4_000_000,
        part_threshold=0.0,
        item_label_threshold=0.0,
        cache_ttl_s=0,
        bundle_poll_s=0.2,
        uploads_dir=bundles.parent / "uploads",
        catalogue_roots=[bundles.parent],  # the test's own folder
    )
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(tiny_checkpoint: Path, bundles_dir: Path, catalogue_dir: Path) -> Settings:
    return make_settings(tiny_checkpoint, bundles_dir, catalogue_dir)


@pytest.fixture
def processes() -> Iterator[Processes]:
    """Service processes started by the test, stopped after it."""
    from tests.app.live import Processes

    procs = Processes()
    yield procs
    procs.stop()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def photo_bytes(fmt: str = "JPEG", size: tuple[int, int] = (120, 180), colour: str = "red") -> bytes:
    image = Image.new("RGB", size, "white")
    image.paste(Image.new("RGB", (size[0] // 2, size[1] // 3), colour), (size[0] // 4, size[1] // 3))
    return encode(image, fmt)
