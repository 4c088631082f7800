"""The service against a real redis-server, over real HTTP: two API processes and an indexer worker."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from indexer.bundle import BundleStore
from tests.app.conftest import ADMIN_KEY, photo_bytes
from tests.conftest import RedisServer, free_port
from tests.helpers import make_catalogue

ROOT = Path(__file__).resolve().parents[2]
KEY = {"X-API-Key": ADMIN_KEY}


def service_env(checkpoint: Path, bundles: Path, redis_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FASHION_CHECKPOINT": str(checkpoint),
        "FASHION_BUNDLES_DIR": str(bundles),
        "FASHION_REDIS_URL": redis_url,
        "FASHION_EMBEDDED_WORKER": "false",
        "FASHION_ADMIN_API_KEY": ADMIN_KEY,
        "FASHION_PART_THRESHOLD": "0",
        "FASHION_CACHE_TTL_S": "0",
        "FASHION_BUNDLE_POLL_S": "0.5",
        "OMP_NUM_THREADS": "1",
    }


class Processes:
    def __init__(self) -> None:
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        handle = open(log, "wb")  # noqa: SIM115 - lives as long as the process
        process = subprocess.Popen([sys.executable, *args], env=env, cwd=ROOT, stdout=handle, stderr=handle)
        self.running.append(process)
        return process

    def api(self, env: dict[str, str], log: Path) -> str:
        port = free_port()
        process = self.start(["-m", "app", "--port", str(port)], env, log)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("API did not become ready:\n" + log.read_text()[-3000:])

    def stop(self) -> None:
        for process in self.running:
            process.terminate()
        for process in self.running:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def processes() -> Iterator[Processes]:
    procs = Processes()
    yield procs
    procs.stop()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds (generous: a loaded machine
    is slow, and a condition that holds sooner ends the wait sooner)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.05)


def wait_job(url: str, job_id: str, timeout: float = 120) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/admin/jobs/{job_id}", headers=KEY, timeout=5).json()
        if job["state"] in ("succeeded", "failed"):
            return job  # type: ignore[no-any-return]
        time.sleep(0.2)
    raise AssertionError("job did not finish")


def bundle_version(url: str) -> str:
    return str(httpx.get(url + "/readyz", timeout=10).json()["bundle_version"])


def test_reindex_under_load_every_replica_swaps_with_no_failed_or_mixed_request(
    tmp_path: Path, tiny_checkpoint: Path, bundles_dir: Path, redis_server: RedisServer, processes: Processes
) -> None:
    env = service_env(tiny_checkpoint, bundles_dir, redis_server.url)
    apis = [processes.api(env, tmp_path / f"api{i}.log") for i in range(2)]
    processes.start(["-m", "app.worker"], env, tmp_path / "worker.log")
    old = httpx.get(apis[0] + "/readyz").json()["bundle_version"]
    new_catalogue = make_catalogue(tmp_path / "new", count=10, prefix="n")  # new ids: a mix would show

    # (replica, status, body) in the order each client got them; list.append is atomic
    answers: list[tuple[int, int, dict]] = []  # type: ignore[type-arg]
    errors: list[str] = []
    stop = threading.Event()

    def client(n: int) -> None:
        data = photo_bytes(colour=("red", "green", "blue")[n % 3])
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                try:
                    r = http.post(
                        apis[n % 2] + "/recommend",
                        files={"image": ("x.jpg", data, "image/jpeg")},
                        params={"max_parts": 3},
                    )
                    answers.append((n, r.status_code, r.json()))
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))

    def served(version: str, since: int = 0) -> set[int]:
        """The replicas that have answered a request on ``version`` (after the first ``since`` answers)."""
        return {n % 2 for n, code, body in answers[since:] if code == 200 and body.get("bundle_version") == version}

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: served(old) == {0, 1} or bool(errors), "both replicas to answer on the old bundle")
        accepted = httpx.post(apis[0] + "/admin/reindex", headers=KEY, json={"catalogue": str(new_catalogue)})
        assert accepted.status_code == 202
        job = wait_job(apis[0], accepted.json()["job_id"])
        assert job["state"] == "succeeded", job
        assert job["version"] != old
        wait_until(lambda: all(bundle_version(u) == job["version"] for u in apis), "every replica to swap", 30)
        swapped = len(answers)
        # keep posting until both replicas have answered on the new bundle after their swap
        wait_until(lambda: served(job["version"], swapped) == {0, 1} or bool(errors), "answers on the new bundle")
    finally:
        stop.set()
        for t in threads:
            t.join(30)

    assert errors == [] and answers
    assert [code for _, code, _ in answers if code != 200] == []
    store = BundleStore(bundles_dir)
    items = {v: set(store.open(v).keys_by_id) for v in (old, job["version"])}
    versions: dict[int, list[str]] = {}
    for n, _, body in answers:
        version = body["bundle_version"]
        assert version in items
        ids = {p["item"]["id"] for p in body["parts"] if p["item"]}
        assert ids <= items[version], "a response mixed two bundles"
        versions.setdefault(n, []).append(version)
    # each client's answers, in order: the old bundle, then the new one, never back
    for n, seen in versions.items():
        assert seen == sorted(seen, key=lambda v: v == job["version"]), f"client {n} went back to the old bundle"
    assert served(old) == served(job["version"]) == {0, 1}, "each replica served both bundles, one after the other"


def test_redis_dying_does_not_stop_recommendations(
    tmp_path: Path, tiny_checkpoint: Path, bundles_dir: Path, redis_server: RedisServer, processes: Processes
) -> None:
    env = service_env(tiny_checkpoint, bundles_dir, redis_server.url)
    api = processes.api(env, tmp_path / "api.log")
    processes.start(["-m", "app.worker"], env, tmp_path / "worker.log")
    photo = {"image": ("x.jpg", photo_bytes(), "image/jpeg")}
    assert httpx.post(api + "/recommend", files=photo).status_code == 200

    redis_server.stop()

    def coordination() -> str:
        ready = httpx.get(api + "/readyz", timeout=10)
        assert ready.status_code == 200  # ready to serve, with or without redis
        return str(ready.json()["coordination"])

    wait_until(lambda: coordination() == "redis-unavailable", "readyz to report redis down", 20)
    for _ in range(5):  # redis is down (and known to be): recommendations still work
        assert httpx.post(api + "/recommend", files=photo, timeout=30).status_code == 200
    refused = httpx.post(api + "/admin/reindex", headers=KEY, timeout=10)
    assert refused.status_code == 503 and refused.json()["code"] == "coordination_unavailable"

    redis_server.start()  # same port: coordination resumes by itself
    wait_until(lambda: coordination() == "redis", "coordination to resume", 30)
    catalogue = make_catalogue(tmp_path / "again", count=5, prefix="r")
    accepted = httpx.post(api + "/admin/reindex", headers=KEY, json={"catalogue": str(catalogue)}, timeout=10)
    assert accepted.status_code == 202
    job = wait_job(api, accepted.json()["job_id"])
    assert job["state"] == "succeeded", job
    wait_until(lambda: bundle_version(api) == job["version"], "the new bundle to be served", 30)
