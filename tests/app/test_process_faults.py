"""Faults in real processes, caused on purpose: the worker killed (kill -9) in the middle of a
reindex (its job is re-queued and completed), and the API killed and restarted under load."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx

from indexer.bundle import BundleStore
from tests.app.conftest import photo_bytes
from tests.app.live import KEY, Processes, bundle_version, service_env, wait_job, wait_until
from tests.conftest import RedisServer, free_port
from tests.helpers import make_catalogue


def job_state(api: str, job_id: str) -> dict:  # type: ignore[type-arg]
    return httpx.get(f"{api}/admin/jobs/{job_id}", headers=KEY, timeout=5).json()  # type: ignore[no-any-return]


def test_a_worker_killed_mid_reindex_has_its_job_requeued_after_its_lease_and_completed(
    tmp_path: Path, tiny_checkpoint: Path, bundles_dir: Path, redis_server: RedisServer, processes: Processes
) -> None:
    env = service_env(tiny_checkpoint, bundles_dir, redis_server.url)
    api = processes.api(env, tmp_path / "api.log")
    # The first worker holds its job under a 3 s lease, the next one under the default (a loaded
    # machine may pause a healthy worker's renewals for more than 3 s).
    worker = processes.start(["-m", "app.worker"], {**env, "FASHION_JOB_STALE_S": "3"}, tmp_path / "worker.log")
    before = bundle_version(api)
    catalogue = make_catalogue(tmp_path / "big", count=300, prefix="k")

    job_id = httpx.post(api + "/admin/reindex", headers=KEY, json={"catalogue": str(catalogue)}).json()["job_id"]
    wait_until(lambda: job_state(api, job_id)["state"] == "running", "the worker to start the job", 60)
    worker.send_signal(signal.SIGKILL)  # in the middle: decode workers starting, nothing written yet
    worker.wait(10)
    photo = {"image": ("x.jpg", photo_bytes(), "image/jpeg")}
    answer = httpx.post(api + "/recommend", files=photo, timeout=30)
    assert answer.status_code == 200 and answer.json()["bundle_version"] == before

    # Its lease runs out; the job is re-queued (by the API reading it, or the next worker looking)
    # and the next worker runs it to the end: no resubmission.
    processes.start(["-m", "app.worker"], env, tmp_path / "worker2.log")
    job = wait_job(api, job_id, timeout=180)
    assert job["state"] == "succeeded", job
    assert job["attempts"] == 2 and len(job["requeued"]) == 1 and "stopped renewing" in job["requeued"][0], job
    wait_until(lambda: bundle_version(api) == job["version"], "the new bundle to be served", 30)
    assert BundleStore(bundles_dir).versions() == sorted([before, job["version"]]), "one bundle published"


def test_an_api_restarted_under_load_gives_connection_errors_never_a_wrong_answer(
    tmp_path: Path, tiny_checkpoint: Path, bundles_dir: Path, processes: Processes
) -> None:
    env = service_env(tiny_checkpoint, bundles_dir, None)  # the embedded default
    port = free_port()
    api = processes.api(env, tmp_path / "api1.log", port)
    version = bundle_version(api)
    answers: list[tuple[int, dict]] = []  # type: ignore[type-arg]
    connection_errors: list[str] = []
    stop = threading.Event()

    def client(n: int) -> None:
        photo = {"image": ("x.jpg", photo_bytes(colour=("red", "green", "blue")[n % 3]), "image/jpeg")}
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                try:
                    r = http.post(api + "/recommend", files=photo, params={"max_parts": 3})
                    answers.append((r.status_code, r.json()))
                except httpx.TransportError as exc:  # refused, reset, closed mid-answer
                    connection_errors.append(type(exc).__name__)
                    time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(answers) >= 20, "answers before the restart")
        processes.running[0].send_signal(signal.SIGKILL)
        processes.running[0].wait(10)
        killed_at = len(answers)
        processes.api(env, tmp_path / "api2.log", port)  # the same address, as a supervisor restarts it
        wait_until(lambda: len(answers) >= killed_at + 20, "answers after the restart")
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)

    assert connection_errors, "the kill went unnoticed: the test did not test a restart"
    for status, body in answers:
        assert status == 200, (status, body)
        items = [p["item"]["id"] for p in body["parts"] if p["item"]]
        assert body["bundle_version"] == version and items and len(items) == len(set(items)), body
    assert BundleStore(bundles_dir).current_version() == version
