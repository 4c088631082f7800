"""Admin mistakes and faults that must not cost the live bundle: paths outside the catalogue roots,
a reindex that would empty or shrink the service, a worker that died mid-job, a corrupt bundle, a
full disk."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from app.main import create_app
from app.schemas import Job, JobKind
from app.settings import Settings
from indexer.build import IndexOptions, build_bundle
from indexer.bundle import GLOBAL_INDEX, BundleStore
from indexer.catalogue import load_catalogue
from model.checkpoint import file_sha256, save_checkpoint
from model.network import PartAttentionNetwork
from tests.app.conftest import make_settings, photo_bytes
from tests.app.test_admin import KEY, wait_for_job
from tests.helpers import make_catalogue, tiny_config


def reindex(client: TestClient, **body: object) -> dict:  # type: ignore[type-arg]
    accepted = client.post("/admin/reindex", headers=KEY, json=body)
    assert accepted.status_code == 202, accepted.text
    return wait_for_job(client, accepted.json()["job_id"])


def live(client: TestClient) -> tuple[str, int]:
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    answer = client.post("/recommend", files={"image": ("x.jpg", photo_bytes(), "image/jpeg")})
    assert answer.status_code == 200 and answer.json()["bundle_version"] == ready.json()["bundle_version"]
    return ready.json()["bundle_version"], len(client.app.state.recommender.bundles.current.items)  # type: ignore[attr-defined]


def test_admin_paths_outside_the_catalogue_roots_are_refused(client: TestClient, settings: Settings) -> None:
    escape = settings.bundles_dir.parent / "catalogue" / "escape"
    escape.symlink_to("/etc")  # inside the root by name, outside once resolved
    loop = settings.bundles_dir.parent / "catalogue" / "loop"
    loop.symlink_to(loop)  # resolving it fails: refused, not a 500
    bodies = [{"catalogue": "/etc"}, {"catalogue": str(escape)}, {"metadata": "/etc/passwd"}, {"catalogue": str(loop)}]
    for body in [*bodies, {"catalogue": str(settings.bundles_dir.parent) + "/\0x"}]:
        response = client.post("/admin/reindex", headers=KEY, json=body)
        assert response.status_code == 403 and response.json()["code"] == "forbidden_path", body
    items = {"items": [{"id": "x", "path": "/etc/hostname"}]}
    assert client.post("/admin/items", headers=KEY, json=items).status_code == 403


def test_a_catalogue_whose_photos_lie_outside_the_roots_indexes_none_of_them(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    before = live(client)
    outside = make_catalogue(tmp_path.parent / f"{tmp_path.name}-outside", count=12)
    inside = settings.bundles_dir.parent / "links"
    inside.mkdir()
    (inside / "list.txt").write_text("\n".join(str(p) for p in sorted((outside / "images").iterdir())))
    job = reindex(client, catalogue=str(inside / "list.txt"))
    assert job["state"] == "failed" and "0 items" in job["error"]
    assert live(client) == before
    shutil.rmtree(outside)


def test_a_reindex_that_would_empty_or_shrink_the_service_fails_and_keeps_the_live_bundle(
    client: TestClient, settings: Settings
) -> None:
    before = live(client)
    assert before[1] == 12
    empty = settings.bundles_dir.parent / "empty-folder"
    empty.mkdir()
    job = reindex(client, catalogue=str(empty))
    assert job["state"] == "failed" and "nothing published" in job["error"]
    assert live(client) == before

    small = make_catalogue(settings.bundles_dir.parent / "small", count=3, prefix="s")
    job = reindex(client, catalogue=str(small))
    assert job["state"] == "failed" and "fewer than the 6 required" in job["error"]  # half of 12
    assert live(client) == before
    assert reindex(client, catalogue=str(empty), force=True)["state"] == "failed"  # never an empty bundle

    job = reindex(client, catalogue=str(small), force=True)
    assert job["state"] == "succeeded"
    deadline = time.monotonic() + 30
    while live(client)[0] != job["version"]:
        assert time.monotonic() < deadline, "the service did not swap to the forced bundle"
        time.sleep(0.1)
    assert live(client)[1] == 3


def test_a_job_whose_worker_was_lost_is_requeued_until_its_attempts_are_used_up() -> None:
    job = Job.new(JobKind.REINDEX, {})
    job.state, job.attempts = "running", 1
    job.requeue_lost("worker w1 stopped renewing the job's lease (killed or lost)", max_attempts=2)
    assert job.state == "queued" and job.error is None and "attempt 2 of 2" in job.requeued[-1]
    job.state, job.attempts = "running", 2
    job.requeue_lost("worker w2 stopped renewing the job's lease (killed or lost)", max_attempts=2)
    assert job.state == "failed" and "w2" in (job.error or "") and "failed after 2 attempts" in (job.error or "")
    handed = Job.new(JobKind.REINDEX, {})
    handed.state, handed.attempts = "running", 1
    handed.hand_back("worker w3 was stopped before the job finished")
    assert (handed.state, handed.attempts, handed.requeued) == (
        "queued",
        0,
        ["worker w3 was stopped before the job finished"],
    )


def test_a_job_whose_worker_was_lost_too_often_is_reported_failed_by_the_api(
    client: TestClient, settings: Settings
) -> None:
    coordinator = client.app.state.coordinator  # type: ignore[attr-defined]
    job = Job.new(JobKind.REINDEX, {})
    # running, with no lease (its worker was killed), on its last attempt
    job.state, job.worker, job.attempts = "running", "gone:1", settings.job_max_attempts
    client.portal.call(coordinator.save_job, job)  # type: ignore[union-attr]
    answer = client.get(f"/admin/jobs/{job.id}", headers=KEY).json()
    assert answer["state"] == "failed" and "gone:1 stopped renewing" in answer["error"], answer
    assert f"failed after {settings.job_max_attempts} attempts" in answer["error"]


def test_a_refusal_is_forgotten_once_the_pointer_is_back_on_the_served_bundle(
    client: TestClient, settings: Settings
) -> None:
    holder = client.app.state.recommender.bundles  # type: ignore[attr-defined]
    served = holder.current.version
    store = BundleStore(settings.bundles_dir)
    broken = store.versions_dir / "20000101T000000000000Z-broken"
    broken.mkdir()
    (broken / "manifest.json").write_text('{"version": "20000101T000000000000Z-broken"}')
    store.rollback(broken.name)
    assert not client.portal.call(holder.swap_to) and broken.name in holder.refused  # type: ignore[union-attr]
    store.rollback(served)
    assert not client.portal.call(holder.swap_to) and holder.refused is None  # type: ignore[union-attr]
    assert client.get("/readyz").json()["detail"] is None


def test_a_corrupt_published_bundle_is_refused_and_the_old_one_keeps_serving(
    client: TestClient, settings: Settings, tiny_checkpoint: Path
) -> None:
    before = live(client)
    # A second version, written elsewhere, copied in with its global index cut short, then made live.
    other = BundleStore(settings.bundles_dir.parent / "other")
    catalogue = load_catalogue(make_catalogue(settings.bundles_dir.parent / "more", count=14, prefix="m"))
    version = build_bundle(other, tiny_checkpoint, catalogue, IndexOptions(threshold=0.0, workers=0))
    target = settings.bundles_dir / "versions" / version
    shutil.copytree(other.versions_dir / version, target)
    index_file = target / GLOBAL_INDEX
    index_file.write_bytes(index_file.read_bytes()[:-100])
    BundleStore(settings.bundles_dir).rollback(version)

    deadline = time.monotonic() + 30
    while version not in (client.get("/readyz").json()["detail"] or ""):
        assert time.monotonic() < deadline, "the refusal never showed in /readyz"
        time.sleep(0.1)
    detail = client.get("/readyz").json()["detail"]
    assert "refused" in detail and "bytes" in detail and before[0] in detail
    assert live(client) == before


def test_a_full_disk_fails_the_job_publishes_nothing_and_leaves_no_staging(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    disk = tmp_path / "small-disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)]).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        store = BundleStore(disk / "bundles")
        first = load_catalogue(make_catalogue(tmp_path / "catalogue", count=12))
        build_bundle(store, tiny_checkpoint, first, IndexOptions(threshold=0.0, workers=0))
        settings = make_settings(tiny_checkpoint, store.root, catalogue_roots=[tmp_path, disk])
        with TestClient(create_app(settings)) as client:
            before = live(client)
            filler = disk / "filler"
            free = shutil.disk_usage(disk).free
            filler.write_bytes(b"\0" * max(0, free - 8192))  # a few KB left: too few for a bundle
            bigger = make_catalogue(tmp_path / "bigger", count=15, prefix="b")
            job = reindex(client, catalogue=str(bigger))
            assert job["state"] == "failed" and "No space left" in job["error"], job
            assert live(client) == before
            assert list((store.root / "staging").iterdir()) == []  # nothing half-written is left
            filler.unlink()
            assert reindex(client, catalogue=str(bigger))["state"] == "succeeded"  # the store is usable again
    finally:
        subprocess.run(["umount", "-l", str(disk)])


def test_a_bundle_built_by_another_model_is_refused_said_so_and_rebuilt_by_a_bare_reindex(
    tmp_path: Path, bundles_dir: Path, catalogue_dir: Path
) -> None:
    torch.manual_seed(1)
    other = save_checkpoint(tmp_path / "other.pt", PartAttentionNetwork(tiny_config()).eval())
    built_with = BundleStore(bundles_dir).open().model_sha256
    with TestClient(create_app(make_settings(other, bundles_dir, None))) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["bundle_version"] is None
        detail = ready.json()["detail"]
        assert f"built with another model ({built_with[:12]}…, this service runs {file_sha256(other)[:12]}…)" in detail
        assert "POST /admin/reindex with no body" in detail
        answer = client.post("/recommend", files={"image": ("x.jpg", photo_bytes(), "image/jpeg")})
        assert answer.status_code == 503 and answer.json()["code"] == "not_ready"

        job = reindex(client)  # no body: the refused bundle's own catalogue, embedded by this model
        assert job["state"] == "succeeded", job
        assert BundleStore(bundles_dir).open().model_sha256 == file_sha256(other)
        deadline = time.monotonic() + 10
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, client.get("/readyz").text
            time.sleep(0.05)
        assert live(client) == (job["version"], 12)
