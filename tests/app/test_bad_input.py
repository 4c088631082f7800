"""Every class of bad input gets a clear JSON error, never a 500."""

import io
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from tests.app.conftest import make_settings, photo_bytes
from tests.app.live import serving


def post(client: TestClient, data: bytes, kind: str = "image/jpeg"):  # type: ignore[no-untyped-def]
    return client.post("/recommend", files={"image": ("x", data, kind)})


def expect(response, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and body["detail"]


def test_too_large_by_declared_length(client: TestClient) -> None:
    expect(post(client, b"\xff\xd8\xff" + b"0" * 2_100_000), 413, "too_large")


def test_too_large_while_streaming_without_a_declared_length(client: TestClient) -> None:
    def body():  # type: ignore[no-untyped-def]
        for _ in range(100):  # 100 × 64 KiB = 6.4 MB, chunked: no Content-Length
            yield b"x" * 65536

    response = client.post("/recommend", content=body(), headers={"content-type": "multipart/form-data; boundary=b"})
    expect(response, 413, "too_large")


def test_unsupported_types_get_415(client: TestClient) -> None:
    gif = io.BytesIO()
    Image.new("RGB", (10, 10)).save(gif, "GIF")
    expect(post(client, gif.getvalue(), "image/gif"), 415, "unsupported_media_type")
    expect(post(client, b"just some text", "text/plain"), 415, "unsupported_media_type")
    raw = client.post("/recommend", content=photo_bytes(), headers={"content-type": "image/jpeg"})
    expect(raw, 415, "unsupported_media_type")


def test_undecodable_images_get_422(client: TestClient) -> None:
    expect(post(client, b""), 422, "empty_image")
    expect(post(client, b"not a jpeg at all", "image/jpeg"), 422, "undecodable_image")
    noisy = io.BytesIO()
    Image.frombytes("RGB", (300, 300), bytes(range(256)) * 1054 + b"\0" * 276).save(noisy, "JPEG")
    truncated = noisy.getvalue()[: len(noisy.getvalue()) // 2]
    expect(post(client, truncated), 422, "undecodable_image")
    expect(post(client, b"\xff\xd8\xff\xe0" + b"\0" * 100), 422, "undecodable_image")


def png_of_size(width: int, height: int) -> bytes:
    """A tiny PNG file that claims ``width`` × ``height`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grey
    rows = zlib.compress(b"\0" * (1 + width // 8) * 64)  # only a few rows: the rest is never decoded
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def test_decompression_bomb_gets_422(client: TestClient) -> None:
    response = post(client, png_of_size(30_000, 30_000), "image/png")  # 900 Mpx in a few hundred bytes
    expect(response, 422, "undecodable_image")
    assert "limit" in response.json()["detail"] or "pixels" in response.json()["detail"]


def test_photo_shapes_no_camera_makes_get_422(client: TestClient) -> None:
    for width, height, says in [(200_000, 10, "side over"), (2_000, 10, "times as long"), (5, 120, "times as long")]:
        response = post(client, png_of_size(width, height), "image/png")  # under the pixel limit: 2 Mpx at most
        expect(response, 422, "undecodable_image")
        assert says in response.json()["detail"], response.json()
    assert post(client, photo_bytes(size=(100, 900))).status_code == 200  # 1:9, a tall full-length shot


def test_a_long_file_name_does_not_matter(client: TestClient) -> None:
    for name in ("a" * 5000 + ".jpg", "ü" * 3000 + ".jpg", "x"):
        response = client.post("/recommend", files={"image": (name, photo_bytes(), "image/jpeg")})
        assert response.status_code == 200, (len(name), response.text)


def test_broken_multipart_framing_gets_422(client: TestClient) -> None:
    framing = {"content-type": "multipart/form-data; boundary=B"}
    expect(client.post("/recommend", content=b"--B\r\nno headers end", headers=framing), 422, "invalid_multipart")
    expect(client.post("/recommend", content=b"garbage", headers=framing), 422, "invalid_multipart")
    no_boundary = {"content-type": "multipart/form-data"}
    expect(client.post("/recommend", content=b"x", headers=no_boundary), 422, "invalid_multipart")
    long_boundary = {"content-type": "multipart/form-data; boundary=" + "b" * 300}
    expect(client.post("/recommend", content=b"--" + b"b" * 300, headers=long_boundary), 422, "invalid_multipart")
    two = [("image", ("a.jpg", photo_bytes(), "image/jpeg")), ("image", ("b.jpg", photo_bytes(), "image/jpeg"))]
    expect(client.post("/recommend", files=two), 422, "invalid_multipart")


def test_missing_field_and_bad_options_get_422(client: TestClient) -> None:
    expect(client.post("/recommend", files={"photo": ("x", photo_bytes(), "image/jpeg")}), 422, "missing_image")
    # a plain form field named image, not a file
    expect(client.post("/recommend", files={"image": (None, b"text, not a file")}), 422, "missing_image")
    expect(client.post("/recommend", data={"image": "urlencoded"}), 415, "unsupported_media_type")
    expect(
        client.post("/recommend", files={"image": ("x", photo_bytes())}, params={"max_parts": 0}),
        422,
        "invalid_request",
    )
    expect(
        client.post("/recommend", files={"image": ("x", photo_bytes())}, params={"mode": "nearest"}),
        422,
        "invalid_request",
    )


def test_no_bundle_gets_503(tiny_checkpoint, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with TestClient(create_app(make_settings(tiny_checkpoint, tmp_path / "empty"))) as client:
        expect(post(client, photo_bytes()), 503, "not_ready")
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["ready"] is False


def test_overload_gets_503_not_unbounded_latency(tiny_checkpoint, bundles_dir) -> None:  # type: ignore[no-untyped-def]
    from app.batching import Overloaded

    with TestClient(create_app(make_settings(tiny_checkpoint, bundles_dir))) as client:
        recommender = client.app.state.recommender  # type: ignore[attr-defined]

        async def full(_):  # type: ignore[no-untyped-def]
            raise Overloaded("too many photos waiting for the model")

        recommender.batcher.submit = full
        response = post(client, photo_bytes())
        expect(response, 503, "overloaded")
        assert response.headers["retry-after"] == "1"


@pytest.mark.parametrize("path", ["/nope", "/admin/nope"])
def test_unknown_routes_are_json(client: TestClient, path: str) -> None:
    response = client.get(path, headers={"X-API-Key": "test-admin-key"})
    assert response.status_code == 404 and response.json()["code"] == "http_error"


def test_a_full_queue_answers_503_with_retry_after_over_http(tiny_checkpoint, bundles_dir) -> None:  # type: ignore[no-untyped-def]
    """The real batcher and its real queue, over a socket: one photo held in the model, one waiting
    (the queue holds one), and the next is refused at once."""
    app = create_app(make_settings(tiny_checkpoint, bundles_dir, queue_limit=1, max_batch=1))
    with serving(app) as url:
        recommender = app.state.recommender
        in_model, release = threading.Event(), threading.Event()
        forward = recommender.forward

        def held(images):  # type: ignore[no-untyped-def]
            in_model.set()
            release.wait(60)
            return forward(images)

        recommender.forward = held
        files = {"image": ("x.jpg", photo_bytes(), "image/jpeg")}
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(httpx.post, url + "/recommend", files=files, timeout=60)
            assert in_model.wait(30), "the first photo never reached the model"
            second = pool.submit(httpx.post, url + "/recommend", files=files, timeout=60)
            deadline = time.monotonic() + 30
            while recommender.batcher.depth < 1:
                assert time.monotonic() < deadline, "the second photo never queued"
                time.sleep(0.01)
            refused = httpx.post(url + "/recommend", files=files, timeout=10)
            release.set()
            answered = [first.result(), second.result()]
        expect(refused, 503, "overloaded")
        assert refused.headers["retry-after"] == "1"
        assert [r.status_code for r in answered] == [200, 200]  # the queued photos are answered in the end
        assert 'fashion_requests_total{code="503",route="/recommend"} 1.0' in httpx.get(url + "/metrics").text
