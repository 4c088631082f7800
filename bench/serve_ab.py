"""Two checkouts of the service over HTTP, side by side: which serves faster on this machine.

    git worktree add /tmp/a <commit> && git worktree add /tmp/b <commit>
    python bench/serve_ab.py --a /tmp/a --b /tmp/b --bundles bundles --out reports/serve_ab.json
    python bench/serve_ab.py --a . --b . --a-env FASHION_WIDE_FILL=0 --framing upper_half ...  # one setting

``--framing``: the photos re-framed as bench/any_photo.py measures them (model.framing), e.g. the
top half of each; ``--a-env``: settings of A's service alone (one checkout against itself).

These machines drift by more than the changes worth measuring, so the two are never compared
across runs: each round serves A then B (same bundle, checkpoint and photos, cache off) under
1, 4 and 16 clients (bench/serve_latency.py's levels), and the report gives every round and, per
level, the mean of each and in how many rounds B beat A.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
from pathlib import Path
from typing import Any

from PIL import Image
from serve_latency import CLIENT_LEVELS, http_level, serving

from model.data import ClothingCoParsing, data_dir
from model.framing import eval_reframe
from model.runtime import DEFAULT_CACHE


def commit(root: Path) -> str:
    """The checkout's commit, marked when its files differ from it."""
    git = ["git", "-C", str(root)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True)
    return head.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")


def reframed(path: Path, framing: str) -> bytes:
    """A photo's bytes as shot, or re-framed and saved as a JPEG (quality 92, as bench/any_photo.py)."""
    if framing == "full":
        return path.read_bytes()
    with Image.open(path) as opened:
        photo = opened.convert("RGB")
    buffer = io.BytesIO()
    eval_reframe(framing, photo.width, photo.height).apply(photo).save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", type=Path, required=True, help="the checkout to compare against (the code before)")
    parser.add_argument("--b", type=Path, required=True, help="the checkout under test")
    parser.add_argument("--checkpoint", type=Path, default=Path("weights/ccp-attention.pt"))
    parser.add_argument("--bundles", type=Path, default=Path("bundles"))
    parser.add_argument("--a-checkpoint", type=Path, default=None, help="A's own model (default: --checkpoint)")
    parser.add_argument("--a-bundles", type=Path, default=None, help="A's own bundle, built with its model")
    parser.add_argument("--a-env", action="append", default=[], help="KEY=VALUE for A's service alone")
    parser.add_argument("--framing", default="full", help="the photos re-framed (model.framing.EVAL_FRAMINGS)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=8769)
    parser.add_argument("--out", type=Path, default=Path("reports/serve_ab.json"))
    args = parser.parse_args()

    _, test = ClothingCoParsing(data_dir() / "ccp").split()
    photos = [reframed(s.image, args.framing) for s in test[:160]]
    env = {"FASHION_CHECKPOINT": str(args.checkpoint.resolve()), "FASHION_BUNDLES_DIR": str(args.bundles.resolve())}
    env["FASHION_RUNTIME_CACHE"] = str(DEFAULT_CACHE.resolve())  # one export per model, made once
    # A may serve its own model and bundle (a release that changes the model: each side as shipped).
    env_a = dict(env)
    if args.a_checkpoint is not None:
        env_a["FASHION_CHECKPOINT"] = str(args.a_checkpoint.resolve())
    if args.a_bundles is not None:
        env_a["FASHION_BUNDLES_DIR"] = str(args.a_bundles.resolve())
    env_a |= dict(item.split("=", 1) for item in args.a_env)
    rounds: list[dict[str, Any]] = []
    for number in range(args.rounds):
        row: dict[str, Any] = {}
        for name, root, side_env in (("a", args.a, env_a), ("b", args.b, env)):
            with serving(root.resolve(), side_env, args.port, photos) as (url, server):
                row[name] = [http_level(url, photos, c, n, server.pid) for c, n in CLIENT_LEVELS]
        rounds.append(row)
        print(f"round {number}:", json.dumps(row), flush=True)

    summary = {}
    for i, (clients, _) in enumerate(CLIENT_LEVELS):
        a = [r["a"][i] for r in rounds]
        b = [r["b"][i] for r in rounds]
        summary[f"{clients}_clients"] = {
            "photos_per_s_a": round(statistics.mean(x["photos_per_s"] for x in a), 2),
            "photos_per_s_b": round(statistics.mean(x["photos_per_s"] for x in b), 2),
            "p50_ms_a": round(statistics.mean(x["p50_ms"] for x in a), 1),
            "p50_ms_b": round(statistics.mean(x["p50_ms"] for x in b), 1),
            "rounds_b_more_photos_per_s": sum(y["photos_per_s"] > x["photos_per_s"] for x, y in zip(a, b, strict=True)),
            "failed": sum(x["failed"] + y["failed"] for x, y in zip(a, b, strict=True)),
        }
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "framing": args.framing,
        "a": {
            "checkout": str(args.a),
            "commit": commit(args.a),
            "checkpoint": env_a["FASHION_CHECKPOINT"],
            "env": args.a_env,
        },
        "b": {"checkout": str(args.b), "commit": commit(args.b), "checkpoint": env["FASHION_CHECKPOINT"]},
        "rounds": rounds,
        "summary": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
