"""The service against a real redis-server, over real HTTP: two API processes and an indexer worker."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from indexer.bundle import BundleStore
from tests.app.conftest import photo_bytes
from tests.app.live import KEY, Processes, bundle_version, service_env, wait_job, wait_until
from tests.conftest import RedisServer
from tests.helpers import make_catalogue


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
    catalogue = make_catalogue(tmp_path / "again", count=12, prefix="r")
    accepted = httpx.post(api + "/admin/reindex", headers=KEY, json={"catalogue": str(catalogue)}, timeout=10)
    assert accepted.status_code == 202
    job = wait_job(api, accepted.json()["job_id"])
    assert job["state"] == "succeeded", job
    wait_until(lambda: bundle_version(api) == job["version"], "the new bundle to be served", 30)


def test_a_silent_job_is_settled_once_and_a_finished_one_never(redis_server: RedisServer) -> None:
    import asyncio

    from app.coordination import RedisCoordinator
    from app.schemas import Job, JobKind

    async def scenario() -> None:
        coordinator = RedisCoordinator(redis_server.url)
        try:
            silent, finished = Job.new(JobKind.REINDEX, {}), Job.new(JobKind.REINDEX, {})
            silent.state, finished.state = "running", "succeeded"  # running with no lease: its worker is gone
            silent.attempts = 3
            for job in (silent, finished):
                await coordinator.save_job(job)
            settled = await coordinator.settle_job(silent.id, max_attempts=3)
            assert settled is not None and settled.state == "failed"
            stored = await coordinator.get_job(silent.id)
            assert stored is not None and stored.state == "failed" and "stopped renewing" in (stored.error or "")
            assert (await coordinator.settle_job(silent.id, max_attempts=3)) == stored  # settled once
            kept = await coordinator.settle_job(finished.id, max_attempts=3)
            assert kept is not None and kept.state == "succeeded"
            assert await coordinator.settle_job("no-such-job", max_attempts=3) is None
        finally:
            await coordinator.close()

    asyncio.run(scenario())


def test_compose_redis_keeps_a_queued_job_through_its_restart(tmp_path: Path) -> None:
    """The stack's redis, run with docker-compose.yml's own options: a job accepted (202) but not
    yet claimed is still queued after redis is killed and started again."""
    import asyncio
    import time

    import yaml

    from app.coordination import make_coordinator
    from app.schemas import Job, JobKind

    compose = yaml.safe_load((Path(__file__).parents[2] / "docker-compose.yml").read_text())
    command = compose["services"]["redis"]["command"]
    assert command[0] == "redis-server" and "/data" in compose["services"]["redis"]["volumes"][0]
    server = RedisServer(tmp_path, command[1:])
    server.start()

    async def queue(job: Job | None) -> Job | None:
        coordinator = make_coordinator(server.url)
        try:
            if job is not None:
                await coordinator.enqueue(job)
                return None
            return await coordinator.claim_job("worker-1", timeout_s=1, lease_s=30)
        finally:
            await coordinator.close()

    try:
        job = Job.new(JobKind.DELETE, {"ids": ["p1"]})
        asyncio.run(queue(job))
        time.sleep(1.5)  # the append-only file is fsync'd every second
        server.stop()  # killed, as a crash or an OOM kill would
        server.start()
        claimed = asyncio.run(queue(None))
        assert claimed is not None and claimed.id == job.id
    finally:
        server.stop()
