"""The service on Ray Serve: uvicorn against Serve with one replica, then a two-node cluster on this machine.

    python bench/ray_serve.py --bundles bundles [--checkpoint weights/ccp-attention.pt] [--out reports/ray_serve.json]

Needs Ray Serve (`pip install '.[serve]'`), redis-server, the CCP data and a bundle of the checkpoint.
Everything it starts (Ray nodes with `ray start --block`, the services, redis-server) it stops;
the bundle store given is only read (the reindex runs on a copy of its live version).

1. Side by side, in one run, on the 502 CCP test photos (cache off, batches of 16, the same settings):
   uvicorn as `python -m app` serves it (bench/serve_latency.py's `serving` and `http_level`), and
   `python -m app --engine ray-serve` with one replica reserving every CPU of a one-node Ray cluster,
   as deployed by default (the relaying ingress in front: app.relay), direct (FASHION_SERVE_RELAY=
   false: Serve's proxy calls the replica), and with Serve's @serve.batch in place of the project's
   micro-batcher (FASHION_SERVE_BATCHING=serve), and in Ray Serve's throughput mode
   (RAY_SERVE_THROUGHPUT_OPTIMIZED=1: no proxy, the clients post to the ingress replica's own port),
   relayed and direct; 1 client (each photo once) and 16 clients (`--serve-engines` picks). Rounds
   rotate which goes first; the report gives every round and their means: `one_replica_ratio` =
   Serve photos/s ÷ uvicorn photos/s at 16 clients (target ≥ 0.9; `one_replica_ratio_direct` the
   same without the ingress, `one_replica_ratio_serve_batch` with @serve.batch), and the 1-client
   p50 of each.
2. A two-node Ray cluster on this machine: `ray start --head` and a second `ray start --address`,
   each with its own CPU and a custom resource naming it; the API deployed on it with two replicas
   (one CPU each, so one per node; Redis coordination, a separate indexer worker). The report
   records the nodes, the replicas' placement from Serve's status (the dashboard's REST API that
   `serve status` reads, and `serve status` itself), and then, each under 8 clients posting photos:
   - both replicas answer (the `X-Serve-Replica` header of each answer);
   - a reindex (POST /admin/reindex, a `--slice`-product slice of the product set): failed requests
     (target 0), answers mixing two bundles (target 0), how long after the job both replicas
     answered on the new version, and every answer to a request sent after that from the new version;
   - one replica's process killed (SIGKILL, the replica on the second node): requests failed, the
     requests in flight at the kill (an upper bound on those the kill could fail), those the relaying
     ingress sent again to the other replica (`answered_after_a_replica_died`), those answered 503
     with Retry-After, failures beyond the in-flight ones (target 0), and how long Serve took to run
     two replicas again and the new one to answer.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from serve_latency import ROOT, http_level, serving

from indexer.bundle import BundleStore
from model.data import ClothingCoParsing, data_dir
from model.runtime import DEFAULT_RUNTIME, RUNTIMES

ADMIN_KEY = "ray-serve-bench-key"
REPLICA_HEADER = "X-Serve-Replica"  # app.serve.REPLICA_HEADER (not imported: this process needs no Ray)
ATTEMPTS_HEADER = "X-Serve-Attempts"  # app.relay.ATTEMPTS_HEADER: an answer that took more than one replica
SERVICE = "FashionService"  # app.serve.DEPLOYMENT: the replicas with the model (not the relaying ingress)
# The Serve variants side by side with uvicorn, as their settings: as deployed by default (the relaying
# ingress in front, the project's micro-batcher in the replica), with the proxy calling the replicas
# directly (FASHION_SERVE_RELAY=false), and with Serve's own @serve.batch in the replica, with no wait
# (the service's default) and with 10 and 30 ms: @serve.batch forms its next batch while the last one
# runs, so without a wait its batches hold one photo each.
SERVE_ENGINES = {
    "ray_serve": {"FASHION_SERVE_RELAY": "true"},
    "ray_serve_direct": {"FASHION_SERVE_RELAY": "false"},
    "ray_serve_batch": {"FASHION_SERVE_RELAY": "true", "FASHION_SERVE_BATCHING": "serve"},
    "ray_serve_batch_wait10": {
        "FASHION_SERVE_RELAY": "true",
        "FASHION_SERVE_BATCHING": "serve",
        "FASHION_MAX_WAIT_MS": "10",
    },
    "ray_serve_batch_wait30": {
        "FASHION_SERVE_RELAY": "true",
        "FASHION_SERVE_BATCHING": "serve",
        "FASHION_MAX_WAIT_MS": "30",
    },
}
# Ray Serve's own throughput mode (RAY_SERVE_THROUGHPUT_OPTIMIZED=1 where the cluster starts: Ray 2.60's
# flag for direct ingress, gRPC between deployments, user code and router on the replica's own loop,
# no log copy to stderr, frozen GC): the ingress replica serves HTTP on a port of its own (no proxy
# hop), which the clients here post to, as a load balancer over the replicas' ports would.
THROUGHPUT_ENV = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
SERVE_ENGINES["ray_serve_throughput"] = {"FASHION_SERVE_RELAY": "true", **THROUGHPUT_ENV}
SERVE_ENGINES["ray_serve_throughput_direct"] = {"FASHION_SERVE_RELAY": "false", **THROUGHPUT_ENV}
DEFAULT_SERVE_ENGINES = [e for e in SERVE_ENGINES if not e.startswith("ray_serve_throughput")]  # as before them
ENGINES = ("uvicorn", *SERVE_ENGINES)
BIN = Path(sys.executable).parent  # the venv's ray, serve (python run as .venv/bin/python)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tool(name: str) -> str:
    return shutil.which(name) or str(BIN / name)


class Started:
    """Processes this run started (each in its own session), stopped in reverse order: SIGTERM, then
    SIGKILL of its own process group if it outlives ``grace_s``."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.processes: list[tuple[str, subprocess.Popen[bytes], Any]] = []
        self.commands: dict[str, str] = {}

    def start(self, name: str, command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.processes.append((name, process, log))
        self.commands[name] = " ".join(command)
        return process

    def stop(self, process: subprocess.Popen[bytes], grace_s: float = 60) -> None:
        for entry in [e for e in self.processes if e[1] is process]:
            name, _, log = entry
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(grace_s)
                except subprocess.TimeoutExpired:
                    print(f"{name} outlived SIGTERM: killing its process group", flush=True)
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait(30)
            log.close()
            self.processes.remove(entry)

    def stop_all(self) -> None:
        for _, process, _ in reversed(list(self.processes)):
            self.stop(process)


def ray_auth() -> dict[str, str]:
    """Token authentication, as Ray turns it on by default for a new local cluster: RAY_AUTH_MODE=token
    for this run and all it starts (unless the environment says otherwise), with the user's token
    (`ray get-auth-token --generate` makes ~/.ray/auth_token when there is none). The dashboard's REST
    API then wants it as a bearer token: the headers to send it with."""
    if os.environ.setdefault("RAY_AUTH_MODE", "token").lower() != "token":
        return {}
    out = subprocess.run([tool("ray"), "get-auth-token", "--generate"], capture_output=True, text=True, check=True)
    token = out.stdout.strip().splitlines()[-1].strip()
    return {"Authorization": f"Bearer {token}"}


class RayCluster:
    """Ray nodes on this machine, each `ray start --block` (stopping it stops its node), with its
    own ports so that several run side by side."""

    headers: dict[str, str] = {}  # the dashboard's authentication (ray_auth)

    def __init__(self, started: Started) -> None:
        self.started = started
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.gcs_port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        self.nodes: list[subprocess.Popen[bytes]] = []

    def add_node(self, name: str, cpus: int, resource: str, env: dict[str, str] | None = None) -> None:
        common = [
            f"--num-cpus={cpus}",
            f"--resources={json.dumps({resource: 1})}",
            f"--object-store-memory={256 * 1024**2}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            "--disable-usage-stats",
            "--block",
        ]
        if not self.nodes:
            where = [
                "--head",
                f"--port={self.gcs_port}",
                f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={free_port()}",
                "--include-dashboard=true",
            ]
        else:
            where = [f"--address={self.address}"]
        # The clients all enter through the head's proxy here; Serve's proxy prefers replicas on its own
        # node (while they have room), which would leave the second node's replica idle. A cluster with a
        # load balancer over every node's proxy keeps the preference.
        env = {**os.environ, "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0", **(env or {})}
        self.nodes.append(self.started.start(name, [tool("ray"), "start", *where, *common], env))
        wanted = len(self.nodes)
        wait_for(lambda: len(self.alive_nodes()) >= wanted, f"Ray node {name} to join", 120)

    def alive_nodes(self) -> list[dict[str, Any]]:
        """The cluster's live nodes (id, head or not, resources), from Ray's state API."""
        from ray.util.state import list_nodes

        try:
            nodes = list_nodes(address=self.address, raise_on_missing_output=False)
        except Exception:  # not up yet
            return []
        return [
            {"node_id": n.node_id, "is_head_node": n.is_head_node, "resources": n.resources_total}
            for n in nodes
            if n.state == "ALIVE"
        ]

    def serve_details(self) -> dict[str, Any]:
        """Serve's state as `serve status` reads it (the dashboard's REST API), replicas with their node and pid."""
        reply = httpx.get(self.dashboard + "/api/serve/applications/", headers=self.headers, timeout=10)
        return reply.json()  # type: ignore[no-any-return]

    def replicas(self, state: str = "RUNNING") -> list[dict[str, Any]]:
        """The service's replicas (not the relaying ingress's) in ``state``."""
        try:
            apps = self.serve_details().get("applications", {})
        except (httpx.HTTPError, ValueError):
            return []
        found = []
        for app in apps.values():
            deployment = app.get("deployments", {}).get(SERVICE, {})
            found += [r for r in deployment.get("replicas", []) if r.get("state") == state]
        return found

    def serve_status(self) -> str:
        out = subprocess.run(
            [tool("serve"), "status", "-a", self.dashboard], capture_output=True, text=True, timeout=60
        )
        return out.stdout + out.stderr

    def stop(self) -> None:
        for node in reversed(self.nodes):  # the worker node first, the head last
            self.started.stop(node)
        self.nodes = []
        # `ray start --head` names its cluster the machine's current one, and a stopped node leaves the
        # name behind: a later plain ray.init() here would try to join the dead cluster.
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        with contextlib.suppress(OSError):
            if current.read_text().strip().endswith(f":{self.gcs_port}"):
                current.unlink()


def wait_for(condition: Any, what: str, timeout: float) -> float:
    """Seconds until ``condition()`` held; exits the run after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)
    return time.monotonic() - started


def direct_ingress_url() -> str | None:
    """Under Serve's direct ingress, the address of the ingress replica's own HTTP server: the port
    the controller allocated it, from the controller's log (this machine's latest Ray session is the
    bench's one-node cluster). None until it is allocated."""
    logs = Path(tempfile.gettempdir()) / "ray" / "session_latest" / "logs" / "serve"
    # the newest controller's log first (a restarted controller writes a new one), its latest allocation
    for log in sorted(logs.glob("controller_*.log"), key=lambda f: f.stat().st_mtime, reverse=True):
        ports = re.findall(r"Allocated RequestProtocol\.HTTP port (\d+) to replica", log.read_text(errors="replace"))
        if ports:
            return f"http://127.0.0.1:{ports[-1]}"
    return None


def ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def serving_on_ray(
    started: Started, cluster: RayCluster, env: dict[str, str], port: int, replicas: int, photos: list[bytes]
) -> Iterator[str]:
    """``python -m app --engine ray-serve`` on ``cluster`` (Serve's proxy on the head only), as
    serve_latency.serving starts uvicorn: cache off, batches of 16, ``env`` on top; its URL once
    every replica runs and it has answered a few photos. SIGTERM deletes the application."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FASHION_CACHE_TTL_S": "0", "FASHION_MAX_BATCH": "16", **env}
    command = [sys.executable, "-m", "app", "--engine", "ray-serve", "--address", cluster.address]
    command += ["--host", "127.0.0.1", "--port", str(port), "--proxy-location", "HeadOnly"]
    server = started.start(f"serve-{replicas}-replicas", command, env)
    url = f"http://127.0.0.1:{port}"
    direct_ingress = env.get("RAY_SERVE_THROUGHPUT_OPTIMIZED") == "1"

    def up() -> bool:
        nonlocal url
        if server.poll() is not None:
            raise SystemExit(f"the Serve command exited ({server.returncode}): see {started.logs}")
        if direct_ingress:  # no proxy: the ingress replica's own port
            found = direct_ingress_url()
            if found is None:
                return False
            url = found
        return len(cluster.replicas()) == replicas and ready(url)

    try:
        wait_for(up, f"{replicas} Serve replica(s) to run", 600)
        http_level(url, photos[:4], 1, 4)  # as serving() warms up
        yield url
    finally:
        started.stop(server)


def side_by_side(
    started: Started, env: dict[str, str], photos: list[bytes], rounds: int, engines: Sequence[str] = ENGINES
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """uvicorn and Serve (one replica, every CPU; relayed and direct) at 1 client (each photo once)
    and 16 clients; rounds rotate which goes first."""
    cpus = os.cpu_count() or 1
    levels = ((1, len(photos)), (16, -(-len(photos) // 16)))
    results: list[dict[str, Any]] = []
    for n in range(rounds):
        this_round: dict[str, Any] = {"round": n + 1}
        order = [*engines[n % len(engines) :], *engines[: n % len(engines)]]
        for engine in order:
            if engine == "uvicorn":
                with serving(ROOT, env, free_port(), photos) as (url, server):
                    this_round[engine] = [http_level(url, photos, c, k, server.pid) for c, k in levels]
                started.commands["uvicorn"] = f"{sys.executable} -m app --port PORT"
            else:
                cluster = RayCluster(started)
                try:
                    cluster_env = {k: v for k, v in SERVE_ENGINES[engine].items() if k in THROUGHPUT_ENV}
                    cluster.add_node("ray-one-node", cpus, "bench_single_node", cluster_env)
                    serve_env = {
                        **env,
                        "FASHION_SERVE_NUM_REPLICAS": "1",
                        "FASHION_SERVE_NUM_CPUS": str(cpus),
                        **SERVE_ENGINES[engine],
                    }
                    with serving_on_ray(started, cluster, serve_env, free_port(), 1, photos) as url:
                        pid = cluster.replicas()[0]["pid"]
                        this_round[engine] = [http_level(url, photos, c, k, pid) for c, k in levels]
                finally:
                    cluster.stop()
        this_round["order"] = list(order)
        results.append(this_round)
        print(json.dumps(this_round), flush=True)

    return results, summarise_rounds(results)


def summarise_rounds(results: list[dict[str, Any]]) -> dict[str, Any]:
    engines = [e for e in ENGINES if all(e in r for r in results)]  # an older log may lack the direct one

    def mean(engine: str, level: int, key: str) -> float:
        return round(statistics.mean(r[engine][level][key] for r in results), 2)

    def ratio(engine: str) -> float:
        return round(mean(engine, 1, "photos_per_s") / mean("uvicorn", 1, "photos_per_s"), 3)

    return {
        **({"one_replica_ratio": ratio("ray_serve")} if "ray_serve" in engines else {}),  # as deployed by default
        **({"one_replica_ratio_direct": ratio("ray_serve_direct")} if "ray_serve_direct" in engines else {}),
        **{
            f"one_replica_ratio{e.removeprefix('ray_serve')}": ratio(e)
            for e in engines
            if e.startswith(("ray_serve_batch", "ray_serve_throughput"))
        },
        "p50_1_client_ms": {e: mean(e, 0, "p50_ms") for e in engines},
        "photos_per_s_16_clients": {e: mean(e, 1, "photos_per_s") for e in engines},
        "failed_requests": sum(level["failed"] for r in results for e in engines for level in r[e]),
    }


class Load:
    """``clients`` threads posting photos until stopped; every answer recorded with when it was sent,
    its replica and bundle; the requests in flight counted."""

    def __init__(self, url: str, photos: list[bytes], clients: int) -> None:
        self.url, self.photos, self.clients = url, photos, clients
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.in_flight = 0
        # (sent, done, status, replica, bundle version, item ids, Retry-After, attempts) or a transport error
        self.answers: list[tuple[float, float, int, str, str | None, list[str], str | None, int]] = []
        self.errors: list[tuple[float, str]] = []
        self.threads = [threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(clients)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(120)

    def _client(self, n: int) -> None:
        i = n
        with httpx.Client(timeout=120) as http:
            while not self.stop.is_set():
                data = self.photos[i % len(self.photos)]
                i += self.clients
                with self.lock:
                    self.in_flight += 1
                sent = time.monotonic()
                try:
                    r = http.post(self.url + "/recommend", files={"image": ("p.jpg", data, "image/jpeg")})
                except httpx.HTTPError as exc:
                    with self.lock:
                        self.in_flight -= 1
                        self.errors.append((sent, type(exc).__name__))
                    continue
                version, ids = None, []
                if r.status_code == 200:
                    body = r.json()
                    version, ids = body["bundle_version"], [p["item"]["id"] for p in body["parts"] if p["item"]]
                with self.lock:
                    self.in_flight -= 1
                    self.answers.append(
                        (
                            sent,
                            time.monotonic(),
                            r.status_code,
                            r.headers.get(REPLICA_HEADER, "?"),
                            version,
                            ids,
                            r.headers.get("Retry-After"),
                            int(r.headers.get(ATTEMPTS_HEADER, "1")),
                        )
                    )

    def replicas_on(self, version: str | None, sent_after: float = 0.0) -> set[str]:
        """The replicas that answered on ``version`` (any, when None) a request sent after ``sent_after``."""
        with self.lock:
            return {a[3] for a in self.answers if a[2] == 200 and version in (None, a[4]) and a[0] > sent_after}

    def outcome(self, since: float = 0.0) -> dict[str, Any]:
        """Requests sent since ``since``: counts by status, transport errors, the failed ones (not 200,
        and not 503 with Retry-After), the answers by replica."""
        with self.lock:
            answers = [a for a in self.answers if a[0] >= since]
            errors = [e for e in self.errors if e[0] >= since]
        by_status = Counter(str(a[2]) for a in answers)
        told_to_retry = sum(1 for a in answers if a[2] == 503 and a[6] is not None)
        failed = sum(1 for a in answers if a[2] != 200) - told_to_retry + len(errors)
        return {
            "requests": len(answers) + len(errors),
            "by_status": dict(sorted(by_status.items())),
            "transport_errors": dict(Counter(e[1] for e in errors)),
            "answered_503_with_retry_after": told_to_retry,
            "failed": failed,
            "answers_by_replica": dict(Counter(a[3] for a in answers if a[2] == 200)),
            # sent again by the relaying ingress after their first replica died, then answered
            "answered_after_a_replica_died": sum(1 for a in answers if a[7] > 1),
        }


def catalogue_slice(source: Path, target: Path, count: int) -> Path:
    """A catalogue folder of ``count`` products of ``source`` (Kaggle layout), chosen with a fixed
    seed: their rows of styles.csv and links to their photos (as bench/soak.py makes its slices)."""
    (target / "images").mkdir(parents=True)
    with open(source / "styles.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [row for row in reader if (source / "images" / f"{row['id']}.jpg").is_file()]
        fields = reader.fieldnames or []
    chosen = sorted(np.random.default_rng(0).choice(len(rows), min(count, len(rows)), replace=False))
    rows = [rows[i] for i in chosen]
    with open(target / "styles.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    for row in rows:
        (target / "images" / f"{row['id']}.jpg").symlink_to(source / "images" / f"{row['id']}.jpg")
    return target


def copy_live_bundle(source: Path, target: Path) -> str:
    """A bundle store holding ``source``'s live version alone, live."""
    version = BundleStore(source).current_version()
    if version is None:
        raise SystemExit(f"no live bundle in {source}")
    shutil.copytree(source / "versions" / version, target / "versions" / version)
    BundleStore(target).rollback(version)
    return version


def start_redis(started: Started, work: Path) -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (make redis-server)")
    port = free_port()
    (work / "redis").mkdir()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    started.start("redis", [*command, "--dir", str(work / "redis")])
    wait_for(lambda: _connects(port), "redis-server", 30)
    return f"redis://127.0.0.1:{port}/0"


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def two_nodes(
    started: Started, env: dict[str, str], photos: list[bytes], work: Path, bundles: Path, slice_size: int
) -> dict[str, Any]:
    """The two-node cluster: placement, both replicas answering, a reindex and a replica killed under load."""
    data = data_dir()
    old = copy_live_bundle(bundles, work / "bundles")
    new_catalogue = catalogue_slice(data / "fashion-product", work / "slice", slice_size)
    env = {
        **env,
        "FASHION_BUNDLES_DIR": str(work / "bundles"),
        "FASHION_UPLOADS_DIR": str(work / "uploads"),
        "FASHION_CATALOGUE_ROOTS": json.dumps([str(work), str(data / "fashion-product")]),
        "FASHION_REDIS_URL": start_redis(started, work),
        "FASHION_EMBEDDED_WORKER": "false",  # the indexer worker runs the job, as in compose
        "FASHION_ADMIN_API_KEY": ADMIN_KEY,
        "FASHION_SERVE_NUM_REPLICAS": "2",
        "FASHION_SERVE_NUM_CPUS": "1",
    }
    worker_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    started.start("worker", [sys.executable, "-m", "app.worker"], worker_env)
    cluster = RayCluster(started)
    report: dict[str, Any] = {}
    try:
        cluster.add_node("ray-head", 1, "bench_node_head")
        cluster.add_node("ray-second-node", 1, "bench_node_second")
        report["nodes"] = cluster.alive_nodes()
        with serving_on_ray(started, cluster, env, free_port(), 2, photos) as url:
            placement = [
                {k: r.get(k) for k in ("replica_id", "node_id", "node_ip", "pid", "state")} for r in cluster.replicas()
            ]
            node_name = {
                n["node_id"]: next((k for k in n["resources"] if k.startswith("bench_node_")), "?")
                for n in report["nodes"]
            }
            for replica in placement:
                replica["node"] = node_name.get(replica["node_id"], "?")
            report["placement"] = placement
            report["replicas_on_distinct_nodes"] = len({r["node_id"] for r in placement}) == 2
            report["serve_status"] = cluster.serve_status()
            print(json.dumps({"placement": placement}), flush=True)

            with Load(url, photos, 8) as load:
                t0 = time.monotonic()
                wait_for(lambda: len(load.replicas_on(old)) == 2, "both replicas to answer", 120)
                time.sleep(5)
                report["both_answer"] = {**load.outcome(t0), "seconds": round(time.monotonic() - t0, 1)}
                report["reindex_under_load"] = reindex(url, load, old, new_catalogue, work / "bundles")
                print(json.dumps({"reindex": report["reindex_under_load"]}), flush=True)
                report["replica_killed"] = kill_one(cluster, load, placement)
                print(json.dumps({"kill": report["replica_killed"]}), flush=True)
    finally:
        cluster.stop()
    return report


def reindex(url: str, load: Load, old: str, catalogue: Path, bundles: Path) -> dict[str, Any]:
    """A reindex job under ``load``: its outcome, the swap and every answer's bundle."""
    since = time.monotonic()
    headers = {"X-API-Key": ADMIN_KEY}
    accepted = httpx.post(url + "/admin/reindex", headers=headers, json={"catalogue": str(catalogue), "force": True})
    if accepted.status_code != 202:
        raise SystemExit(f"reindex refused: {accepted.status_code} {accepted.text}")
    job_id = accepted.json()["job_id"]
    job: dict[str, Any] = {}

    def done() -> bool:
        job.update(httpx.get(f"{url}/admin/jobs/{job_id}", headers=headers, timeout=10).json())
        return job["state"] in ("succeeded", "failed")

    wait_for(done, "the reindex job", 1800)
    finished = time.monotonic()
    if job["state"] != "succeeded":
        raise SystemExit(f"the reindex failed: {job.get('error')}")
    new = job["version"]
    swap_s = wait_for(lambda: len(load.replicas_on(new, finished)) == 2, "both replicas to answer on the new", 120)
    both_swapped = time.monotonic()  # each replica has answered on the new bundle: it swapped before
    time.sleep(10)
    store = BundleStore(bundles)
    items = {v: set(store.open(v).keys_by_id) for v in (old, new)}
    with load.lock:
        answers = [a for a in load.answers if a[0] >= since]
    mixed = [a for a in answers if a[2] == 200 and (a[4] not in items or not set(a[5]) <= items[a[4]])]
    after = [a for a in answers if a[0] > both_swapped]
    return {
        **load.outcome(since),
        "job_seconds": round(finished - since, 1),
        "old_version": old,
        "new_version": new,
        "new_items": len(items[new]),
        "both_replicas_on_new_s_after_job": round(swap_s, 2),
        "answers_mixing_two_bundles": len(mixed),
        "answers_sent_after_both_swapped": len(after),
        "of_them_from_new_version": sum(1 for a in after if a[2] == 200 and a[4] == new),
        "versions_by_replica": {
            replica: dict(Counter(a[4] for a in answers if a[3] == replica and a[2] == 200))
            for replica in sorted({a[3] for a in answers})
        },
    }


def kill_one(cluster: RayCluster, load: Load, placement: list[dict[str, Any]]) -> dict[str, Any]:
    """SIGKILL the replica on the second node under ``load``; Serve restarts it."""
    victim = next((r for r in placement if r["node"] == "bench_node_second"), placement[-1])
    before = {r["replica_id"] for r in cluster.replicas()}
    since = time.monotonic() - 5
    with load.lock:
        in_flight = load.in_flight
        killed_at = time.monotonic()
        os.kill(int(victim["pid"]), signal.SIGKILL)

    def replaced() -> bool:
        running = {r["replica_id"] for r in cluster.replicas()}
        return len(running) == 2 and victim["replica_id"] not in running

    restart_s = wait_for(replaced, "Serve to run two replicas again", 300)
    new_replica = ({r["replica_id"] for r in cluster.replicas()} - before).pop()
    answer_s = wait_for(lambda: new_replica in load.replicas_on(None, killed_at), "the new replica to answer", 120)
    time.sleep(5)
    outcome = load.outcome(since)
    return {
        **outcome,
        "killed": {k: victim[k] for k in ("replica_id", "node", "pid")},
        "in_flight_at_kill": in_flight,
        "failed_beyond_in_flight": max(0, outcome["failed"] - in_flight),
        "serve_ran_two_replicas_again_s": round(restart_s, 1),
        "new_replica": new_replica,
        "new_replica_answered_s": round(restart_s + answer_s, 1),
        "placement_after": [
            {k: r.get(k) for k in ("replica_id", "node_id", "pid", "state")} for r in cluster.replicas()
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "weights" / "ccp-attention.pt")
    parser.add_argument("--bundles", type=Path, default=ROOT / "bundles", help="a bundle store of the checkpoint")
    parser.add_argument("--runtime", choices=RUNTIMES, default=DEFAULT_RUNTIME)
    parser.add_argument("--rounds", type=int, default=2, help="side-by-side rounds (alternating which goes first)")
    parser.add_argument("--slice", type=int, default=300, help="products the reindex under load indexes")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "ray_serve.json")
    parser.add_argument(
        "--side-by-side-from", type=Path, default=None, help="reuse the side-by-side rounds of this run's log"
    )
    parser.add_argument("--side-by-side-only", action="store_true", help="no two-node part")
    parser.add_argument(
        "--serve-engines",
        nargs="+",
        choices=list(SERVE_ENGINES),
        default=DEFAULT_SERVE_ENGINES,
        help="the Serve variants measured beside uvicorn",
    )
    args = parser.parse_args()

    _, test = ClothingCoParsing(data_dir() / "ccp").split()
    photos = [s.image.read_bytes() for s in test]  # the 502 CCP test photos
    env = {
        "FASHION_CHECKPOINT": str(args.checkpoint.resolve()),
        "FASHION_BUNDLES_DIR": str(args.bundles.resolve()),
        "FASHION_RUNTIME": args.runtime,
        "FASHION_FIRST_SLICE": "0",
    }
    RayCluster.headers = ray_auth()
    work = Path(tempfile.mkdtemp(prefix="ray-serve-bench-"))
    (work / "logs").mkdir()
    started = Started(work / "logs")
    report: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "runtime": args.runtime,
        # the niceness Ray gives its workers (the replicas) where the nodes were started: null, Ray's default
        "ray_worker_niceness": os.environ.get("RAY_worker_niceness"),  # noqa: SIM112 (Ray spells it so)
        "photos": len(photos),
        "logs": str(work / "logs"),
    }
    try:
        if args.side_by_side_from is not None:
            lines = args.side_by_side_from.read_text().splitlines()
            rounds = [json.loads(line) for line in lines if line.startswith('{"round"')]
            report["side_by_side_from"] = str(args.side_by_side_from)
        else:
            rounds, _ = side_by_side(started, env, photos, args.rounds, ["uvicorn", *args.serve_engines])
        report |= summarise_rounds(rounds)
        report["side_by_side_rounds"] = rounds
        try:
            if not args.side_by_side_only:
                report["two_node_cluster"] = two_nodes(started, env, photos, work, args.bundles.resolve(), args.slice)
        except Exception as error:  # recorded: the side-by-side figures stand on their own
            report["two_node_cluster"] = {"error": f"{type(error).__name__}: {error}"}
    finally:
        started.stop_all()
        report["commands"] = started.commands
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "side_by_side_rounds"}, indent=2))


if __name__ == "__main__":
    main()
