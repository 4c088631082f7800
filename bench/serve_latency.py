"""Service latency and throughput over real HTTP beside the model alone and the pipeline in-process.

    python bench/serve_latency.py --bundles bundles [--runtime openvino] [--profile docs/serve_flamegraph.svg]

All in one run, on one runtime (model.runtime):
1. the limit: the model's batched forward alone (batches of 16) on photos already decoded and
   letterboxed, and its forward of one photo;
2. in-process: the service's batch (decode + model + search), one photo at a time, and in
   batches of 16;
3. over HTTP: uvicorn serving the app, 1, 4 and 16 concurrent clients posting CCP test photos
   (cache off).
Reports p50/p99 latency, throughput, every ratio against the limit, the cores the API and the
clients kept busy at each level, what the API measured inside (its forward per photo, its mean
batch, the time a photo spent in decoding and in search), and the API's peak RSS; and the HTTP path
alone (answers from the response cache).
``--profile`` samples the API process with py-spy while one client posts photos, and writes the
flame graph.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.batching import BatchOptions  # noqa: E402
from app.metrics import Metrics  # noqa: E402
from app.recommender import PhotoJob, Recommender, RecommendOptions  # noqa: E402
from model.data import ClothingCoParsing, data_dir  # noqa: E402
from model.imaging import ImageLimits  # noqa: E402
from model.network import DEFAULT_PART_THRESHOLD  # noqa: E402
from model.runtime import DEFAULT_RUNTIME, RUNTIMES, Runtime  # noqa: E402

CLIENT_LEVELS = ((1, 40), (4, 20), (16, 20))  # (concurrent clients, photos each)


@contextlib.contextmanager
def serving(
    root: Path, env: dict[str, str], port: int, photos: list[bytes]
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``python -m app`` of the checkout at ``root`` (its own code first on the path), cache off,
    batches of 16, ``env`` on top; (its URL, the process) once ready and warmed up on ``photos``."""
    env = {**os.environ, "PYTHONPATH": str(root), "FASHION_CACHE_TTL_S": "0", "FASHION_MAX_BATCH": "16", **env}
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "--port", str(port)],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    if server.poll() is not None:  # another process answers on this port, not ours
                        raise SystemExit(f"port {port} is taken; the API in {root} exited")
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the API in {root} did not become ready")
            time.sleep(0.5)
        http_level(url, photos[:4], 1, 4)
        yield url, server
    finally:
        server.terminate()
        server.wait(30)


def percentiles(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(1000 * float(np.percentile(values, 50)), 1),
        "p99_ms": round(1000 * float(np.percentile(values, 99)), 1),
    }


def in_process(
    checkpoint: Path, bundles: Path, photos: list[bytes], batch: int, runtime: Runtime, device: str
) -> dict[str, Any]:
    metrics = Metrics()
    rec = Recommender.from_files(
        checkpoint,
        bundles,
        metrics,
        device,
        runtime=runtime,
        limits=ImageLimits(),
        threshold=DEFAULT_PART_THRESHOLD,
        batching=BatchOptions(max_batch=batch, max_wait_s=0.0, queue_limit=1000),
    )
    asyncio.run(rec.bundles.swap_to())
    bundle, options = rec.bundles.current, RecommendOptions()
    assert bundle is not None

    def pipeline(datas: list[bytes]) -> None:
        """The service's own batch: decoded side by side, one forward, searched side by side."""
        for answer in rec._answer_batch([PhotoJob(d, bundle, options) for d in datas]):
            if isinstance(answer, Exception):
                raise answer

    # The limit: the forward alone on photos already decoded (the first 160, in batches of `batch`),
    # the fastest of three passes: a slow pass on a noisy machine must not flatter the ratios.
    tensors = [rec.decode(d)[0][0] for d in photos[:160]]
    rec.forward(torch.stack(tensors[:batch]))  # warm-up
    passes = []
    for _ in range(3):
        started = time.perf_counter()
        for i in range(0, len(tensors), batch):
            rec.forward(torch.stack(tensors[i : i + batch]))
        passes.append(len(tensors) / (time.perf_counter() - started))
    model_batched = max(passes)
    model_single = []
    for tensor in tensors[:40]:
        started = time.perf_counter()
        rec.forward(tensor[None])
        model_single.append(time.perf_counter() - started)

    pipeline(photos[:2])  # warm-up
    single = []
    for data in photos[:40]:
        started = time.perf_counter()
        pipeline([data])
        single.append(time.perf_counter() - started)
    started = time.perf_counter()
    count = 0
    for i in range(0, 160, batch):
        chunk = [photos[(i + j) % len(photos)] for j in range(batch)]
        pipeline(chunk)
        count += len(chunk)
    batched = count / (time.perf_counter() - started)
    return {
        "model_alone_single": percentiles(model_single),
        "model_alone_batched_photos_per_s": round(model_batched, 2),
        "single": percentiles(single),
        "single_mean_ms": round(1000 * statistics.mean(single), 1),
        "batched_photos_per_s": round(batched, 2),
        "batch": batch,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def api_totals(url: str) -> dict[str, float]:
    """The API's own running totals from /metrics: seconds and calls per pipeline stage, photos and forwards."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name in ("fashion_stage_seconds_sum", "fashion_stage_seconds_count"):
                totals[f"{sample.labels['stage']}_{sample.name.rsplit('_', 1)[1]}"] = sample.value
            elif sample.name in ("fashion_batch_size_sum", "fashion_batch_size_count"):
                totals[sample.name.removeprefix("fashion_")] = sample.value
    return totals


def inside_api(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What the API measured between two api_totals: its forward per photo, its mean batch, the mean
    time of a photo's decode and search stages, and the mean time the app took over a request."""
    change = {name: after[name] - before.get(name, 0.0) for name in after}
    if not change.get("batch_size_count"):
        return {}  # every answer came from the response cache
    return {
        "api_forward_ms_per_photo": round(1000 * change["model_batch_sum"] / change["batch_size_sum"], 2),
        "api_mean_batch": round(change["batch_size_sum"] / change["batch_size_count"], 2),
        "api_decode_ms": round(1000 * change["decode_sum"] / change["decode_count"], 2),
        "api_search_ms": round(1000 * change["search_sum"] / change["search_count"], 2),
        # from the request's arrival in the app to its response: what the client sees beyond it is
        # the connection, uvicorn's parsing and writing, and the client itself
        "api_request_ms": round(1000 * change["request_sum"] / change["request_count"], 2),
    }


def http_level(
    url: str, photos: list[bytes], clients: int, requests_per_client: int, server_pid: int | None = None
) -> dict[str, object]:
    """``clients`` threads posting photos; with ``server_pid``, the cores the API and the clients
    (this process) kept busy meanwhile (on one machine the clients take CPU the API then lacks), and
    what the API measured inside (inside_api)."""
    latencies: list[float] = []
    failures: list[int] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        with httpx.Client(timeout=120) as http:
            for i in range(requests_per_client):
                data = photos[(n * requests_per_client + i) % len(photos)]
                started = time.perf_counter()
                r = http.post(url + "/recommend", files={"image": ("p.jpg", data, "image/jpeg")})
                elapsed = time.perf_counter() - started
                with lock:
                    (latencies.append(elapsed) if r.status_code == 200 else failures.append(r.status_code))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    own_cpu, api_cpu = cpu_seconds(os.getpid()), cpu_seconds(server_pid) if server_pid else 0.0
    totals = api_totals(url) if server_pid else {}
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    level: dict[str, object] = {
        "clients": clients,
        "requests": len(latencies) + len(failures),
        "failed": len(failures),
        **percentiles(latencies),
        "photos_per_s": round(len(latencies) / wall, 2),
    }
    if server_pid:
        level["cores_busy_api"] = round((cpu_seconds(server_pid) - api_cpu) / wall, 2)
        level["cores_busy_clients"] = round((cpu_seconds(os.getpid()) - own_cpu) / wall, 2)
        level.update(inside_api(totals, api_totals(url)))
    return level


def profile(pid: int, url: str, photos: list[bytes], out: Path) -> None:
    """py-spy samples the API (its Python threads, on CPU only) while one client posts photos."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # the venv's py-spy when the venv is not on PATH (python run as .venv/bin/python)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    spy = subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--output",
            str(out),
            "--format",
            "flamegraph",
            "--rate",
            "200",
            "--threads",
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(1.0)  # attached
    http_level(url, photos, 1, 60)
    spy.send_signal(signal.SIGINT)  # py-spy writes the graph when interrupted
    _, err = spy.communicate(timeout=60)
    if not out.is_file():
        raise SystemExit(f"py-spy wrote no flame graph: {err.decode()[-500:]}")


def http_alone(env: dict[str, str], port: int, photos: list[bytes]) -> list[dict[str, object]]:
    """The HTTP path without the model: 16 photos answered once, then posted again and answered
    from the response cache (upload, multipart, hashing, the cached JSON), by 1 and 16 clients."""
    with serving(ROOT, {**env, "FASHION_CACHE_TTL_S": "600"}, port, photos) as (url, server):
        for photo in photos[:16]:
            http_level(url, [photo], 1, 1)
        return [http_level(url, photos[:16], c, n, server.pid) for c, n in ((1, 100), (16, 40))]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("weights/ccp-attention.pt"))
    parser.add_argument("--runtime", choices=RUNTIMES, default=DEFAULT_RUNTIME)
    parser.add_argument("--device", default="cpu", help="cuda: PyTorch on the GPU (the runtime applies to CPUs)")
    parser.add_argument("--profile", type=Path, default=None, help="write py-spy's flame graph of the API here")
    parser.add_argument("--bundles", type=Path, default=Path("bundles"))
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--out", type=Path, default=Path("reports/bench_serve.json"))
    args = parser.parse_args()

    _, test = ClothingCoParsing(data_dir() / "ccp").split()
    photos = [s.image.read_bytes() for s in test[:160]]
    local = in_process(args.checkpoint, args.bundles, photos, 16, args.runtime, args.device)
    print("in-process:", json.dumps(local), flush=True)

    env = {"FASHION_CHECKPOINT": str(args.checkpoint), "FASHION_BUNDLES_DIR": str(args.bundles)}
    env |= {"FASHION_RUNTIME": args.runtime, "FASHION_DEVICE": args.device}
    with serving(ROOT, env, args.port, photos) as (url, server):
        levels = [http_level(url, photos, c, n, server.pid) for c, n in CLIENT_LEVELS]
        rss = peak_rss_mb(server.pid)
        if args.profile:
            profile(server.pid, url, photos, args.profile)
    cached = http_alone(env, args.port, photos)
    single_p50 = local["single"]["p50_ms"]  # type: ignore[index]
    limit = local["model_alone_batched_photos_per_s"]
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "runtime": args.runtime,
        "device": args.device,
        "in_process": local,
        "http": levels,
        "http_cached_answers": cached,
        "ratios": {
            "p50_1_client_over_in_process_single": round(levels[0]["p50_ms"] / single_p50, 3),  # type: ignore[operator]
            "p50_in_process_single_over_model_alone_single": round(
                single_p50 / local["model_alone_single"]["p50_ms"],
                3,  # type: ignore[index]
            ),
            "in_process_batched_over_model_alone_batched": round(local["batched_photos_per_s"] / limit, 3),  # type: ignore[operator]
            **{
                f"throughput_{level['clients']}_clients_over_model_alone_batched": round(
                    level["photos_per_s"] / limit, 3
                )  # type: ignore[operator]
                for level in levels
            },
        },
        "failed_requests": sum(level["failed"] for level in levels),  # type: ignore[misc]
        "api_peak_rss_mb": rss,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
