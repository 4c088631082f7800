"""What the look head costs the forward pass: the network with and without it, side by side in one run.

    python bench/look_cost.py --checkpoint weights/ccp-attention.pt --out reports/look_cost.json

The model alone on decoded, letterboxed CCP test photos, per photo, batch 1 and 8 (about the
service's mean batch at 16 clients), on PyTorch eager and on OpenVINO (the service's default
runtime): the checkpoint as it is, and the same network with its look head taken off (its parts
then searched by their texture encodings, as before the look head). Within each runtime, each round
times both, the two taking turns at going first, so the machine's drift falls on both; the report
gives each round, the medians' difference and the median of the rounds' ratios.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serve_ab import commit  # noqa: E402

from model.checkpoint import file_sha256, load_checkpoint  # noqa: E402
from model.data import ClothingCoParsing, data_dir  # noqa: E402
from model.imaging import load_input  # noqa: E402
from model.network import PartAttentionNetwork  # noqa: E402
from model.runtime import Forward, Runtime, make_forward  # noqa: E402

BATCHES = (1, 8)
RUNTIMES: tuple[Runtime, ...] = ("openvino", "pytorch")  # the served runtime first, in a quiet process


def without_look(model: PartAttentionNetwork) -> PartAttentionNetwork:
    """The same network with no look head."""
    bare = copy.deepcopy(model)
    bare.look = None
    bare.config = replace(model.config, look_dim=0)
    return bare


def ms_per_photo(forward: Forward, photos: torch.Tensor, batch: int) -> float:
    """One pass over ``photos`` in batches of ``batch``: ms per photo."""
    chunks = [photos[i : i + batch] for i in range(0, len(photos) - batch + 1, batch)]
    started = time.perf_counter()
    for chunk in chunks:
        forward(chunk)
    return 1000 * (time.perf_counter() - started) / (len(chunks) * batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("weights/ccp-attention.pt"))
    parser.add_argument("--data", type=Path, default=None, help="data root (default $FASHION_DATA_DIR)")
    parser.add_argument("--photos", type=int, default=64, help="CCP test photos")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("reports/look_cost.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, _ = load_checkpoint(args.checkpoint)
    if model.look is None:
        raise SystemExit(f"{args.checkpoint} has no look head: nothing to measure")
    size = (model.config.image_height, model.config.image_width)
    ccp = ClothingCoParsing(data_dir(args.data) / "ccp")
    _, test = ccp.split()
    photos = torch.stack([load_input(s.image, size)[0] for s in test[: args.photos]])
    sha = file_sha256(args.checkpoint)
    cache = Path(tempfile.mkdtemp(prefix="look-cost-"))  # fresh exports: this code's, never a stale one
    variants = {"look": model.eval(), "no_look": without_look(model).eval()}
    # each variant its own export (an export's folder is named by the first 16 characters given)
    forwards = {
        (runtime, name): make_forward(net, runtime, f"{name}-{sha}", cache)
        for runtime in RUNTIMES
        for name, net in variants.items()
    }
    # One runtime at a time: PyTorch's threads spin on after its last call and would slow OpenVINO's
    # next one; each runtime's rounds come after its own warm-up.
    rounds: list[dict[str, float]] = [{} for _ in range(args.rounds)]
    for runtime in RUNTIMES:
        for name in variants:
            for batch in BATCHES:
                ms_per_photo(forwards[runtime, name], photos[:16], batch)
        for number, row in enumerate(rounds):
            for batch in BATCHES:
                for name in list(variants)[:: 1 if number % 2 == 0 else -1]:  # each first in every other round
                    with torch.inference_mode():
                        row[f"{runtime}/b{batch}/{name}"] = round(
                            ms_per_photo(forwards[runtime, name], photos, batch), 3
                        )
            print(runtime, {k: v for k, v in row.items() if k.startswith(runtime)}, flush=True)
    summary: dict[str, Any] = {}
    for runtime in RUNTIMES:
        for batch in BATCHES:
            key = f"{runtime}/b{batch}"
            look = statistics.median(r[f"{key}/look"] for r in rounds)
            bare = statistics.median(r[f"{key}/no_look"] for r in rounds)
            ratios = [r[f"{key}/look"] / r[f"{key}/no_look"] for r in rounds]
            summary[key] = {
                "look_ms_per_photo": round(look, 2),
                "no_look_ms_per_photo": round(bare, 2),
                "look_head_ms_per_photo": round(look - bare, 2),
                "ratio": round(statistics.median(ratios), 3),
            }
    report = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, {platform.platform()}",
        "commit": commit(ROOT),
        "checkpoint": str(args.checkpoint),
        "photos": len(photos),
        "summary": summary,
        "rounds": rounds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
