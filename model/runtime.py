"""Where the forward pass runs: PyTorch (the source of truth), OpenVINO or ONNX Runtime.

The checkpoint stays the one artefact. A runtime other than PyTorch exports the checkpoint's model
on first use (the whole network: trunk, crops by grid_sample, the LSTM steps, the encodings) and
caches the exported file under a name made of the checkpoint's SHA-256, the code that defines the
forward, the runtime's version and the input size, so a changed model, code or runtime never reads
a stale export. Exported models compute in float32 and are checked against PyTorch by
``bench/forward_engines.py`` (labels, recommended items, mAP).

A forward object is called from one thread at a time (the service's inference thread, the
indexer's loop), as the PyTorch model is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from model.errors import ModelError
from model.network import NetworkOutput, PartAttentionNetwork

log = logging.getLogger(__name__)

Runtime = Literal["pytorch", "openvino", "onnxruntime"]
RUNTIMES: tuple[Runtime, ...] = ("pytorch", "openvino", "onnxruntime")
DEFAULT_RUNTIME: Runtime = "openvino"  # fastest here with the same answers (README, bench/forward_engines.py)
# Exports live here: FASHION_RUNTIME_CACHE (for the service and the indexer's command alike), else .cache/runtime.
DEFAULT_CACHE = Path(os.environ.get("FASHION_RUNTIME_CACHE") or ".cache/runtime")
Forward = Callable[[torch.Tensor], NetworkOutput]  # (B, 3, H, W) photos in [0, 1] -> outputs on the CPU

# What serving and indexing read (select_parts, product_parts, the global search); the training-only
# outputs (attention maps, codeword share, per-head scores) are not exported.
SERVED_FIELDS = ("scores", "global_embedding", "step_scores", "part_embeddings", "transforms", "product_scores")
_FORWARD_CODE = ("network.py", "attention.py", "encoding.py", "backbones.py", "config.py")


class RuntimeUnavailable(ModelError):
    """The chosen runtime is not installed or cannot run this model."""


class _Served(nn.Module):
    """The network with a tuple of plain tensors out: what exporters trace."""

    def __init__(self, model: PartAttentionNetwork, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(images)
        return tuple(getattr(out, name) for name in self.names)


def served_fields(model: PartAttentionNetwork) -> list[str]:
    """The SERVED_FIELDS this model produces (the global baseline has no parts, not every model a product head)."""
    with torch.inference_mode():
        out = model(torch.zeros(1, 3, model.config.image_height, model.config.image_width))
    return [name for name in SERVED_FIELDS if getattr(out, name) is not None]


def code_digest() -> str:
    """A digest of the source files that define the forward pass."""
    digest = hashlib.sha256()
    for name in _FORWARD_CODE:
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()[:12]


def make_forward(
    model: PartAttentionNetwork,
    runtime: Runtime,
    checkpoint_sha256: str,
    cache_dir: Path = DEFAULT_CACHE,
    device: str = "cpu",
) -> Forward:
    """The forward pass of ``model`` on ``runtime``. Exported runtimes run on the CPU: on a CUDA
    device the PyTorch model runs (and the log says so)."""
    if runtime == "pytorch" or device != "cpu":
        if runtime != "pytorch":
            log.info("runtime %s runs on the CPU only: PyTorch runs the model on %s", runtime, device)
        return _pytorch_forward(model)
    model = model.cpu().eval()
    names = served_fields(model)
    size = (model.config.image_height, model.config.image_width)
    if runtime == "openvino":
        return _OpenVINOForward(model, names, export_dir(cache_dir, runtime, checkpoint_sha256, size))
    if runtime == "onnxruntime":
        return _OnnxRuntimeForward(model, names, export_dir(cache_dir, runtime, checkpoint_sha256, size))
    raise RuntimeUnavailable(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")


def _pytorch_forward(model: PartAttentionNetwork) -> Forward:
    device = next(model.parameters()).device

    @torch.inference_mode()
    def forward(images: torch.Tensor) -> NetworkOutput:
        return model(images.to(device))

    return forward


def _runtime_version(runtime: Runtime) -> str:
    try:
        if runtime == "openvino":
            import openvino

            return str(openvino.__version__).split("-")[0]
        import onnxruntime

        return str(onnxruntime.__version__)
    except ImportError as exc:
        extra = "" if runtime == "openvino" else " (pip install 'fashion-parts[onnx]')"
        raise RuntimeUnavailable(f"runtime {runtime} is not installed{extra}: {exc}") from exc


def export_dir(cache_dir: Path, runtime: Runtime, checkpoint_sha256: str, size: tuple[int, int]) -> Path:
    key = f"{checkpoint_sha256[:16]}-code{code_digest()}-{runtime}{_runtime_version(runtime)}-{size[0]}x{size[1]}"
    return cache_dir / key


def _cached(folder: Path, write: Callable[[Path], None]) -> Path:
    """``folder``, written by ``write`` into a temporary sibling and renamed into place when
    missing: a crash mid-export never leaves a half-written export under the real name."""
    if (folder / "fields.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        write(staging)
        try:
            os.replace(staging, folder)
        except OSError:  # another process exported it first: theirs is as good
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def _example(model: PartAttentionNetwork) -> torch.Tensor:
    return torch.rand(
        2, 3, model.config.image_height, model.config.image_width, generator=torch.Generator().manual_seed(0)
    )


class _OpenVINOForward:
    def __init__(self, model: PartAttentionNetwork, names: list[str], folder: Path) -> None:
        import openvino as ov

        def export(staging: Path) -> None:
            log.info("exporting the model to OpenVINO (once per checkpoint; cached in %s)", folder)
            with warnings.catch_warnings():  # the tracer's notes on constants (the channel count) are expected
                warnings.simplefilter("ignore")
                converted = ov.convert_model(
                    _Served(model, names).eval(),
                    example_input=_example(model),
                    input=[(-1, 3, model.config.image_height, model.config.image_width)],
                )
            ov.save_model(converted, staging / "model.xml", compress_to_fp16=False)
            (staging / "fields.json").write_text(json.dumps(names))

        folder = _cached(folder, export)
        self.names = json.loads((folder / "fields.json").read_text())
        # float32 as PyTorch computes: the CPU plugin would otherwise pick bf16 where the CPU has it.
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        self.compiled = ov.Core().compile_model(folder / "model.xml", "CPU", config)
        self.request = self.compiled.create_infer_request()

    def __call__(self, images: torch.Tensor) -> NetworkOutput:
        results = self.request.infer(images.cpu().numpy(), share_inputs=True)
        values = [torch.from_numpy(results[output].copy()) for output in self.compiled.outputs]
        return NetworkOutput(**dict(zip(self.names, values, strict=True)))


class _OnnxRuntimeForward:
    def __init__(self, model: PartAttentionNetwork, names: list[str], folder: Path) -> None:
        import onnxruntime as ort

        def export(staging: Path) -> None:
            log.info("exporting the model to ONNX (once per checkpoint; cached in %s)", folder)
            batch = torch.export.Dim("batch", min=1, max=1024)
            for name in ("onnx_ir", "onnxscript"):  # a line per rewrite pass otherwise
                logging.getLogger(name).setLevel(logging.WARNING)
            torch.onnx.export(
                _Served(model, names).eval(),
                (_example(model),),
                staging / "model.onnx",
                input_names=["images"],
                output_names=names,
                dynamic_shapes={"images": {0: batch}},
                dynamo=True,
            )
            (staging / "fields.json").write_text(json.dumps(names))

        folder = _cached(folder, export)
        self.names = json.loads((folder / "fields.json").read_text())
        options = ort.SessionOptions()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])

    def __call__(self, images: torch.Tensor) -> NetworkOutput:
        results = self.session.run(self.names, {"images": images.cpu().numpy()})
        return NetworkOutput(**{name: torch.from_numpy(value) for name, value in zip(self.names, results, strict=True)})
