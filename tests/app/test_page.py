"""The page at GET / and the item photos it shows."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from app.main import create_app
from indexer.build import IndexOptions, build_bundle
from indexer.bundle import BundleStore
from indexer.catalogue import load_catalogue
from tests.app.conftest import make_settings
from tests.helpers import make_catalogue


def test_page_is_served_as_html(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert 'id="file"' in response.text and "recommend?mode=" in response.text


def test_item_photo_comes_from_the_live_bundle(client: TestClient) -> None:
    response = client.get("/items/p3/image")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.content[:3] == b"\xff\xd8\xff"
    assert "max-age" in response.headers["cache-control"]
    again = client.get("/items/p3/image", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304


def test_item_photo_never_follows_a_client_path(client: TestClient) -> None:
    response = client.get("/items/nope/image")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    for item_id in ("..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "..", "p3%2F..%2F..%2Fmetadata.csv"):
        response = client.get(f"/items/{item_id}/image")
        assert response.status_code == 404, item_id
        assert b"root:" not in response.content and b"product" not in response.content


def test_an_item_whose_id_holds_a_slash_has_its_photo(tmp_path: Path, tiny_checkpoint: Path) -> None:
    # the page asks for items/<encodeURIComponent(id)>/image; the slash arrives decoded
    folder = make_catalogue(tmp_path / "catalogue", count=2)
    (folder / "metadata.csv").write_text("id,path\nAB/123,images/p0.jpg\nCD-4,images/p1.jpg\n")
    store = BundleStore(tmp_path / "bundles")
    build_bundle(store, tiny_checkpoint, load_catalogue(folder), IndexOptions(threshold=0.0, workers=0))
    with TestClient(create_app(make_settings(tiny_checkpoint, store.root))) as client:
        for path in ("/items/AB%2F123/image", "/items/AB/123/image"):
            response = client.get(path)
            assert response.status_code == 200 and response.content[:3] == b"\xff\xd8\xff", path
        assert client.get("/items/AB/124/image").status_code == 404
