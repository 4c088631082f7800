"""The service on Ray Serve (app.serve), on a local 2-CPU Ray as a user without a cluster would start
it: the same answers, errors and OpenAPI document as the app uvicorn serves, a reindex under load
reaching both of two replicas with no failed or mixed request, and a replica killed under load
costing no request (the relaying ingress sends its requests to the other replica)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from indexer.bundle import BundleStore
from tests.app.conftest import ADMIN_KEY, photo_bytes
from tests.app.live import KEY, wait_job, wait_until
from tests.conftest import RedisServer, free_port
from tests.helpers import make_catalogue

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

from app.relay import ATTEMPTS_HEADER  # noqa: E402
from app.serve import (  # noqa: E402
    APP_NAME,
    DEPLOYMENT,
    REPLICA_HEADER,
    ServeSettingsError,
    build,
    deploy,
    http_targets,
)


@pytest.fixture(scope="module")
def serve_url() -> Iterator[str]:
    """Serve's HTTP proxy on a local Ray of 2 CPUs, for the module's tests (each deploys its app)."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", object_store_memory=100 * 1024**2)
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture
def deployed(serve_url: str) -> Iterator[Any]:
    """Deploys settings as the application; deleted after the test."""

    def run(settings: Settings) -> str:
        deploy(settings, name=APP_NAME)
        return serve_url

    yield run
    serve.delete(APP_NAME)


def on_serve(settings: Settings, **overrides: object) -> Settings:
    """The test's settings for replicas: half a CPU each, so two fit the 2-CPU Ray."""
    return Settings(**{**settings.model_dump(), "serve_num_cpus": 0.5, **overrides})


def comparable(response: httpx.Response) -> tuple[int, Any]:
    """The status and the body, less what differs between any two answers (the stage timings)."""
    if "json" not in response.headers.get("content-type", ""):
        return response.status_code, response.text
    body = response.json()
    if isinstance(body, dict):
        body.pop("timings_ms", None)
    return response.status_code, body


def assert_close(ours: Any, theirs: Any, path: str = "") -> None:
    """Equal but for floats, which may move in their last digits in a batch of another size (and
    cross a rounding step: boxes are rounded to 0.1 px, scores to 1e-4)."""
    if isinstance(ours, float) or isinstance(theirs, float):
        assert ours == pytest.approx(theirs, abs=0.11 if abs(theirs) > 1 else 2e-3), path
    elif isinstance(ours, dict) and isinstance(theirs, dict):
        assert ours.keys() == theirs.keys(), path
        for key in ours:
            assert_close(ours[key], theirs[key], f"{path}.{key}")
    elif isinstance(ours, list | tuple) and isinstance(theirs, list | tuple):
        assert len(ours) == len(theirs), path
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_close(a, b, f"{path}[{i}]")
    else:
        assert ours == theirs, path


@pytest.mark.parametrize("batching", ["micro-batcher", "serve"])
def test_the_serve_app_answers_as_the_uvicorn_app(settings: Settings, deployed: Any, batching: str) -> None:
    """With either batcher in the replica (FASHION_SERVE_BATCHING): the same answers one at a time, and
    when sent together (so they share batches), each photo's own answer, a broken photo failing alone."""
    settings = on_serve(settings, serve_batching=batching, max_wait_ms=50)
    url = deployed(settings)
    # where requests enter, as the command logs it: here Serve's proxy (no direct ingress); the
    # controller lists a proxy once it is healthy, which may take a moment on a busy machine
    deadline = time.monotonic() + 60
    while not (targets := http_targets(APP_NAME)) and time.monotonic() < deadline:
        time.sleep(1)
    assert [target.rsplit(":", 1)[1] for target in targets] == [url.rsplit(":", 1)[1]]
    truncated = photo_bytes()[:300]
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/healthz", {}),
        ("GET", "/readyz", {}),
        ("GET", "/openapi.json", {}),
        ("GET", "/no-such-page", {}),
        ("GET", "/admin/jobs/no-such-job", {}),
        ("GET", "/admin/jobs/no-such-job", {"headers": KEY}),
        ("POST", "/recommend", {}),  # no photo
        ("POST", "/recommend", {"files": {"image": ("a.txt", b"hello", "text/plain")}}),
        ("POST", "/recommend", {"files": {"image": ("t.jpg", truncated, "image/jpeg")}}),
        ("POST", "/recommend", {"files": {"image": ("big.jpg", b"\xff" * 2_100_000, "image/jpeg")}}),
        (
            "POST",
            "/recommend",
            {"files": {"image": ("p.jpg", photo_bytes(), "image/jpeg")}, "params": {"max_parts": 0}},
        ),
    ]
    for colour, fmt in (("red", "JPEG"), ("green", "PNG"), ("blue", "WEBP")):
        photo = {"image": ("p", photo_bytes(fmt, colour=colour), f"image/{fmt.lower()}")}
        for params in ({}, {"max_parts": 2}, {"mode": "global"}, {"labels": ["red", "blue"], "exclude": ["p0"]}):
            requests.append(("POST", "/recommend", {"files": photo, "params": params}))

    with TestClient(create_app(settings)) as local, httpx.Client(base_url=url, timeout=60) as remote:
        for method, path, kwargs in requests:
            ours, theirs = remote.request(method, path, **kwargs), local.request(method, path, **kwargs)
            assert comparable(ours) == comparable(theirs), (method, path, kwargs.get("params"))
            assert ours.headers.get(REPLICA_HEADER)  # answered by a replica, through the relaying ingress
        statuses = [remote.request(m, p, **k).status_code for m, p, k in requests]
        expected = [comparable(local.request(m, p, **k)) for m, p, k in requests]

    def send(request: tuple[str, str, dict[str, Any]]) -> tuple[int, Any]:
        method, path, kwargs = request
        with httpx.Client(base_url=url, timeout=60) as client:
            return comparable(client.request(method, path, **kwargs))

    from concurrent.futures import ThreadPoolExecutor

    def forwards() -> tuple[float, float]:
        """(forwards, photos through them) so far, from the replica's own metrics."""
        text = httpx.get(url + "/metrics", timeout=30).text
        values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("fashion_batch_size_"))
        return float(values["fashion_batch_size_count"]), float(values["fashion_batch_size_sum"])

    before = forwards()
    with ThreadPoolExecutor(8) as pool:  # together: a 50 ms wait lets them share forwards
        assert_close(list(pool.map(send, requests)), expected)
    after = forwards()
    assert after[1] - before[1] > after[0] - before[0]  # some forward took more than one photo
    assert {200, 401, 404, 413, 415, 422} <= set(statuses)  # the errors are the app's own, not Serve's


def test_several_replicas_need_redis(settings: Settings) -> None:
    with pytest.raises(ServeSettingsError, match="FASHION_REDIS_URL"):
        build(on_serve(settings, serve_num_replicas=2))
    with pytest.raises(ServeSettingsError):
        build(on_serve(settings, serve_autoscaling_max=3))


def test_a_reindex_under_load_reaches_both_replicas_with_no_failed_or_mixed_request(
    tmp_path: Path, settings: Settings, redis_server: RedisServer, deployed: Any
) -> None:
    url = deployed(on_serve(settings, serve_num_replicas=2, redis_url=redis_server.url))
    status = serve.status().applications[APP_NAME].deployments["FashionService"]
    assert status.replica_states.get("RUNNING") == 2, status
    old = httpx.get(url + "/readyz", timeout=30).json()["bundle_version"]
    new_catalogue = make_catalogue(tmp_path / "new", count=10, prefix="n")  # new ids: a mix would show

    # (replica, status, body, when the request was sent); list.append is atomic
    answers: list[tuple[str, int, dict[str, Any], float]] = []
    errors: list[str] = []
    stop = threading.Event()

    def client(n: int) -> None:
        data = photo_bytes(colour=("red", "green", "blue")[n % 3])
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    r = http.post(url + "/recommend", files={"image": ("x.jpg", data, "image/jpeg")})
                    answers.append((r.headers.get(REPLICA_HEADER, "?"), r.status_code, r.json(), sent))
                except (httpx.HTTPError, ValueError) as exc:
                    errors.append(repr(exc))

    def replicas(version: str, since: int = 0) -> set[str]:
        """The replicas that answered on ``version`` (after the first ``since`` answers)."""
        return {who for who, code, body, _ in answers[since:] if code == 200 and body.get("bundle_version") == version}

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(replicas(old)) == 2 or bool(errors), "both replicas to answer on the old bundle", 120)
        accepted = httpx.post(
            url + "/admin/reindex", headers={"X-API-Key": ADMIN_KEY}, json={"catalogue": str(new_catalogue)}
        )
        assert accepted.status_code == 202, accepted.text
        job = wait_job(url, accepted.json()["job_id"], timeout=180)  # any replica reads it: the job is in Redis
        assert job["state"] == "succeeded", job
        new = job["version"]
        assert new != old
        swapped = len(answers)
        # a replica answers on the new bundle within a poll of the pointer at most (the announcement is at once)
        wait_until(lambda: len(replicas(new, swapped)) == 2 or bool(errors), "both replicas to answer on the new", 60)
        both_swapped = time.monotonic()  # each replica has answered on the new bundle: it swapped before
        wait_until(lambda: sum(a[3] > both_swapped for a in answers) >= 8 or bool(errors), "answers after the swap")
    finally:
        stop.set()
        for t in threads:
            t.join(60)

    assert errors == [] and answers
    assert [code for _, code, _, _ in answers if code != 200] == []
    store = BundleStore(settings.bundles_dir)
    items = {v: set(store.open(v).keys_by_id) for v in (old, new)}
    for _, _, body, _ in answers:
        ids = {p["item"]["id"] for p in body["parts"] if p["item"]}
        assert ids <= items[body["bundle_version"]], "an answer mixed two bundles"
    assert {who for who, _, _, _ in answers} == replicas(old) | replicas(new) and len(replicas(new)) == 2
    after = [body["bundle_version"] for _, _, body, sent in answers if sent > both_swapped]
    assert after and set(after) == {new}, "a request sent after both replicas swapped was answered on the old bundle"


def test_a_replica_killed_under_load_costs_no_request(
    settings: Settings, redis_server: RedisServer, deployed: Any
) -> None:
    # Every request goes to the model (no cached answers) and waits there a while for company, so a
    # replica under these clients always holds some when it is killed.
    slow = {"cache_ttl_s": 0, "max_wait_ms": 250.0}
    url = deployed(on_serve(settings, serve_num_replicas=2, redis_url=redis_server.url, **slow))
    answers: list[tuple[str, int, int]] = []  # (replica, status, attempts); list.append is atomic
    errors: list[str] = []
    stop = threading.Event()

    def client(n: int) -> None:
        data = photo_bytes(colour=("red", "green", "blue")[n % 3])
        with httpx.Client(timeout=120) as http:
            while not stop.is_set():
                try:
                    r = http.post(url + "/recommend", files={"image": ("x.jpg", data, "image/jpeg")})
                    answers.append(
                        (r.headers.get(REPLICA_HEADER, "?"), r.status_code, int(r.headers.get(ATTEMPTS_HEADER, 1)))
                    )
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))

    def answered_by() -> set[str]:
        return {who for who, code, _ in answers if code == 200}

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(answered_by()) == 2 or bool(errors), "both replicas to answer", 120)
        first = set(answered_by())
        victim = sorted(first)[0]
        actor = next(a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].endswith(f"#{victim}"))
        assert f"#{DEPLOYMENT}#" in actor["name"]
        # the process dies at once, with its requests
        ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
        # Serve starts a replica in its place; the requests go on meanwhile
        wait_until(lambda: bool(answered_by() - first) or bool(errors), "a new replica to answer", 180)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert errors == []
    assert [(who, code) for who, code, _ in answers if code != 200] == []
    # Which requests the kill caught is a race: most runs see some answered on a second attempt
    # (X-Serve-Attempts), not every one; the relay's retry itself is tested in tests/app/test_relay.py.
    assert {who for who, _, _ in answers} - first, "the new replica never answered"


def test_the_command_names_the_engine_and_the_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    import app.__main__ as command
    import app.serve

    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(app.serve, "run", lambda *args: calls.append(args))
    monkeypatch.setattr(command, "configure_logging", lambda: None)
    command.main(["--engine", "ray-serve", "--address", "auto", "--host", "0.0.0.0", "--port", "9000"])
    app.serve.main(["--port", "9001", "--proxy-location", "HeadOnly", "--detach"])
    assert [call[1:] for call in calls] == [
        ("auto", "0.0.0.0", 9000, "EveryNode", False),
        (None, "127.0.0.1", 9001, "HeadOnly", True),
    ]
