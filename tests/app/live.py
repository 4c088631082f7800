"""Real processes for the tests: API (uvicorn) and worker started as a user would, and waits by polling."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.app.conftest import ADMIN_KEY
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
KEY = {"X-API-Key": ADMIN_KEY}


def service_env(checkpoint: Path, bundles: Path, redis_url: str | None) -> dict[str, str]:
    """The service's environment; ``redis_url`` None: the embedded default (no Redis, jobs in the API)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FASHION_CHECKPOINT": str(checkpoint),
        "FASHION_BUNDLES_DIR": str(bundles),
        "FASHION_UPLOADS_DIR": str(bundles.parent / "uploads"),  # never the working tree's
        "FASHION_ADMIN_API_KEY": ADMIN_KEY,
        "FASHION_PART_THRESHOLD": "0",
        "FASHION_ITEM_LABEL_THRESHOLD": "0",
        "FASHION_CACHE_TTL_S": "0",
        "FASHION_BUNDLE_POLL_S": "0.5",
        "FASHION_CATALOGUE_ROOTS": json.dumps([str(bundles.parent)]),  # the test's own folder
        "OMP_NUM_THREADS": "1",
    }
    if redis_url is not None:
        env.update(FASHION_REDIS_URL=redis_url, FASHION_EMBEDDED_WORKER="false")
    return env


class Processes:
    def __init__(self) -> None:
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        handle = open(log, "wb")  # noqa: SIM115 - lives as long as the process
        process = subprocess.Popen([sys.executable, *args], env=env, cwd=ROOT, stdout=handle, stderr=handle)
        self.running.append(process)
        return process

    def api(self, env: dict[str, str], log: Path, port: int | None = None) -> str:
        port = port or free_port()
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


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """``app`` on a free port, served by uvicorn in a thread of this process (so a test may reach into
    it while real HTTP requests arrive), until the block ends."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
