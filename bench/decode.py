"""Decoding a photo for the network: the full decode then the letterbox, against load_pixels (a
large JPEG decoded at a reduced DCT scale), side by side in one run; and whether the answers change.

    python bench/decode.py --checkpoint weights/ccp-attention.pt --bundles bundles --out reports/decode.json

Photos: 100 CCP test photos (550 x ~830, what the quality figures are measured on: load_pixels
decodes them in full, so their pixels are identical) and the same 100 made phone-sized (3024 x 4032,
upscaled, JPEG quality 90: what shoppers upload). Times: medians of per-photo times, one thread.
Agreement, on the phone-sized photos: the parts /recommend returns (label per part, and the item the
bundle recommends for it) from either decode.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from indexer.bundle import BundleStore
from indexer.search import DEFAULT_CANDIDATES, DEFAULT_MAX_PARTS, QueryPart, recommend_parts
from model.checkpoint import load_checkpoint
from model.data import ClothingCoParsing, data_dir
from model.imaging import decode_image, letterbox, load_pixels, to_input
from model.network import DEFAULT_PART_THRESHOLD, query_parts

SIZE = (384, 256)


def full(data: bytes) -> np.ndarray:
    return letterbox(decode_image(data), SIZE)[0]


def reduced(data: bytes) -> np.ndarray:
    return load_pixels(data, SIZE)[0]


def median_ms(fn: Callable[[bytes], np.ndarray], photos: list[bytes], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        for data in photos:
            started = time.perf_counter()
            fn(data)
            times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def phone_sized(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        big = image.convert("RGB").resize((3024, 4032), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    big.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@torch.inference_mode()
def agreement(checkpoint: Path, bundles: Path, photos: list[bytes]) -> dict[str, float]:
    """Share of parts with the same label, and the same recommended item, from either decode."""
    model, _ = load_checkpoint(checkpoint)
    model.eval()
    bundle = BundleStore(bundles).open()
    searchable = {label for label, index in bundle.part_indexes.items() if index.ntotal > 0}

    def answers(decode: Callable[[bytes], np.ndarray], data: bytes) -> list[tuple[str, str | None]]:
        _, placement = load_pixels(data, SIZE)
        out = model(to_input(decode(data))[None])
        parts = query_parts(model, out, 0, placement, DEFAULT_PART_THRESHOLD, DEFAULT_MAX_PARTS, searchable)
        query = [QueryPart(p.label, p.score, p.embedding.numpy(), p.box) for p in parts]
        matches = recommend_parts(bundle, query, DEFAULT_CANDIDATES)
        return [(m.part.label, m.match.item_id if m.match else None) for m in matches]

    same_label = same_item = total = 0
    for data in photos:
        full_parts, fast_parts = answers(full, data), answers(reduced, data)
        total += max(len(full_parts), len(fast_parts))
        same_label += sum(a[0] == b[0] for a, b in zip(full_parts, fast_parts, strict=False))
        same_item += sum(a == b for a, b in zip(full_parts, fast_parts, strict=False))
    return {"parts": total, "same_label": round(same_label / total, 4), "same_item": round(same_item / total, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--checkpoint", type=Path, default=Path("weights/ccp-attention.pt"))
    parser.add_argument("--bundles", type=Path, default=Path("bundles"))
    parser.add_argument("--out", type=Path, default=Path("reports/decode.json"))
    args = parser.parse_args()
    _, test = ClothingCoParsing(data_dir(args.data) / "ccp").split()
    ccp = [s.image.read_bytes() for s in test[:100]]
    phone = [phone_sized(data) for data in ccp]
    report: dict[str, object] = {"machine": f"{platform.machine()}, {platform.processor() or 'cpu'}", "size": SIZE}
    for name, photos, repeats in (("ccp", ccp, 3), ("phone", phone[:20], 2)):
        median_ms(reduced, photos[:3], 1)  # warm the allocator and the codec
        rows = {"full decode": median_ms(full, photos, repeats), "reduced decode": median_ms(reduced, photos, repeats)}
        diff = [np.abs(full(d).astype(int) - reduced(d)).mean() for d in photos[:20]]
        report[name] = {
            "photos": len(photos),
            "ms": {k: round(v, 2) for k, v in rows.items()},
            "speed_up": round(rows["full decode"] / rows["reduced decode"], 2),
            "mean_abs_pixel_difference": round(float(np.mean(diff)), 3),
        }
        print(name, json.dumps(report[name]), flush=True)
    report["phone_agreement"] = agreement(args.checkpoint, args.bundles, phone)
    print("phone agreement", json.dumps(report["phone_agreement"]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
