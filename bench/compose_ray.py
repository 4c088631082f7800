"""The compose `ray` profile, in containers: both Serve replicas answer, and the ray-node's replica
killed (SIGKILL) under 8 clients costs no request (the relaying ingress sends its requests to the
other replica) while Serve starts a new one.

    WITH_RAY=1 bash docker/build-offline.sh
    bash docker/compose.sh --profile ray up -d redis worker ray-head ray-node
    python bench/compose_ray.py --out reports/compose_ray.json    # once /readyz answers 200

Every CCP photo is posted in turn, each made new to the response cache (a few bytes after its
JPEG end marker, which decoding ignores) so that every request reaches a replica's model, by 8
clients for ``--before-s`` seconds, then the replica on the ray-node container is killed and the
clients go on for ``--after-s`` seconds. The report counts statuses and transport errors before and
after the kill, the answering replica (``X-Serve-Replica``) in 10 s windows after it, the answers
sent again (``X-Serve-Attempts`` > 1), and Serve's status at the end.
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from model.data import data_dir  # noqa: E402

# The model replicas' process title (not the ingress's), as a pattern that does not match itself: the
# image has no ps, so the replica is found by its command line under /proc, where the killing shell's
# own command line (holding the pattern) is too.
REPLICA = "[S]erveReplica:fashion:FashionService"
KILL = (
    f"for p in /proc/[0-9]*; do if grep -q '{REPLICA}' $p/cmdline 2>/dev/null; "
    "then kill -9 ${p#/proc/} && echo killed ${p#/proc/}; fi; done"
)
Row = tuple[float, str, str | None, str | None]  # sent at, status or error, replica, attempts


def compose(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(ROOT / "docker" / "compose.sh"), *args], capture_output=True, text=True)


def summary(rows: list[Row]) -> dict[str, Any]:
    return {
        "requests": len(rows),
        "statuses": dict(collections.Counter(r[1] for r in rows)),
        "replicas": dict(collections.Counter(r[2] for r in rows)),
        "sent_again": sum(1 for r in rows if r[3] not in (None, "1")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--before-s", type=float, default=15)
    parser.add_argument("--after-s", type=float, default=60)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "compose_ray.json")
    args = parser.parse_args()

    photos = [p.read_bytes() for p in sorted((data_dir() / "ccp" / "photos").glob("*.jpg"))]
    rows: list[Row] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        with httpx.Client(base_url=args.url, timeout=60) as session:
            i = n
            while not stop.is_set():
                sent = time.time()
                try:
                    # bytes after the JPEG's end are ignored by the decoder but make each request
                    # new to the response cache, so every request reaches a replica's model
                    data = photos[i % len(photos)] + f"{n}-{i}-{sent}".encode()
                    photo = {"image": ("p.jpg", data, "image/jpeg")}
                    response = session.post("/recommend", files=photo)
                    row: Row = (
                        sent,
                        str(response.status_code),
                        response.headers.get("x-serve-replica"),
                        response.headers.get("x-serve-attempts"),
                    )
                except httpx.HTTPError as error:
                    row = (sent, type(error).__name__, None, None)
                with lock:
                    rows.append(row)
                i += args.clients

    threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
    for thread in threads:
        thread.start()
    time.sleep(args.before_s)
    killed_at = time.time()
    kill = compose("exec", "-T", "ray-node", "sh", "-c", KILL)
    if "killed" not in kill.stdout:
        stop.set()
        raise SystemExit(f"no replica process found on ray-node: {kill.stdout}{kill.stderr}")
    time.sleep(args.after_s)
    stop.set()
    for thread in threads:
        thread.join()
    after = [r for r in rows if r[0] >= killed_at]
    report = {
        "machine": f"{platform.machine()}, {platform.platform()}",
        "command": " ".join(sys.argv),
        "photos": len(photos),
        "clients": args.clients,
        "kill": (kill.stdout + kill.stderr).strip(),
        "before_kill": summary([r for r in rows if r[0] < killed_at]),
        "after_kill": summary(after),
        "replicas_after_kill_by_10_s": [
            dict(collections.Counter(r[2] for r in after if killed_at + k <= r[0] < killed_at + k + 10))
            for k in range(0, int(args.after_s), 10)
        ],
        "serve_status_at_end": compose("exec", "-T", "ray-head", "serve", "status").stdout,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "serve_status_at_end"}, indent=1))


if __name__ == "__main__":
    main()
