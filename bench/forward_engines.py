"""The forward pass on each runtime, beside PyTorch eager, in one run; and whether they answer alike.

    python bench/forward_engines.py --bundles bundles --out reports/forward_engines.json

Speed: the model alone on decoded, letterboxed CCP test photos, batch 1 (one photo at a time)
and batch 16, per photo, for PyTorch eager (today's forward), PyTorch channels-last, OpenVINO and
ONNX Runtime in float32 (model.runtime), and OpenVINO in bfloat16 (for the record: its answers
differ). ``--compile`` adds torch.compile (minutes of compiling); ``--int8`` adds OpenVINO with the
trunk in int8 (NNCF's post-training quantisation, calibrated on training photos; ``pip install
'.[quantize]'``).

Agreement with eager on all 502 CCP test photos, as served (the service's part threshold and
parts per query): the same label at each rank of a photo's parts, the same recommended item from
the bundle for each part, and the labels / groups mAP of the test split.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer.bundle import BundleStore  # noqa: E402
from indexer.search import DEFAULT_CANDIDATES, DEFAULT_MAX_PARTS, QueryPart, recommend_parts  # noqa: E402
from model.checkpoint import file_sha256, load_checkpoint  # noqa: E402
from model.data import ClothingCoParsing, data_dir, label_vector  # noqa: E402
from model.imaging import load_input  # noqa: E402
from model.metrics import multilabel_report  # noqa: E402
from model.network import DEFAULT_PART_THRESHOLD, NetworkOutput, PartAttentionNetwork, query_parts  # noqa: E402
from model.runtime import DEFAULT_CACHE, SERVED_FIELDS, Forward, export_dir, make_forward, served_fields  # noqa: E402
from model.train import TrainConfig  # noqa: E402

Answer = list[tuple[str, str | None]]  # (label, recommended item) of each part of a photo, in order
CALIBRATION_PHOTOS = 300  # int8's calibration: training photos (never validation or test)


def per_photo_ms(forward: Forward, photos: torch.Tensor, batch: int, repeats: int) -> float:
    """Median over ``repeats`` passes of ms per photo, batches of ``batch``, after one warm-up pass."""
    chunks = [photos[i : i + batch] for i in range(0, len(photos) - batch + 1, batch)]
    forward(chunks[0])
    passes = []
    for _ in range(repeats):
        started = time.perf_counter()
        for chunk in chunks:
            forward(chunk)
        passes.append((time.perf_counter() - started) / (len(chunks) * batch))
    return round(1000 * float(np.median(passes)), 2)


def outputs(forward: Forward, photos: torch.Tensor) -> NetworkOutput:
    """All photos through ``forward`` in batches of 16, concatenated."""
    parts = [forward(photos[i : i + 16]) for i in range(0, len(photos), 16)]
    return NetworkOutput(
        **{
            name: torch.cat([getattr(p, name) for p in parts]).float()
            for name in SERVED_FIELDS
            if getattr(parts[0], name) is not None
        }
    )


def served(model: PartAttentionNetwork, out: NetworkOutput, placements: list[Any], bundle: Any) -> list[Answer]:
    """Per photo: (label, recommended item id) of each part, as /recommend returns them."""
    answers = []
    searchable = bundle.searchable_labels
    for i, placement in enumerate(placements):
        found = query_parts(model, out, i, placement, DEFAULT_PART_THRESHOLD, DEFAULT_MAX_PARTS, searchable)
        query = [QueryPart(p.label, p.score, p.embedding.numpy(), p.box) for p in found]
        matches = recommend_parts(bundle, query, DEFAULT_CANDIDATES)
        by_label = {m.part.label: (m.match.item_id if m.match else None) for m in matches}
        answers.append([(p.label, by_label.get(p.label)) for p in found])
    return answers


def agreement(reference: list[Answer], other: list[Answer]) -> dict[str, float]:
    """Parts with the same label (and item) at the same rank, and parts whose (label, item) is
    anywhere among the other's parts of that photo (the same parts in another order)."""
    same_label = same_item = same_anywhere = total = 0
    for ours, theirs in zip(reference, other, strict=True):
        total += max(len(ours), len(theirs))
        same_label += sum(a[0] == b[0] for a, b in zip(ours, theirs, strict=False))
        same_item += sum(a == b for a, b in zip(ours, theirs, strict=False))
        same_anywhere += len(set(ours) & set(theirs))
    return {
        "parts": total,
        "same_label_at_rank": round(same_label / total, 4),
        "same_item_at_rank": round(same_item / total, 4),
        "same_label_and_item_anywhere": round(same_anywhere / total, 4),
    }


def int8_trunk(model: PartAttentionNetwork, checkpoint: Path, cache: Path, calibration: list[np.ndarray]) -> Forward:
    """OpenVINO with the trunk's convolutions in int8: NNCF's post-training quantisation of the
    float32 export, its activation ranges from ``calibration``; the fusion, the attention head and
    the product head stay float32 (quantising them too changed still more answers)."""
    import nncf
    import openvino as ov

    sha = file_sha256(checkpoint)
    make_forward(model, "openvino", sha, cache)  # the float32 export, made when missing
    size = (model.config.image_height, model.config.image_width)
    f32 = ov.Core().read_model(export_dir(cache, "openvino", sha, size) / "model.xml")
    not_trunk = [r".*model\.head.*", r".*model\.reduce.*", r".*model\.product_head.*"]
    quantized = nncf.quantize(
        f32,
        nncf.Dataset(calibration),
        subset_size=len(calibration),
        ignored_scope=nncf.IgnoredScope(patterns=not_trunk, validate=False),
    )
    config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}  # as model.runtime's float32
    compiled = ov.Core().compile_model(quantized, "CPU", config)
    request, names = compiled.create_infer_request(), served_fields(model)

    def forward(images: torch.Tensor) -> NetworkOutput:
        results = request.infer(np.ascontiguousarray(images.numpy()), share_inputs=True)
        values = [results[output].copy() for output in compiled.outputs]
        return NetworkOutput(**{n: torch.from_numpy(v) for n, v in zip(names, values, strict=True)})

    return forward


def calibration_photos(size: tuple[int, int]) -> list[np.ndarray]:
    """CALIBRATION_PHOTOS of the photos training fits on (as model.train splits them), one per batch."""
    # training's own defaults (a dataclass keeps them on the class)
    fit, _ = ClothingCoParsing(data_dir() / "ccp").validation_split(TrainConfig.val_fraction, TrainConfig.seed)
    picked = np.random.default_rng(0).choice(len(fit), min(CALIBRATION_PHOTOS, len(fit)), replace=False)
    return [load_input(fit[i].image.read_bytes(), size)[0].numpy()[None] for i in picked]


def engines(
    model: PartAttentionNetwork, checkpoint: Path, cache: Path, compile_too: bool, int8_too: bool
) -> dict[str, Forward]:
    sha = file_sha256(checkpoint)
    found: dict[str, Forward] = {"pytorch eager": make_forward(model, "pytorch", sha)}
    last = copy.deepcopy(model).to(memory_format=torch.channels_last).eval()  # type: ignore[call-overload]

    @torch.inference_mode()
    def channels_last(images: torch.Tensor) -> NetworkOutput:
        return last(images.contiguous(memory_format=torch.channels_last))

    found["pytorch channels-last"] = channels_last
    if compile_too:
        compiled = torch.compile(model)
        found["pytorch torch.compile"] = torch.inference_mode()(compiled)
    found["openvino f32"] = make_forward(model, "openvino", sha, cache)
    found["onnxruntime f32"] = make_forward(model, "onnxruntime", sha, cache)
    found["openvino bf16 (answers differ)"] = make_forward(model, "openvino", sha, cache, precision="bf16")
    if int8_too:
        size = (model.config.image_height, model.config.image_width)
        found["openvino int8 trunk (answers differ)"] = int8_trunk(model, checkpoint, cache, calibration_photos(size))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("weights/ccp-attention.pt"))
    parser.add_argument("--bundles", type=Path, default=Path("bundles"), help="a bundle built with the checkpoint")
    parser.add_argument("--runtime-cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--timed-photos", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--int8", action="store_true", help="also time the trunk in int8 (pip install '.[quantize]')")
    parser.add_argument("--out", type=Path, default=Path("reports/forward_engines.json"))
    args = parser.parse_args()

    model, _ = load_checkpoint(args.checkpoint)
    bundle = BundleStore(args.bundles).open()
    _, test = ClothingCoParsing(data_dir() / "ccp").split()
    size = (model.config.image_height, model.config.image_width)
    decoded = [load_input(s.image.read_bytes(), size) for s in test]
    photos = torch.stack([t for t, _ in decoded])
    placements = [p for _, p in decoded]
    targets = torch.stack([label_vector(s, model.config.labels) for s in test]).numpy()
    print(f"{len(test)} test photos; fields {served_fields(model)}", flush=True)

    rows: dict[str, dict[str, Any]] = {}
    reference: list[Answer] = []
    for name, forward in engines(model, args.checkpoint, args.runtime_cache, args.compile, args.int8).items():
        row: dict[str, Any] = {
            "batch_1_ms_per_photo": per_photo_ms(forward, photos[: args.timed_photos], 1, args.repeats),
            "batch_16_ms_per_photo": per_photo_ms(forward, photos[: args.timed_photos], 16, args.repeats),
        }
        out = outputs(forward, photos)
        probabilities = model.probabilities(out.scores).numpy()
        report = multilabel_report(targets, probabilities, model.config.labels, model.config.classification)
        row["labels_map"] = round(report["labels"]["map"], 2)  # type: ignore[index]
        row["groups_map"] = round(report["groups"]["map"], 2)  # type: ignore[index]
        answers = served(model, out, placements, bundle)
        if not reference:
            reference = answers
        row.update(agreement(reference, answers))
        rows[name] = row
        print(name, row, flush=True)
    eager = rows["pytorch eager"]
    for row in rows.values():
        row["speed-up_batch_1"] = round(eager["batch_1_ms_per_photo"] / row["batch_1_ms_per_photo"], 2)
        row["speed-up_batch_16"] = round(eager["batch_16_ms_per_photo"] / row["batch_16_ms_per_photo"], 2)
        row["labels_map_change"] = round(row["labels_map"] - eager["labels_map"], 2)
        row["groups_map_change"] = round(row["groups_map"] - eager["groups_map"], 2)
    result = {
        "checkpoint": str(args.checkpoint),
        "bundle": bundle.version,
        "test_photos": len(test),
        "timed_photos": args.timed_photos,
        "torch_threads": torch.get_num_threads(),
        "engines": rows,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or platform.platform()}",
        "versions": {"torch": torch.__version__, **_versions()},
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("openvino", "onnxruntime", "nncf"):
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return found


if __name__ == "__main__":
    main()
