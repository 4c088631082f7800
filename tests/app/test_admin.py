import time

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.settings import Settings
from tests.app.conftest import ADMIN_KEY, photo_bytes
from tests.helpers import make_catalogue

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


def test_add_and_delete_items(client: TestClient, tmp_path) -> None:  # type: ignore[no-untyped-def]
    extra = make_catalogue(tmp_path / "extra", count=14)
    items = [{"id": "new13", "path": str(extra / "images" / "p13.jpg"), "metadata": {"name": "new"}}]
    job = wait_for_job(client, client.post("/admin/items", headers=KEY, json={"items": items}).json()["job_id"])
    assert job["state"] == "succeeded", job
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


def test_default_key_refused_outside_development() -> None:
    with pytest.raises(ValidationError, match="FASHION_ADMIN_API_KEY"):
        Settings(environment="production")
    assert Settings(environment="production", admin_api_key="s3cret").environment == "production"
