"""Soak: mixed traffic for a long while against the real stack (redis-server, the API, a worker).

    python bench/soak.py --minutes 30 --out reports/soak.json

Clients post CCP test photos to /recommend at moderate concurrency; every ``--reindex-every``
minutes a reindex job rebuilds the bundle from one of two catalogue slices of the same size (each
swap is a real hot swap under load); about one request in 50 is a bad upload (bytes that are not a
photo), which must get a 4xx. Reports request counts by status, transport errors, latency per
minute, every answer checked (a 200 names a published bundle and distinct items), the jobs, and the
RSS of the API and the worker over time.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.data import ClothingCoParsing, data_dir  # noqa: E402
from tests.conftest import RedisServer, free_port  # noqa: E402  (a real redis-server, as the tests start it)

ADMIN_KEY = "soak-admin-key"
BAD_UPLOAD = b"\xff\xd8\xff\xe0 this is not really a JPEG " * 20


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def catalogue_slice(source: Path, target: Path, ids: list[str]) -> Path:
    """A catalogue folder of ``ids``: their rows of styles.csv and links to their photos."""
    (target / "images").mkdir(parents=True)
    with open(source / "styles.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [row for row in reader if row["id"] in set(ids)]
        fields = reader.fieldnames or []
    with open(target / "styles.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    for row in rows:
        (target / "images" / f"{row['id']}.jpg").symlink_to(source / "images" / f"{row['id']}.jpg")
    return target


class Traffic:
    """Client threads; every outcome is recorded with the minute it ended in."""

    def __init__(self, url: str, photos: list[bytes], clients: int, pause_s: float, started: float) -> None:
        self.url, self.photos, self.clients, self.pause_s, self.started = url, photos, clients, pause_s, started
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.status: Counter[str] = Counter()
        self.latency_by_minute: dict[int, list[float]] = defaultdict(list)
        self.transport_errors: list[str] = []
        self.wrong_answers: list[str] = []
        self.versions_seen: set[str] = set()

    def run(self, n: int) -> None:
        rng = np.random.default_rng(n)
        with httpx.Client(timeout=60) as http:
            while not self.stop.is_set():
                bad = rng.random() < 0.02
                data = BAD_UPLOAD if bad else self.photos[int(rng.integers(len(self.photos)))]
                sent = time.perf_counter()
                try:
                    r = http.post(self.url + "/recommend", files={"image": ("p.jpg", data, "image/jpeg")})
                except httpx.TransportError as exc:
                    with self.lock:
                        self.transport_errors.append(type(exc).__name__)
                    continue
                elapsed = time.perf_counter() - sent
                self.record(bad, r, elapsed)
                time.sleep(self.pause_s)

    def record(self, bad: bool, r: httpx.Response, elapsed: float) -> None:
        kind = "bad_upload" if bad else "photo"
        problem = None
        if bad and not 400 <= r.status_code < 500:
            problem = f"bad upload answered {r.status_code}"
        if not bad and r.status_code == 200:
            body = r.json()
            items = [p["item"]["id"] for p in body["parts"] if p["item"]]
            if not items or len(items) != len(set(items)):
                problem = f"answer without distinct items: {items}"
        elif not bad:
            problem = f"photo answered {r.status_code}: {r.text[:200]}"
        with self.lock:
            self.status[f"{kind} {r.status_code}"] += 1
            if not bad and r.status_code == 200:
                self.latency_by_minute[int((time.monotonic() - self.started) // 60)].append(elapsed)
                self.versions_seen.add(r.json()["bundle_version"])
            if problem:
                self.wrong_answers.append(problem)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "weights" / "ccp-attention.pt")
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--reindex-every", type=float, default=5, help="minutes between reindex jobs")
    parser.add_argument("--slice", type=int, default=600, help="products in each catalogue slice")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--pause", type=float, default=0.25, help="seconds each client waits between requests")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "soak.json")
    args = parser.parse_args()

    data = data_dir()
    _, test = ClothingCoParsing(data / "ccp").split()
    photos = [s.image.read_bytes() for s in test[:200]]
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    ids = sorted(p.stem for p in (data / "fashion-product" / "images").glob("*.jpg"))
    chosen = np.random.default_rng(0).choice(len(ids), 2 * args.slice, replace=False)
    slices = [
        catalogue_slice(data / "fashion-product", work / name, [ids[i] for i in part])
        for name, part in (("slice-a", chosen[: args.slice]), ("slice-b", chosen[args.slice :]))
    ]
    (work / "redis").mkdir()
    redis = RedisServer(work / "redis")
    redis.start()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FASHION_CHECKPOINT": str(args.checkpoint),
        "FASHION_BUNDLES_DIR": str(work / "bundles"),
        "FASHION_UPLOADS_DIR": str(work / "uploads"),
        "FASHION_CATALOGUE": str(slices[0]),
        "FASHION_CATALOGUE_ROOTS": json.dumps([str(work), str(data / "fashion-product")]),
        "FASHION_REDIS_URL": redis.url,
        "FASHION_EMBEDDED_WORKER": "false",
        "FASHION_ADMIN_API_KEY": ADMIN_KEY,
        "FASHION_CACHE_TTL_S": "0",  # every request reaches the model
        "FASHION_FIRST_SLICE": "0",
    }
    subprocess.run([sys.executable, "-m", "app.bootstrap"], env=env, cwd=ROOT, check=True)  # the first bundle
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    logs = {name: open(work / f"{name}.log", "wb") for name in ("api", "worker")}  # noqa: SIM115
    api = subprocess.Popen([sys.executable, "-m", "app", "--port", str(port)], env=env, cwd=ROOT, **_to(logs["api"]))
    worker = subprocess.Popen([sys.executable, "-m", "app.worker"], env=env, cwd=ROOT, **_to(logs["worker"]))
    try:
        _wait_ready(url)
        report = soak(url, photos, slices, api.pid, worker.pid, args)
    finally:
        for process in (api, worker):
            process.terminate()
            process.wait(30)
        redis.stop()
    report["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "latency_by_minute"}, indent=2))
    shutil.rmtree(work, ignore_errors=True)


def _to(handle: object) -> dict[str, object]:
    return {"stdout": handle, "stderr": subprocess.STDOUT}


def _wait_ready(url: str) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("the API did not become ready")


def soak(
    url: str, photos: list[bytes], slices: list[Path], api_pid: int, worker_pid: int, args: argparse.Namespace
) -> dict[str, object]:
    started = time.monotonic()
    traffic = Traffic(url, photos, args.clients, args.pause, started)
    threads = [threading.Thread(target=traffic.run, args=(n,), daemon=True) for n in range(args.clients)]
    for thread in threads:
        thread.start()
    rss: list[dict[str, float]] = []
    jobs: list[dict[str, object]] = []
    pending: str | None = None
    next_reindex = args.reindex_every * 60
    headers = {"X-API-Key": ADMIN_KEY}
    with httpx.Client(timeout=30) as admin:
        while (elapsed := time.monotonic() - started) < args.minutes * 60:
            if not rss or elapsed - rss[-1]["t_s"] >= 30:
                rss.append({"t_s": round(elapsed), "api_mb": rss_mb(api_pid), "worker_mb": rss_mb(worker_pid)})
            if pending:
                job = admin.get(f"{url}/admin/jobs/{pending}", headers=headers).json()
                if job["state"] in ("succeeded", "failed"):
                    jobs.append({k: job[k] for k in ("state", "version", "error", "created", "updated")})
                    pending = None
            elif elapsed >= next_reindex:
                catalogue = slices[len(jobs) % 2 == 0]  # alternate: slice b, slice a, ...
                accepted = admin.post(f"{url}/admin/reindex", headers=headers, json={"catalogue": str(catalogue)})
                pending = accepted.json()["job_id"]
                next_reindex += args.reindex_every * 60
            time.sleep(1)
    traffic.stop.set()
    for thread in threads:
        thread.join(90)
    minutes = {
        minute: {
            "requests": len(values),
            "p50_ms": round(1000 * float(np.percentile(values, 50)), 1),
            "p99_ms": round(1000 * float(np.percentile(values, 99)), 1),
        }
        for minute, values in sorted(traffic.latency_by_minute.items())
    }
    at = {row["t_s"]: row for row in rss}
    five = min(at, key=lambda t: abs(t - 300))
    growth = (rss[-1]["api_mb"] - at[five]["api_mb"]) / at[five]["api_mb"]
    return {
        "minutes": args.minutes,
        "clients": args.clients,
        "requests_by_status": dict(sorted(traffic.status.items())),
        "server_errors": sum(n for k, n in traffic.status.items() if k.split()[1].startswith("5")),
        "transport_errors": len(traffic.transport_errors),
        "wrong_answers": traffic.wrong_answers[:20],
        "wrong_answer_count": len(traffic.wrong_answers),
        "jobs": jobs,
        "bundle_versions_served": len(traffic.versions_seen),
        "rss_mb": rss,
        "api_rss_growth_minute_5_to_end": round(growth, 4),
        "latency_by_minute": minutes,
    }


if __name__ == "__main__":
    main()
