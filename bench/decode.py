"""Decoding a photo for the network: the full decode then the letterbox, against load_pixels (a
large JPEG decoded at a reduced DCT scale), side by side in one run; and whether the answers change.

    python bench/decode.py --checkpoint weights/ccp-attention.pt --bundles bundles --out reports/decode.json
    python bench/decode.py --formats --out reports/decode_formats.json

``--formats`` alone: a phone-sized photo's cost to load for the network (load_pixels) in each photo
type the service takes (JPEG q90, HEIC q80, AVIF q70, WebP q85, PNG), 5 phone-sized CCP test
photos, median of 3 each, wall time on one thread per decode (as the service sets the codecs).
Only a JPEG has a reduced decode. The HEIC here is one image as pillow-heif writes it; an iPhone's
is a grid of 512-px tiles.

Photos: the 502 CCP test photos (550 x ~830, what the quality figures are measured on: load_pixels
decodes them in full, so their pixels are identical) and the same photos made phone-sized (3024 x
4032, upscaled, JPEG quality 90: what shoppers upload). Times: medians of per-photo times on 100 CCP
and 20 phone-sized photos, one thread. On all 502 phone-sized photos: labels / groups mAP from
either decode, and agreement of the parts /recommend returns (label per part, and the item the
bundle recommends for it), beside the agreement between the full decode of a photo and of the same
photo saved again at JPEG quality 95 (the model's own sensitivity to an invisible change).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from forward_engines import Answer, agreement  # bench/, beside this script
from PIL import Image

from indexer.bundle import Bundle, BundleStore
from indexer.search import DEFAULT_CANDIDATES, DEFAULT_MAX_PARTS, QueryPart, recommend_parts
from model.checkpoint import load_checkpoint
from model.data import ClothingCoParsing, data_dir, label_vector
from model.imaging import Placement, decode_image, letterbox, load_pixels, to_input
from model.metrics import multilabel_report
from model.network import DEFAULT_PART_THRESHOLD, PartAttentionNetwork, query_parts

SIZE = (384, 256)


def full(data: bytes) -> tuple[np.ndarray, Placement]:
    return letterbox(decode_image(data), SIZE)


def reduced(data: bytes) -> tuple[np.ndarray, Placement]:
    return load_pixels(data, SIZE)


def median_ms(fn: Callable[[bytes], tuple[np.ndarray, Placement]], photos: list[bytes], repeats: int) -> float:
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
def served(
    model: PartAttentionNetwork,
    bundle: Bundle,
    photos: list[bytes],
    decode: Callable[[bytes], tuple[np.ndarray, Placement]],
) -> tuple[list[Answer], np.ndarray]:
    """Each photo's parts as /recommend returns them, and its label probabilities."""
    searchable = bundle.searchable_labels
    answers, probabilities = [], []
    for data in photos:
        pixels, placement = decode(data)
        out = model(to_input(pixels)[None])
        parts = query_parts(model, out, 0, placement, DEFAULT_PART_THRESHOLD, DEFAULT_MAX_PARTS, searchable)
        query = [QueryPart(p.label, p.score, p.embedding.numpy(), p.box) for p in parts]
        matches = recommend_parts(bundle, query, DEFAULT_CANDIDATES)
        answers.append([(m.part.label, m.match.item_id if m.match else None) for m in matches])
        probabilities.append(model.probabilities(out.scores)[0].numpy())
    return answers, np.stack(probabilities)


FORMATS = {
    "JPEG": {"quality": 90},
    "HEIF": {"quality": 80},
    "AVIF": {"quality": 70},
    "WEBP": {"quality": 85},
    "PNG": {},
}


def format_costs(phone: list[bytes]) -> dict[str, object]:
    """Each photo type's bytes and median load_pixels time for the same phone-sized photos."""
    out: dict[str, object] = {}
    for fmt, options in FORMATS.items():
        encoded = []
        for data in phone:
            buffer = io.BytesIO()
            with Image.open(io.BytesIO(data)) as image:
                if fmt == "HEIF":  # pillow-heif encodes (a dev dependency); the service decodes with pi-heif
                    import pillow_heif

                    pillow_heif.from_pillow(image.convert("RGB")).save(buffer, **options)
                else:
                    image.convert("RGB").save(buffer, fmt, **options)
            encoded.append(buffer.getvalue())
        median_ms(reduced, encoded[:1], 1)  # warm the codec
        out[fmt] = {
            "mb": round(statistics.mean(len(d) for d in encoded) / 1e6, 2),
            "load_ms": round(median_ms(reduced, encoded, 3), 1),
        }
        print(fmt, json.dumps(out[fmt]), flush=True)
    return out


def reencoded(data: bytes) -> bytes:
    """The same photo saved again as a JPEG of quality 95: a change no shopper would see."""
    with Image.open(io.BytesIO(data)) as image:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--checkpoint", type=Path, default=Path("weights/ccp-attention.pt"))
    parser.add_argument("--bundles", type=Path, default=Path("bundles"))
    parser.add_argument(
        "--out", type=Path, default=None, help="default reports/decode.json (--formats: decode_formats)"
    )
    parser.add_argument("--formats", action="store_true", help="only each photo type's cost to load")
    args = parser.parse_args()
    args.out = args.out or Path("reports/decode_formats.json" if args.formats else "reports/decode.json")
    _, test = ClothingCoParsing(data_dir(args.data) / "ccp").split()
    ccp = [s.image.read_bytes() for s in test]
    report: dict[str, object] = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "size": SIZE}
    if args.formats:
        report["phone_sized_photos"] = 5
        report["formats"] = format_costs([phone_sized(data) for data in ccp[:5]])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        return
    phone = [phone_sized(data) for data in ccp]
    for name, photos, repeats in (("ccp", ccp[:100], 3), ("phone", phone[:20], 2)):
        median_ms(reduced, photos[:3], 1)  # warm the allocator and the codec
        rows = {"full decode": median_ms(full, photos, repeats), "reduced decode": median_ms(reduced, photos, repeats)}
        diff = [np.abs(full(d)[0].astype(int) - reduced(d)[0]).mean() for d in photos[:20]]
        report[name] = {
            "photos": len(photos),
            "ms": {k: round(v, 2) for k, v in rows.items()},
            "speed_up": round(rows["full decode"] / rows["reduced decode"], 2),
            "mean_abs_pixel_difference": round(float(np.mean(diff)), 3),
        }
        print(name, json.dumps(report[name]), flush=True)
    model, _ = load_checkpoint(args.checkpoint)
    model.eval()
    bundle = BundleStore(args.bundles).open()
    labels = model.config.labels
    targets = np.stack([label_vector(s, labels).numpy() for s in test])
    full_answers, full_probabilities = served(model, bundle, phone, full)
    fast_answers, fast_probabilities = served(model, bundle, phone, reduced)
    floor_answers, _ = served(model, bundle, [reencoded(d) for d in phone], full)
    quality = {}
    for name, probabilities in (("full decode", full_probabilities), ("reduced decode", fast_probabilities)):
        scores = multilabel_report(targets, probabilities, labels, model.config.classification)
        quality[name] = {level: round(scores[level]["map"], 2) for level in ("labels", "groups")}  # type: ignore[index]
    report["phone_sized_test_photos"] = {
        "photos": len(phone),
        "map": quality,
        "agreement_reduced_with_full": agreement(full_answers, fast_answers),
        "noise_floor_full_with_full_of_the_photo_saved_again_q95": agreement(full_answers, floor_answers),
    }
    print("phone-sized test photos", json.dumps(report["phone_sized_test_photos"]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
