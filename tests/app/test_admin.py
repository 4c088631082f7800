import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.main import create_app
from app.reindex import NO_CATALOGUE
from app.settings import Settings
from indexer.bundle import BundleStore
from tests.app.conftest import ADMIN_KEY, make_settings, photo_bytes
from tests.helpers import add_field, make_catalogue
from tests.indexer.bad_maps import BAD_MAPS

KEY = {"X-API-Key": ADMIN_KEY}


def wait_for_job(client: TestClient, job_id: str, timeout: float = 60) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/admin/jobs/{job_id}", headers=KEY).json()
        if job["state"] in ("succeeded", "failed"):
            return job  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def wait_for_version(client: TestClient, version: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/readyz").json()["bundle_version"] != version:
        assert time.monotonic() < deadline, "the service did not swap to the new bundle"
        time.sleep(0.05)


def test_admin_needs_the_key(client: TestClient) -> None:
    missing = client.post("/admin/reindex")
    assert missing.status_code == 401 and missing.json()["code"] == "unauthorised"
    wrong = client.post("/admin/reindex", headers={"X-API-Key": "nope"})
    assert wrong.status_code == 403 and wrong.json()["code"] == "forbidden"
    assert client.get("/admin/jobs/x", headers={"X-API-Key": ADMIN_KEY[:-1]}).status_code == 403


def test_reindex_job_publishes_and_the_service_swaps(client: TestClient, tmp_path) -> None:  # type: ignore[no-untyped-def]
    before = client.get("/readyz").json()["bundle_version"]
    catalogue = make_catalogue(tmp_path / "bigger", count=15)
    accepted = client.post("/admin/reindex", headers=KEY, json={"catalogue": str(catalogue)})
    assert accepted.status_code == 202
    job = wait_for_job(client, accepted.json()["job_id"])
    assert job["state"] == "succeeded" and job["kind"] == "reindex", job
    assert job["progress"]["total"] == 15 and job["version"] != before
    wait_for_version(client, job["version"])
    body = client.post("/recommend", files={"image": ("x", photo_bytes())}).json()
    assert body["bundle_version"] == job["version"]
    assert (job["skipped_count"], job["skipped"]) == (0, [])


def test_a_reindex_job_says_what_it_left_out(client: TestClient, tmp_path) -> None:  # type: ignore[no-untyped-def]
    catalogue = make_catalogue(tmp_path / "with-bad-rows", count=15, bad=True)
    accepted = client.post("/admin/reindex", headers=KEY, json={"catalogue": str(catalogue)})
    job = wait_for_job(client, accepted.json()["job_id"])
    assert job["state"] == "succeeded", job
    reasons = {s["id"]: s["reason"] for s in job["skipped"]}
    assert job["skipped_count"] == len(reasons) == 6  # the rows make_catalogue spoils, as the manifest has them
    assert reasons["missing"] == "missing image file" and reasons["p1"] == "duplicate id"
    assert "not a readable image" in reasons["text"]


def test_add_and_delete_items(client: TestClient, tmp_path) -> None:  # type: ignore[no-untyped-def]
    extra = make_catalogue(tmp_path / "extra", count=14)
    items = [{"id": "new13", "path": str(extra / "images" / "p13.jpg"), "metadata": {"name": "new"}}]
    (extra / "images" / "broken.jpg").write_bytes(b"not a photo")
    items.append({"id": "broken", "path": str(extra / "images" / "broken.jpg")})
    job = wait_for_job(client, client.post("/admin/items", headers=KEY, json={"items": items}).json()["job_id"])
    assert job["state"] == "succeeded", job
    # only this job's own: not what the bundle it added to had skipped before
    assert job["skipped_count"] == 1 and job["skipped"][0]["id"] == "broken", job
    wait_for_version(client, job["version"])
    bundle = client.app.state.recommender.bundles.current  # type: ignore[attr-defined]
    assert "new13" in bundle.keys_by_id and bundle.manifest["items"] == 13

    job = wait_for_job(
        client, client.post("/admin/items/delete", headers=KEY, json={"ids": ["new13", "p0"]}).json()["job_id"]
    )
    assert job["state"] == "succeeded", job
    wait_for_version(client, job["version"])
    bundle = client.app.state.recommender.bundles.current  # type: ignore[attr-defined]
    assert not {"new13", "p0"} & set(bundle.keys_by_id)


def test_a_failing_job_reports_its_error_and_changes_nothing(client: TestClient, settings: Settings) -> None:
    before = client.get("/readyz").json()["bundle_version"]
    missing = settings.bundles_dir.parent / "no-such-catalogue"
    job_id = client.post("/admin/reindex", headers=KEY, json={"catalogue": str(missing)}).json()["job_id"]
    job = wait_for_job(client, job_id)
    assert job["state"] == "failed" and f"no catalogue at {missing}" in job["error"]
    bad = client.post("/admin/items/delete", headers=KEY, json={"ids": ["nope"]}).json()["job_id"]
    assert "nope" in wait_for_job(client, bad)["error"]
    assert client.get("/readyz").json()["bundle_version"] == before
    assert client.get("/admin/jobs/unknown", headers=KEY).status_code == 404


def test_bad_admin_bodies_get_422(client: TestClient) -> None:
    response = client.post("/admin/items", headers=KEY, json={"items": []})
    assert response.status_code == 422 and response.json()["code"] == "invalid_request"


def test_default_key_refused_outside_development(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FASHION_ADMIN_API_KEY", raising=False)  # nor a key from the machine's .env
    with pytest.raises(ValidationError, match="FASHION_ADMIN_API_KEY"):
        Settings(environment="production", _env_file=None)  # type: ignore[call-arg]
    assert Settings(environment="production", admin_api_key="s3cret").environment == "production"


def test_a_bare_reindex_indexes_the_catalogue_the_live_bundle_was_built_from(
    tiny_checkpoint: Path, bundles_dir: Path, catalogue_dir: Path
) -> None:
    # As under `make serve`: no FASHION_CATALOGUE, no catalogue roots (only the uploads folder).
    settings = make_settings(tiny_checkpoint, bundles_dir, None, catalogue_roots=[])
    with TestClient(create_app(settings)) as client:
        before = client.get("/readyz").json()["bundle_version"]
        accepted = client.post("/admin/reindex", headers=KEY)
        assert accepted.status_code == 202, accepted.text
        job = wait_for_job(client, accepted.json()["job_id"])
        assert job["state"] == "succeeded", job
        assert job["progress"]["total"] == 12 and job["version"] != before
        wait_for_version(client, job["version"])
        manifest = client.app.state.recommender.bundles.current.manifest  # type: ignore[attr-defined]
        assert manifest["catalogue"]["root"] == str(catalogue_dir)
        # the roots still guard what a request names: the same folder, named, is outside them
        named = client.post("/admin/reindex", headers=KEY, json={"catalogue": str(catalogue_dir)})
        assert named.status_code == 403 and named.json()["code"] == "forbidden_path"


def test_a_reindex_with_no_catalogue_anywhere_is_refused_at_once(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tiny_checkpoint, tmp_path / "empty"))) as client:
        refused = client.post("/admin/reindex", headers=KEY)
        assert refused.status_code == 422 and refused.json() == {"detail": NO_CATALOGUE, "code": "no_catalogue"}


def shop_catalogue(tmp_path: Path) -> Path:
    return add_field(make_catalogue(tmp_path / "shop", count=5), "category", ["Tee", "Tee", "Top", "Gift", "Hat"])


def test_a_reindex_takes_the_shops_category_map(tiny_checkpoint: Path, bundles_dir: Path, tmp_path: Path) -> None:
    shop = shop_catalogue(tmp_path)
    settings = make_settings(tiny_checkpoint, bundles_dir, None, labels_from="category")
    (tmp_path / "map.csv").write_text("category,label\nTee,red\nTop,Blue\nGift,none\n")
    with TestClient(create_app(settings)) as client:
        body = {"catalogue": str(shop), "category_map": str(tmp_path / "map.csv"), "force": True}
        job = wait_for_job(client, client.post("/admin/reindex", headers=KEY, json=body).json()["job_id"])
        assert job["state"] == "succeeded", job
        wait_for_version(client, job["version"])
        bundle = client.app.state.recommender.bundles.current  # type: ignore[attr-defined]
        parts = {r.id: r.metadata["parts"] for r in bundle.items.values()}
        assert [parts[f"p{i}"] for i in range(4)] == [["red"], ["red"], ["blue"], []]  # Hat: the model's
        record = {"source": str(tmp_path / "map.csv"), "entries": {"Tee": "red", "Top": "blue", "Gift": "none"}}
        assert bundle.manifest["options"]["category_map"] == record

        # a bare reindex builds the live bundle's catalogue again, with the map it was built with
        job = wait_for_job(client, client.post("/admin/reindex", headers=KEY).json()["job_id"])
        assert job["state"] == "succeeded", job
        assert BundleStore(bundles_dir).manifest(job["version"])["options"]["category_map"] == record


def test_a_bad_category_map_is_refused_with_its_line_before_any_job(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    before = client.get("/readyz").json()["bundle_version"]
    for bad in BAD_MAPS:
        path = bad.write(tmp_path)
        refused = client.post("/admin/reindex", headers=KEY, json={"category_map": str(path)})
        assert refused.status_code == 422, refused.text
        if bad.kind == "unknown part label":  # the tests' model has three labels, not CCP's
            assert refused.json()["detail"].startswith(f"{path}:2: 't-shirt' (for 'T-Shirt') is not a part label")
        elif bad.kind == "not a map file type":  # the request's schema says .csv, .yaml or .yml
            assert refused.json()["code"] == "invalid_request" and "category_map" in refused.json()["detail"]
        else:
            assert refused.json() == {"detail": bad.expected(path), "code": "invalid_category_map"}
    (tmp_path / "rouge.yaml").write_text("Tee: rouge\n")
    refused = client.post("/admin/reindex", headers=KEY, json={"category_map": str(tmp_path / "rouge.yaml")})
    assert refused.status_code == 422 and refused.json()["detail"] == (
        f"{tmp_path / 'rouge.yaml'}:1: 'rouge' (for 'Tee') is not a part label of the model nor 'none'; "
        "its labels: blue, green, red"
    )
    (tmp_path / "labels.csv").write_text("category,label\nTee,redd\n")
    refused = client.post("/admin/reindex", headers=KEY, json={"category_map": str(tmp_path / "labels.csv")})
    assert refused.json()["detail"].startswith(f"{tmp_path / 'labels.csv'}:2: 'redd' (for 'Tee') is not a part label")
    outside = client.post("/admin/reindex", headers=KEY, json={"category_map": "/etc/passwd.csv"})
    assert outside.status_code == 403 and outside.json()["code"] == "forbidden_path"
    assert client.get("/readyz").json()["bundle_version"] == before


def test_the_services_category_map_is_checked_at_start(tiny_checkpoint: Path, bundles_dir: Path) -> None:
    shop_map = bundles_dir.parent / "map.yaml"
    shop_map.write_text("Tee: red\nTee: blue\n")
    with pytest.raises(ValidationError, match=rf"FASHION_CATEGORY_MAP: {shop_map}:2: 'Tee' is mapped twice"):
        make_settings(tiny_checkpoint, bundles_dir, category_map=shop_map)
    with pytest.raises(ValidationError, match="FASHION_LABELS_FROM, which is empty"):
        shop_map.write_text("Tee: red\n")
        make_settings(tiny_checkpoint, bundles_dir, category_map=shop_map, labels_from="")
    shop_map.write_text("Tee: t-shirt\n")  # read fine; the model has no such label: found at start
    settings = make_settings(tiny_checkpoint, bundles_dir, category_map=shop_map)
    refused = rf"^FASHION_CATEGORY_MAP: {shop_map}:1: 't-shirt' \(for 'Tee'\)"
    with pytest.raises(RuntimeError, match=refused), TestClient(create_app(settings)):
        pass
    shop_map.write_text("Tee: red\n")
    assert make_settings(tiny_checkpoint, bundles_dir, category_map=shop_map).index_options().category_map
