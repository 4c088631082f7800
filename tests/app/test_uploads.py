"""Products added by upload (POST /admin/items, multipart) and the first-slice bundle that
`make serve` publishes early and the service completes."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.settings import Settings
from indexer.build import IndexOptions, build_bundle
from indexer.bundle import BundleStore
from indexer.catalogue import load_catalogue
from tests.app.conftest import make_settings, photo_bytes
from tests.app.test_admin import KEY, wait_for_job, wait_for_version
from tests.helpers import make_catalogue, slice_before_its_metadata

MP4_HEADER = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"  # a phone's video: ISO media, not a photo


def post_recommend(client: TestClient, data: bytes):  # type: ignore[no-untyped-def]
    return client.post("/recommend", files={"image": ("photo.jpg", data)})


def upload(client: TestClient, item_id: str, data: bytes, metadata: object = None, name: str = "p.jpg"):  # type: ignore[no-untyped-def]
    fields = {"id": item_id}
    if metadata is not None:
        fields["metadata"] = metadata if isinstance(metadata, str) else json.dumps(metadata)
    return client.post("/admin/items", headers=KEY, data=fields, files={"image": (name, data)})


def test_uploaded_item_is_indexed_kept_and_found_by_a_later_reindex(client: TestClient, settings: Settings) -> None:
    accepted = upload(client, "upload-1", photo_bytes("PNG", colour="blue"), {"name": "blue thing", "price": 12})
    assert accepted.status_code == 202, accepted.text
    job = wait_for_job(client, accepted.json()["job_id"])
    assert job["state"] == "succeeded", job
    wait_for_version(client, job["version"])
    bundle = client.app.state.recommender.bundles.current  # type: ignore[attr-defined]
    record = bundle.items[bundle.keys_by_id["upload-1"]]
    assert record.metadata["name"] == "blue thing"
    assert Path(record.image).parent == settings.uploads_dir / "images" and Path(record.image).suffix == ".png"
    photo = client.get("/items/upload-1/image")
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/png"

    job = wait_for_job(client, client.post("/admin/reindex", headers=KEY).json()["job_id"])
    assert job["state"] == "succeeded", job
    wait_for_version(client, job["version"])
    bundle = client.app.state.recommender.bundles.current  # type: ignore[attr-defined]
    assert "upload-1" in bundle.keys_by_id and "p0" in bundle.keys_by_id


def test_a_deleted_upload_does_not_come_back_with_a_later_reindex(client: TestClient, settings: Settings) -> None:
    for item_id in ("gone-1", "kept-1"):
        job = wait_for_job(client, upload(client, item_id, photo_bytes("PNG", colour="blue")).json()["job_id"])
        assert job["state"] == "succeeded", job
    deleted = client.post("/admin/items/delete", headers=KEY, json={"ids": ["gone-1"]})
    job = wait_for_job(client, deleted.json()["job_id"])
    assert job["state"] == "succeeded", job
    assert [p.name for p in (settings.uploads_dir / "images").iterdir()] == ["kept-1.png"]
    job = wait_for_job(client, client.post("/admin/reindex", headers=KEY).json()["job_id"])
    assert job["state"] == "succeeded", job
    wait_for_version(client, job["version"])
    bundle = client.app.state.recommender.bundles.current  # type: ignore[attr-defined]
    assert "gone-1" not in bundle.keys_by_id and "kept-1" in bundle.keys_by_id


def test_a_large_phone_jpeg_is_checked_as_recommend_decodes_it(client: TestClient) -> None:
    # 4.3 Mpx, over the tests' 4 Mpx limit in full: decoded at a quarter of its side, as /recommend
    # and the indexer decode it, it is accepted; a PNG of that size is decoded in full and is not
    large = photo_bytes("JPEG", (2400, 1800))
    assert post_recommend(client, large).status_code == 200
    assert upload(client, "big-1", large).status_code == 202
    assert upload(client, "big-2", photo_bytes("PNG", (2400, 1800))).status_code == 422


def test_an_iphone_photo_is_uploaded_kept_and_served_as_it_came(client: TestClient, settings: Settings) -> None:
    job = wait_for_job(client, upload(client, "phone-1", photo_bytes("HEIF"), name="IMG_0001.HEIC").json()["job_id"])
    assert job["state"] == "succeeded", job
    wait_for_version(client, job["version"])
    assert [p.name for p in (settings.uploads_dir / "images").iterdir()] == ["phone-1.heic"]
    photo = client.get("/items/phone-1/image")
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/heic"


def test_upload_replaces_an_item_of_the_same_id(client: TestClient, settings: Settings) -> None:
    job = wait_for_job(client, upload(client, "same.v2", photo_bytes("PNG")).json()["job_id"])  # an id with a dot
    assert job["state"] == "succeeded", job
    for fmt, colour in (("PNG", "blue"), ("JPEG", "green")):
        job = wait_for_job(client, upload(client, "same", photo_bytes(fmt, colour=colour)).json()["job_id"])
        assert job["state"] == "succeeded", job
    # "same"'s PNG replaced by its JPEG; "same.v2"'s photo untouched
    assert sorted(p.name for p in (settings.uploads_dir / "images").iterdir()) == ["same.jpg", "same.v2.png"]
    rows = [json.loads(row) for row in (settings.uploads_dir / "items.jsonl").read_text().splitlines()]
    assert {row["id"]: row["path"] for row in rows} == {"same.v2": "images/same.v2.png", "same": "images/same.jpg"}


def test_bad_uploads_get_clear_errors_and_keep_nothing(client: TestClient, settings: Settings) -> None:
    bomb = io.BytesIO()
    Image.new("L", (2500, 2000)).save(bomb, "PNG")  # 5 Mpx: over the tests' 4 Mpx limit, few bytes
    cases = [
        (upload(client, "x1", b"hello, not an image", name="notes.txt"), 415, "unsupported_media_type"),
        (upload(client, "x11", MP4_HEADER + b"\0" * 100, name="clip.mp4"), 415, "unsupported_media_type"),
        (upload(client, "x12", photo_bytes("HEIF")[:200], name="cut.heic"), 422, "undecodable_image"),
        (upload(client, "x2", b"\xff\xd8\xff" + b"\0" * 100), 422, "undecodable_image"),
        (upload(client, "x3", bomb.getvalue()), 422, "undecodable_image"),
        (upload(client, "x4", b"\xff" * 2_100_000), 413, "too_large"),
        (upload(client, "x5", photo_bytes(), "not json"), 422, "invalid_metadata"),
        (upload(client, "x6", photo_bytes(), [1, 2]), 422, "invalid_metadata"),
        (upload(client, "x10", photo_bytes(), "[" * 100_000), 422, "invalid_metadata"),  # too deep
        (upload(client, "x7", photo_bytes(), {"path": "/etc/passwd"}), 422, "invalid_item"),
        (upload(client, "../x8", photo_bytes()), 422, "invalid_item"),
        (upload(client, "-x", photo_bytes()), 422, "invalid_item"),
        (upload(client, "", photo_bytes()), 422, "invalid_item"),  # the schema's minLength 1, not a made-up id
        (client.post("/admin/items", headers=KEY, data={"id": "x9"}), 415, "unsupported_media_type"),
        (client.post("/admin/items", headers=KEY, files={"other": ("a", b"b")}), 422, "missing_image"),
    ]
    for response, status, code in cases:
        assert (response.status_code, response.json()["code"]) == (status, code), response.text
    assert not (settings.uploads_dir / "items.jsonl").exists()
    assert not (settings.uploads_dir / "images").exists() or not list((settings.uploads_dir / "images").iterdir())


def test_first_slice_is_completed_by_the_service(tmp_path: Path, tiny_checkpoint: Path) -> None:
    catalogue = load_catalogue(make_catalogue(tmp_path / "catalogue", count=20))
    store = BundleStore(tmp_path / "bundles")
    build_bundle(store, tiny_checkpoint, catalogue, IndexOptions(threshold=0.0, workers=0), first=5)
    first = store.open()
    assert not first.complete and len(first.items) == 5
    assert len({record.id for record in first.items.values()}) == 5
    settings = make_settings(tiny_checkpoint, store.root)
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").json()["bundle_version"] == first.version  # serves the slice at once
        deadline = time.monotonic() + 60
        while not client.app.state.recommender.bundles.current.complete:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "the first slice was not completed"
            time.sleep(0.1)
        bundle = client.app.state.recommender.bundles.current  # type: ignore[attr-defined]
        assert sorted(record.id for record in bundle.items.values()) == sorted(i.id for i in catalogue.items)
        assert bundle.manifest["parent"] == first.version  # the slice's embeddings were kept, not redone


def test_a_completion_of_a_whole_catalogue_publishes_and_reports_nothing(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """Its decision is taken under the writer lock: the live bundle, whoever published it, is not
    announced again nor its skipped rows reported as the job's."""
    from app import jobs
    from app.schemas import Job, JobKind

    catalogue = make_catalogue(tmp_path / "spoilt", count=12, bad=True)
    store = BundleStore(tmp_path / "bundles")
    live = build_bundle(store, tiny_checkpoint, load_catalogue(catalogue), IndexOptions(threshold=0.0, workers=0))
    assert store.skipped_by(live)  # another writer's build, with rows it left out
    params = {"catalogue": str(catalogue)}
    job = Job(id="j", kind=JobKind.COMPLETE, state="running", params=params, created=0, updated=0)
    assert jobs.execute_job(job, make_settings(tiny_checkpoint, store.root), lambda done, total: None) is None
    assert (job.skipped_count, job.skipped) == (0, []) and store.current_version() == live


def test_a_late_announcement_does_not_take_the_service_back(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """Two workers publish one after the other; the first one's announcement arrives last. The
    service follows the pointer on disk, not the version an announcement names."""
    catalogue = load_catalogue(make_catalogue(tmp_path / "catalogue", count=12))
    store = BundleStore(tmp_path / "bundles")
    options = IndexOptions(threshold=0.0, workers=0)
    build_bundle(store, tiny_checkpoint, catalogue, options)
    settings = make_settings(tiny_checkpoint, store.root, bundle_poll_s=3600)  # announcements alone move it
    with TestClient(create_app(settings)) as client:
        coordinator, bundles = client.app.state.coordinator, client.app.state.recommender.bundles  # type: ignore[attr-defined]
        first, second = (build_bundle(store, tiny_checkpoint, catalogue, options) for _ in range(2))
        client.portal.call(coordinator.announce, second)  # type: ignore[union-attr]
        deadline = time.monotonic() + 10
        while bundles.current.version != second:
            assert time.monotonic() < deadline, "the announcement was not followed"
            time.sleep(0.05)
        followed: list[bool] = []
        swap_to = bundles.swap_to

        async def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
            followed.append(await swap_to(*args, **kwargs))
            return followed[-1]

        bundles.swap_to = counted
        client.portal.call(coordinator.announce, first)  # type: ignore[union-attr]  # late: replaced already
        deadline = time.monotonic() + 10
        while not followed:
            assert time.monotonic() < deadline, "the late announcement was not followed"
            time.sleep(0.05)
        assert bundles.current.version == second and followed == [False]  # followed, and nothing swapped


def test_a_completion_job_indexes_anew_a_slice_whose_folder_has_since_gained_metadata(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    """The job carries the slice's own record (no metadata); the folder now has a metadata file."""
    from app import jobs
    from app.schemas import Job, JobKind

    folder = make_catalogue(tmp_path / "catalogue", count=10)
    store = BundleStore(tmp_path / "bundles")
    made_from = slice_before_its_metadata(folder, store, tiny_checkpoint, IndexOptions(threshold=0.0, workers=0), 4)
    params = {"catalogue": made_from["root"], "metadata": made_from["metadata"]}  # as app.main queues it
    job = Job(id="j", kind=JobKind.COMPLETE, state="running", params=params, created=0, updated=0)
    version = jobs.execute_job(job, make_settings(tiny_checkpoint, store.root), lambda done, total: None)
    bundle = store.open()
    assert version == bundle.version and bundle.complete and bundle.manifest["parent"] is None
    assert bundle.manifest["catalogue"]["metadata"] == str(folder / "metadata.csv") and len(bundle.items) == 10


def test_a_category_map_broken_while_being_edited_fails_no_add_or_delete(tmp_path: Path, tiny_checkpoint: Path) -> None:
    from app import jobs
    from app.schemas import Job, JobKind
    from indexer.catalogue import CatalogueItem

    catalogue = load_catalogue(make_catalogue(tmp_path / "catalogue", count=4))
    store = BundleStore(tmp_path / "bundles")
    build_bundle(store, tiny_checkpoint, catalogue, IndexOptions(threshold=0.0, workers=0))
    broken = tmp_path / "map.csv"
    broken.write_text("category,label\nTops,red\n")
    settings = make_settings(tiny_checkpoint, store.root, category_map=broken, labels_from="kind")
    broken.write_text('category,label\n"Tops,red\n')  # a quote left open, mid-edit, the service up
    item = CatalogueItem("extra", catalogue.items[0].path)
    for kind, params in (
        (JobKind.ADD, {"items": [{"id": item.id, "path": str(item.path)}]}),
        (JobKind.DELETE, {"ids": ["extra", "p1"]}),
    ):
        job = Job(id="j", kind=kind, state="running", params=params, created=0, updated=0)
        assert jobs.execute_job(job, settings, lambda done, total: None) == store.current_version()
    assert set(store.open().keys_by_id) == {"p0", "p2", "p3"}


def test_a_refused_delete_keeps_the_uploads_and_an_id_uploaded_again_since_stays(
    client: TestClient, settings: Settings
) -> None:
    job = wait_for_job(client, upload(client, "up-1", photo_bytes("PNG")).json()["job_id"])
    assert job["state"] == "succeeded", job
    refused = wait_for_job(
        client, client.post("/admin/items/delete", headers=KEY, json={"ids": ["up-1", "typo"]}).json()["job_id"]
    )
    assert refused["state"] == "failed" and "typo" in refused["error"]
    assert [p.name for p in (settings.uploads_dir / "images").iterdir()] == ["up-1.png"]  # the bundle still has it

    from app import jobs
    from app.schemas import Job, JobKind
    from app.uploads import UploadStore

    asked = Job.new(JobKind.DELETE, {"ids": ["up-1"]})  # asked for, then up-1 uploaded again before it ran
    time.sleep(0.05)
    UploadStore(settings.uploads_dir).save("up-1", photo_bytes("PNG", colour="green"), "image/png", {})
    jobs.execute_job(asked, settings, lambda done, total: None)
    assert [p.name for p in (settings.uploads_dir / "images").iterdir()] == ["up-1.png"]  # its add job adds it back
