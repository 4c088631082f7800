"""The page at GET / and the item photos it shows."""

from __future__ import annotations

from fastapi.testclient import TestClient


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
