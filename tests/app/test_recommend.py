import io
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.recommender import PhotoJob, RecommendOptions
from indexer.build import IndexOptions, build_bundle
from indexer.bundle import BundleStore
from indexer.catalogue import load_catalogue
from model.imaging import ImageDecodeError
from tests.app.conftest import make_settings, photo_bytes
from tests.helpers import make_catalogue


def post(client: TestClient, data: bytes, name: str = "photo.jpg", kind: str = "image/jpeg", **params: object):  # type: ignore[no-untyped-def]
    return client.post("/recommend", files={"image": (name, data, kind)}, params=params)


def test_one_distinct_item_per_part(client: TestClient) -> None:
    response = post(client, photo_bytes(), max_parts=3)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["mode"] == "parts" and body["image"] == {"width": 120, "height": 180}
    assert body["bundle_version"] == client.get("/readyz").json()["bundle_version"]
    assert len(body["model_version"]) == 12
    assert 1 <= len(body["parts"]) <= 3
    ids = [p["item"]["id"] for p in body["parts"]]
    assert len(ids) == len(set(ids)), "items must all differ"
    for part in body["parts"]:
        assert part["label"] in {"red", "green", "blue"} and 0 <= part["score"] <= 1
        assert part["group"] == part["label"]  # labels outside the CCP table are their own group
        x0, y0, x1, y1 = part["box"]
        assert 0 <= x0 <= x1 <= 120 and 0 <= y0 <= y1 <= 180
        assert part["item"]["metadata"]["name"].startswith("product")
    assert {"queue", "decode", "model", "search"} <= set(body["timings_ms"])


def test_a_bad_photo_fails_alone_in_its_batch(client: TestClient) -> None:
    """The batch's photos are decoded, forwarded and searched together: an undecodable one among
    them gets its own error, and the others (a wide one, seen at several places, too) the same
    answers they get alone."""
    recommender = client.app.state.recommender  # type: ignore[attr-defined]
    bundle, options = recommender.bundles.current, RecommendOptions(max_parts=3)
    good, wide, other = photo_bytes(), photo_bytes(size=(400, 100), colour="blue"), photo_bytes(colour="green")
    assert len(recommender.decode(wide)) > 1
    jobs = [PhotoJob(d, bundle, options) for d in (good, wide, b"not an image", other)]
    batch = recommender._answer_batch(jobs)
    assert isinstance(batch[2], ImageDecodeError)
    for data, answer in ((good, batch[0]), (wide, batch[1]), (other, batch[3])):
        alone = recommender._answer_batch([PhotoJob(data, bundle, options)])[0]
        assert [p.item.id for p in answer.parts] == [p.item.id for p in alone.parts]
        assert set(answer.timings_ms) == {"queue", "decode", "model", "search"}
    assert post(client, b"not an image").status_code == 422


def test_png_webp_heic_avif_and_any_mode(client: TestClient) -> None:
    for fmt, kind in (("PNG", "image/png"), ("WEBP", "image/webp"), ("HEIF", "image/heic"), ("AVIF", "image/avif")):
        # the declared type is not what counts: the bytes' signature is
        response = post(client, photo_bytes(fmt), kind="application/octet-stream")
        assert response.status_code == 200, (kind, response.text)
        assert response.json()["image"] == {"width": 120, "height": 180}
    grey = io.BytesIO()
    Image.new("LA", (50, 70)).save(grey, "PNG")  # grey + alpha: converted to RGB
    assert post(client, grey.getvalue(), kind="image/png").status_code == 200


def test_exif_orientation_is_honoured(client: TestClient) -> None:
    image = Image.new("RGB", (180, 120), "blue")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90°: the photo is upright as 120 wide, 180 tall
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif)
    body = post(client, buffer.getvalue()).json()
    assert body["image"] == {"width": 120, "height": 180}


def test_options_label_filter_exclusions_and_global_mode(client: TestClient) -> None:
    data = photo_bytes()
    first = post(client, data, max_parts=3).json()["parts"]
    only = post(client, data, labels=first[0]["label"]).json()["parts"]
    assert [p["label"] for p in only] == [first[0]["label"]]
    excluded = first[0]["item"]["id"]
    again = post(client, data, max_parts=3, exclude=excluded).json()["parts"]
    assert excluded not in {p["item"]["id"] for p in again if p["item"]}
    glob = post(client, data, mode="global", max_parts=4).json()
    assert glob["mode"] == "global" and len({p["item"]["id"] for p in glob["parts"]}) == 4
    assert all(p["label"] is None and p["group"] is None for p in glob["parts"])


def test_the_client_file_name_is_not_used(client: TestClient) -> None:
    response = post(client, photo_bytes(), name="../../../etc/passwd", kind="application/octet-stream")
    assert response.status_code == 200


def test_response_cache(tiny_checkpoint, bundles_dir) -> None:  # type: ignore[no-untyped-def]
    from app.main import create_app

    with TestClient(create_app(make_settings(tiny_checkpoint, bundles_dir, cache_ttl_s=60))) as client:
        data = photo_bytes(colour="green")
        first, second = post(client, data).json(), post(client, data).json()
        assert not first["cached"] and second["cached"]
        assert first["parts"] == second["parts"]
        assert not post(client, data, max_parts=1).json()["cached"]  # other options: another entry
        assert 'fashion_cache_total{result="hit"} 1.0' in client.get("/metrics").text
        # one id holding a comma is not two ids; a filter named "*" is not no filter
        assert post(client, data, exclude="p1,p2").json()["cached"] is False
        assert post(client, data, exclude=["p1", "p2"]).json()["cached"] is False
        assert post(client, data, labels="*").json()["cached"] is False


def test_options_that_differ_never_share_a_cache_key() -> None:
    from app.recommender import RecommendOptions

    options = [
        RecommendOptions(exclude_ids=frozenset({"a,b"})),
        RecommendOptions(exclude_ids=frozenset({"a", "b"})),
        RecommendOptions(labels=frozenset({"*"})),
        RecommendOptions(),
        RecommendOptions(labels=frozenset({"bag|x"})),
        RecommendOptions(labels=frozenset({"bag"}), exclude_ids=frozenset({"x"})),
    ]
    assert len({o.cache_key() for o in options}) == len(options)


def test_processes_sharing_a_cache_under_other_settings_never_take_each_others_answers(  # type: ignore[no-untyped-def]
    tiny_checkpoint, bundles_dir, redis_server
) -> None:
    from app.main import create_app

    data = photo_bytes(colour="blue")

    def cached(**overrides: object) -> bool:
        settings = make_settings(tiny_checkpoint, bundles_dir, cache_ttl_s=60, redis_url=redis_server.url, **overrides)
        with TestClient(create_app(settings)) as client:
            response = post(client, data)
            assert response.status_code == 200, response.text
            return bool(response.json()["cached"])

    assert not cached(trim_max_area=0.35)
    assert cached(trim_max_area=0.35)  # the same settings share the answer
    assert not cached(trim_max_area=0.0)
    assert not cached(trim_max_area=0.35, part_threshold=0.5)


def test_search_threads_set_in_the_searching_thread(tiny_checkpoint, bundles_dir, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """FAISS's OpenMP threads are per calling thread: FASHION_SEARCH_THREADS is applied where the search runs."""
    import threading

    import faiss

    from app.main import create_app

    calls: list[tuple[int, str]] = []
    real = faiss.omp_set_num_threads

    def recorded(n: int) -> None:
        calls.append((n, threading.current_thread().name))
        real(n)

    monkeypatch.setattr(faiss, "omp_set_num_threads", recorded)
    with TestClient(create_app(make_settings(tiny_checkpoint, bundles_dir, search_threads=3))) as client:
        assert post(client, photo_bytes()).status_code == 200
    assert calls and all(n == 3 for n, _ in calls)
    assert any(name.startswith("inference") for _, name in calls)  # a lone photo is searched in the batch thread


def test_health_readiness_and_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["ready"] and ready["coordination"] == "memory" and ready["bundle_version"]
    post(client, photo_bytes())
    text = client.get("/metrics").text
    for needle in (
        'fashion_requests_total{code="200",route="/recommend"}',
        'fashion_stage_seconds_count{stage="model"}',
        'fashion_stage_seconds_count{stage="decode"}',
        'fashion_stage_seconds_count{stage="search"}',
        "fashion_batch_size_count",
        f'fashion_bundle_info{{version="{ready["bundle_version"]}"}} 1.0',
    ):
        assert needle in text, needle
    # the one photo posted, not the warm-up's blank batch
    assert 'fashion_stage_seconds_count{stage="decode"} 1.0' in text
    assert client.get("/openapi.json").json()["paths"]["/recommend"]["post"]["requestBody"]


def test_a_photo_with_no_sure_part_gets_its_likeliest_marked_and_nothing_below_the_floor(
    tiny_checkpoint, bundles_dir
) -> None:  # type: ignore[no-untyped-def]
    from app.main import create_app

    sure = make_settings(tiny_checkpoint, bundles_dir, part_threshold=0.0)
    with TestClient(create_app(sure)) as client:
        parts = post(client, photo_bytes(), max_parts=3).json()["parts"]
    assert parts and all(p["confident"] and p["index_label"] == p["label"] for p in parts)

    unsure = make_settings(tiny_checkpoint, bundles_dir, part_threshold=1.0, part_floor=0.0)
    with TestClient(create_app(unsure)) as client:
        (part,) = post(client, photo_bytes(), max_parts=3).json()["parts"]
        assert part["confident"] is False and part["label"] == parts[0]["label"] and part["item"]
        schema = client.get("/openapi.json").json()["components"]["schemas"]["PartRecommendation"]["properties"]
        assert {"confident", "index_label"} <= set(schema)

    nothing = make_settings(tiny_checkpoint, bundles_dir, part_threshold=1.0, part_floor=1.0)
    with TestClient(create_app(nothing)) as client:
        assert post(client, photo_bytes()).json()["parts"] == []


@pytest.mark.parametrize("coordination", ["memory", "redis"])
def test_a_cached_answer_never_outlives_a_bundle_swap(  # type: ignore[no-untyped-def]
    coordination: str, tiny_checkpoint, bundles_dir, tmp_path, request: pytest.FixtureRequest
) -> None:
    from app.main import create_app

    redis_url = request.getfixturevalue("redis_server").url if coordination == "redis" else None
    settings = make_settings(tiny_checkpoint, bundles_dir, cache_ttl_s=600, redis_url=redis_url)
    with TestClient(create_app(settings)) as client:
        data = photo_bytes(colour="blue")
        first, again = post(client, data).json(), post(client, data).json()
        assert not first["cached"] and again["cached"] and again["bundle_version"] == first["bundle_version"]
        assert {p["item"]["id"][0] for p in first["parts"] if p["item"]} == {"p"}

        # a new catalogue is published (every item id now starts with q) and the service swaps to it
        catalogue = load_catalogue(make_catalogue(tmp_path / "new", count=6, prefix="q"))
        new = build_bundle(BundleStore(bundles_dir), tiny_checkpoint, catalogue, IndexOptions(threshold=0.0, workers=0))
        deadline = time.monotonic() + 10
        while client.get("/readyz").json()["bundle_version"] != new:
            assert time.monotonic() < deadline, "the service did not swap to the new bundle"
            time.sleep(0.05)

        after = post(client, data).json()
        assert not after["cached"] and after["bundle_version"] == new  # answered afresh, by the new bundle
        assert {p["item"]["id"][0] for p in after["parts"] if p["item"]} == {"q"}
        cached = post(client, data).json()
        assert cached["cached"] and cached["bundle_version"] == new and cached["parts"] == after["parts"]


def test_a_wide_photo_is_seen_at_each_place_in_one_forward_and_answered_in_its_own_pixels(
    tiny_checkpoint, bundles_dir
) -> None:  # type: ignore[no-untyped-def]
    """FASHION_WIDE_FILL reaches decoding and the answer: a photo much wider than the frame goes
    through the model once per place in the frame, in the same batch (the geometry is tested
    in tests/model/test_imaging.py), its parts' boxes in the photo; 0 sees it once."""
    import numpy as np

    from app.main import create_app
    from model.imaging import DEFAULT_WIDE_FILL, WIDE_ALIGNS

    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (100, 400, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    photo.save(buffer, "PNG")
    data = buffer.getvalue()
    for wide_fill, views in ((DEFAULT_WIDE_FILL, len(WIDE_ALIGNS)), (0.0, 1)):
        with TestClient(create_app(make_settings(tiny_checkpoint, bundles_dir, wide_fill=wide_fill))) as client:
            recommender = client.app.state.recommender  # type: ignore[attr-defined]
            assert len(recommender.decode(data)) == views
            batches: list[int] = []

            def counted(images, forward=recommender.forward, batches=batches):  # type: ignore[no-untyped-def]
                batches.append(len(images))
                return forward(images)

            recommender.forward = counted
            response = post(client, data, name="photo.png", kind="image/png")
            assert response.status_code == 200, response.text
            answer = response.json()
            assert batches == [views]
            assert answer["image"] == {"width": 400, "height": 100} and answer["parts"]
            batches.clear()  # the whole-photo search sees it once, centred, as the catalogue was embedded
            assert post(client, data, name="photo.png", kind="image/png", mode="global").status_code == 200
            assert batches == [1]


def test_a_wide_photo_is_answered_by_its_own_part_threshold(tiny_checkpoint, bundles_dir) -> None:  # type: ignore[no-untyped-def]
    """FASHION_WIDE_PART_THRESHOLD reaches the parts of a wide photo (and the cache key), and only theirs."""
    import numpy as np

    from app.main import create_app

    def photo(width: int, height: int) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
            buffer, "PNG"
        )
        return buffer.getvalue()

    # no group reaches 1.0: a photo seen once gets its likeliest group only, unsure; a wide one all it can
    settings = make_settings(tiny_checkpoint, bundles_dir, part_threshold=1.0, part_floor=0.0, wide_part_threshold=0.0)
    with TestClient(create_app(settings)) as client:
        assert "wide_threshold=0.0" in client.app.state.recommender.answer_settings  # type: ignore[attr-defined]
        wide = post(client, photo(400, 100), name="wide.png", kind="image/png", max_parts=3).json()["parts"]
        assert len(wide) == 3 and all(p["confident"] for p in wide)
        tall = post(client, photo(100, 150), name="tall.png", kind="image/png", max_parts=3).json()["parts"]
        assert [p["confident"] for p in tall] == [False]


@pytest.mark.parametrize("wide_fill,views", [(0.6, 3), (0.45, 3), (0.0, 1)])
def test_the_warm_up_runs_the_largest_forward_wide_photos_make(tiny_checkpoint, bundles_dir, wide_fill, views) -> None:  # type: ignore[no-untyped-def]
    """The warm-up's batch is of wide photos wherever wide photos are seen several times, so its
    forward is the largest the service will run (MicroBatcher.warm_up's promise)."""
    from app.main import create_app
    from model.imaging import WIDE_ALIGNS

    assert views in (1, len(WIDE_ALIGNS))
    settings = make_settings(tiny_checkpoint, bundles_dir, wide_fill=wide_fill, max_batch=2)
    with TestClient(create_app(settings)) as client:
        recommender = client.app.state.recommender  # type: ignore[attr-defined]
        batches: list[int] = []

        def counted(images, forward=recommender.forward, batches=batches):  # type: ignore[no-untyped-def]
            batches.append(len(images))
            return forward(images)

        recommender.forward = counted
        client.portal.call(recommender.warm_up)  # type: ignore[union-attr]
        assert batches == [2 * views]


def test_a_person_small_on_a_plain_margin_is_cut_to_before_the_model(tiny_checkpoint, bundles_dir) -> None:  # type: ignore[no-untyped-def]
    """FASHION_TRIM_MAX_AREA reaches decoding: a zoomed-out photo is drawn cut to its person (the
    placement's geometry is tested in tests/model/test_imaging.py); 0 turns it off."""
    import numpy as np

    from app.main import create_app

    canvas = Image.new("RGB", (400, 600), (200, 200, 200))
    person = np.random.default_rng(0).integers(0, 256, (200, 100, 3), dtype=np.uint8)
    canvas.paste(Image.fromarray(person), (150, 250))
    buffer = io.BytesIO()
    canvas.save(buffer, "PNG")
    data = buffer.getvalue()
    for trim, cut in ((0.5, True), (0.0, False)):
        with TestClient(create_app(make_settings(tiny_checkpoint, bundles_dir, trim_max_area=trim))) as client:
            ((_, placement),) = client.app.state.recommender.decode(data)  # type: ignore[attr-defined]
            assert (placement.frame_height < 300) is cut  # the frame spans the person's 200 rows, not the 600
            response = post(client, data, name="photo.png", kind="image/png")
            assert response.status_code == 200, response.text
            assert response.json()["image"] == {"width": 400, "height": 600}  # the whole photo's size


def test_an_unhandled_error_is_a_500_that_the_metrics_count(tiny_checkpoint, bundles_dir, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from app.main import create_app

    app = create_app(make_settings(tiny_checkpoint, bundles_dir))
    with TestClient(app, raise_server_exceptions=False) as client:

        async def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("a bug")

        monkeypatch.setattr(app.state.recommender, "recommend", broken)
        response = post(client, photo_bytes())
        assert response.status_code == 500 and response.json()["code"] == "internal_error"
        assert 'fashion_requests_total{code="500",route="/recommend"} 1.0' in client.get("/metrics").text


def test_a_client_gone_mid_upload_is_a_499_not_an_error_of_ours() -> None:
    import asyncio

    from starlette.requests import ClientDisconnect

    from app.errors import ServiceError
    from app.multipart import read_body

    class Gone:
        headers: dict[str, str] = {}

        async def stream(self):  # type: ignore[no-untyped-def]
            yield b"part of a photo"
            raise ClientDisconnect()

    with pytest.raises(ServiceError) as caught:
        asyncio.run(read_body(Gone(), 1000))  # type: ignore[arg-type]
    assert caught.value.status == 499 and caught.value.code == "client_closed"
