"""The compose stack as a newcomer meets it, measured into reports/compose.json.

    .venv/bin/python bench/compose.py --catalogue ../shared/data/fashion-product --photo PHOTO [--rebuild]

1. **One command.** From a clean start (the stack and its volumes removed, ``.env`` moved aside to
   ``.env.before-bench``; with ``--rebuild`` the image, the offline base image and docker's build
   cache removed too, as on a fresh machine), ``bash docker/up.sh`` is timed
   while a client posts the photo every second: seconds to the first ``/recommend`` 200, how much of
   it was the image build (as up.sh reports it), and seconds until the whole catalogue is live (the
   bundle complete, with no admin call).
2. **A worker restarted, then killed, mid-reindex.** For each disruption, ``POST /admin/reindex``;
   once the job has embedded ``--at`` of the catalogue, ``compose restart worker`` (SIGTERM, the job
   handed back), or SIGKILL of the worker's process from the host (the container restarts by its
   policy). Meanwhile a client posts the photo ``--rate`` times a second. Recorded: the job's end
   (state, attempts, why it was re-queued), no resubmission, the answers by status, the bundle
   versions published during the job and the swaps the answers show.
3. **The smoke test** with compose v2 (``docker compose``) and v1 (``docker-compose``), whichever
   exist (one that does not is recorded as such).

Needs docker, and root for the kill (a container's PID 1 is killed from the host: inside, it
ignores SIGKILL). It replaces the default stack of this checkout: run it where nothing else uses it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = 'from indexer.bundle import BundleStore; s = BundleStore("/data/bundles"); b = s.open()'


def compose(*args: str, check: bool = True, capture: bool = True) -> str:
    done = subprocess.run(
        ["bash", "docker/compose.sh", *args], cwd=ROOT, check=check, text=True, capture_output=capture
    )
    return done.stdout if capture else ""


def in_api(code: str) -> str:
    return compose("exec", "-T", "api", "python", "-c", code).strip()


def env_file() -> dict[str, str]:
    path = ROOT / ".env"
    rows = [line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#")]
    return {key: value for key, value in rows}


class Client:
    """Posts the photo ``rate`` times a second in a thread; keeps (time, status, bundle version or error)."""

    def __init__(self, url: str, photo: Path, rate: float) -> None:
        self.url, self.data, self.period = url, photo.read_bytes(), 1.0 / rate
        self.answers: list[tuple[float, int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Client:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as http:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    r = http.post(self.url + "/recommend", files={"image": ("photo.jpg", self.data, "image/jpeg")})
                    version = r.json().get("bundle_version", "") if r.status_code == 200 else r.text[:200]
                    self.answers.append((time.time(), r.status_code, version))
                except httpx.HTTPError as exc:
                    self.answers.append((time.time(), 0, type(exc).__name__))
                self._stop.wait(max(0.0, self.period - (time.monotonic() - started)))

    def summary(self, since: float = 0.0) -> dict[str, Any]:
        answers = [a for a in self.answers if a[0] >= since]
        by_status: dict[str, int] = {}
        for _, status, _ in answers:
            by_status[str(status or "connection error")] = by_status.get(str(status or "connection error"), 0) + 1
        versions = [v for _, status, v in answers if status == 200]
        swaps = sum(1 for a, b in zip(versions, versions[1:], strict=False) if a != b)
        return {
            "requests": len(answers),
            "by_status": by_status,
            "swaps_seen": swaps,
            "versions_seen": sorted(set(versions)),
        }


def one_command(args: argparse.Namespace) -> dict[str, Any]:
    compose("down", "-v", check=False)
    if (ROOT / ".env").exists():
        shutil.move(ROOT / ".env", ROOT / ".env.before-bench")
    if args.rebuild:  # as on a fresh machine: no image, no offline base, no build cache
        images = [os.environ.get("FASHION_IMAGE", "fashion-parts:cpu"), "fashion-base:bookworm"]
        subprocess.run(["docker", "image", "rm", "-f", *images], check=False)
        subprocess.run(["docker", "builder", "prune", "-af"], check=False, capture_output=True)
    env = {**os.environ, "PORT": str(args.port), "CATALOGUE_DIR": str(args.catalogue.resolve())}
    url = f"http://127.0.0.1:{args.port}"
    started = time.monotonic()
    log = args.out.with_name("compose-up.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:  # the build's output may be long: a file, not a pipe
        up = subprocess.Popen(["bash", "docker/up.sh"], cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
        first_200 = None
        data = args.photo.read_bytes()
        while first_200 is None:
            try:
                r = httpx.post(url + "/recommend", files={"image": ("photo.jpg", data, "image/jpeg")}, timeout=30)
                if r.status_code == 200:
                    first_200 = time.monotonic() - started
            except httpx.HTTPError:
                pass
            if up.poll() not in (None, 0):
                raise SystemExit(f"docker/up.sh failed: see {log}")
            time.sleep(1)
        up.wait(args.timeout)
    output = log.read_text()
    build = re.search(r"of which the image build: (\d+) s", output)
    first_bundle = json.loads(
        in_api(f"{BUNDLE}; import json; print(json.dumps([b.version, len(b.items), b.complete]))")
    )
    deadline = time.monotonic() + args.timeout
    while in_api(f"{BUNDLE}; print(b.complete)") != "True":
        assert time.monotonic() < deadline, "the catalogue did not become whole"
        time.sleep(5)
    whole = in_api(f"{BUNDLE}; print(b.version)")
    while httpx.get(url + "/readyz", timeout=10).json().get("bundle_version") != whole:
        time.sleep(1)
    return {
        "command": "bash docker/up.sh (make up)",
        "image_rebuilt": args.rebuild,
        "first_recommend_200_s": round(first_200, 1),
        "image_build_s": int(build.group(1)) if build else None,
        "whole_catalogue_live_s": round(time.monotonic() - started, 1),
        "first_bundle": {"version": first_bundle[0], "items": first_bundle[1], "complete": first_bundle[2]},
        "whole_bundle": {"version": whole, "items": int(in_api(f"{BUNDLE}; print(len(b.items))"))},
        "up_output": output.splitlines()[-8:],
    }


def disrupted_reindex(args: argparse.Namespace, how: str) -> dict[str, Any]:
    url, key = f"http://127.0.0.1:{args.port}", {"X-API-Key": env_file()["FASHION_ADMIN_API_KEY"]}
    before = json.loads(in_api(f"{BUNDLE}; import json; print(json.dumps(s.versions()))"))
    with Client(url, args.photo, args.rate) as client:
        started = time.time()
        job_id = httpx.post(url + "/admin/reindex", headers=key, timeout=30).json()["job_id"]
        while True:
            job = httpx.get(f"{url}/admin/jobs/{job_id}", headers=key, timeout=30).json()
            done, total = job["progress"].get("done", 0), job["progress"].get("total", 0)
            if total and done >= args.at * total:
                break
            assert job["state"] in ("queued", "running"), job
            time.sleep(0.5)
        worker = compose("ps", "-q", "worker").strip()
        restarts = _inspect(worker, "{{.RestartCount}}")
        disrupted_at = {"seconds": round(time.time() - started, 1), "progress": job["progress"]}
        if how == "restart":
            compose("restart", "worker")
        else:
            os.kill(int(_inspect(worker, "{{.State.Pid}}")), signal.SIGKILL)  # the policy restarts it
        deadline = time.monotonic() + args.timeout
        while job["state"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, job
            time.sleep(1)
            job = httpx.get(f"{url}/admin/jobs/{job_id}", headers=key, timeout=30).json()
        while (
            job["state"] == "succeeded"
            and httpx.get(url + "/readyz", timeout=10).json().get("bundle_version") != job["version"]
        ):
            time.sleep(1)
        time.sleep(3)  # answers on the new bundle
    after = json.loads(in_api(f"{BUNDLE}; import json; print(json.dumps(s.versions()))"))
    return {
        "disruption": "compose restart worker" if how == "restart" else "kill -9 of the worker's process (host)",
        "disrupted_at": disrupted_at,
        "worker_restart_count": {"before": int(restarts), "after": int(_inspect(worker, "{{.RestartCount}}"))},
        "job": {k: job.get(k) for k in ("id", "state", "attempts", "requeued", "error", "version")},
        "job_seconds": round(time.time() - started, 1),
        "resubmitted": False,  # one POST /admin/reindex above, and no other
        "published_during_job": sorted(set(after) - set(before)),
        "answers": client.summary(started),
    }


def _inspect(container: str, template: str) -> str:
    return subprocess.run(
        ["docker", "inspect", "-f", template, container], check=True, text=True, capture_output=True
    ).stdout.strip()


def smoke_tests(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for name, probe in (("v2", ["docker", "compose", "version"]), ("v1", ["docker-compose", "version"])):
        found = subprocess.run(probe, capture_output=True, text=True, check=False) if shutil.which(probe[0]) else None
        if found is None or found.returncode != 0:
            results.append({"compose": name, "available": False})
            continue
        started = time.monotonic()
        run = subprocess.run(
            ["bash", "docker/smoke-test.sh", str(args.catalogue), str(args.photo)],
            cwd=ROOT,
            env={**os.environ, "COMPOSE": " ".join(probe[:-1])},
            capture_output=True,
            text=True,
            check=False,
            timeout=args.timeout * 3,
        )
        results.append(
            {
                "compose": name,
                "available": True,
                "version": found.stdout.strip().splitlines()[0],
                "passed": run.returncode == 0,
                "seconds": round(time.monotonic() - started, 1),
                "tail": (run.stdout + run.stderr).splitlines()[-15:],
            }
        )
    return results


def machine() -> dict[str, Any]:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    docker = subprocess.run(
        ["docker", "version", "-f", "{{.Server.Version}}"], capture_output=True, text=True, check=False
    )
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "docker": docker.stdout.strip()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalogue", type=Path, required=True)
    parser.add_argument("--photo", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--rate", type=float, default=1.0, help="photos a second during the reindexes")
    parser.add_argument("--at", type=float, default=0.3, help="share of the catalogue embedded at the disruption")
    parser.add_argument("--rebuild", action="store_true", help="remove the image first: the build is timed too")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "compose.json")
    args = parser.parse_args()
    report: dict[str, Any] = {"machine": machine()}
    report["one_command"] = one_command(args)
    report["reindex_under_worker_restart"] = disrupted_reindex(args, "restart")
    report["reindex_under_worker_kill"] = disrupted_reindex(args, "kill")
    compose("down", check=False)  # the smoke tests run alone
    report["smoke_tests"] = smoke_tests(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
