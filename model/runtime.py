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
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
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

# What serving and indexing read (query_parts, select_parts, product_parts, the global search); the training-only
# outputs (attention maps, codeword share, per-head scores) are not exported.
SERVED_FIELDS = (
    "scores",
    "global_embedding",
    "step_scores",
    "part_embeddings",
    "transforms",
    "product_scores",
    "part_looks",
    "whole_look",
)
_FORWARD_CODE = ("network.py", "attention.py", "encoding.py", "backbones.py", "config.py", "look.py", "runtime.py")


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
    """The SERVED_FIELDS this model produces (the global baseline has no parts, not every model a
    product head); a model whose parts are searched by their looks does not serve the crops'
    texture encodings."""
    with torch.inference_mode():
        out = model(torch.zeros(1, 3, model.config.image_height, model.config.image_width))
    unused = {"part_embeddings"} if out.part_looks is not None else set()
    return [name for name in SERVED_FIELDS if getattr(out, name) is not None and name not in unused]


def code_digest() -> str:
    """A digest of the source files that define the forward pass and its export."""
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
    precision: Literal["f32", "bf16"] = "f32",
) -> Forward:
    """The forward pass of ``model`` on ``runtime``. Exported runtimes run on the CPU: on a CUDA
    device the PyTorch model runs (and the log says so). ``precision`` bf16 is OpenVINO's, for
    measuring only (its answers differ: bench/forward_engines.py)."""
    if runtime not in RUNTIMES:
        raise RuntimeUnavailable(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if runtime == "pytorch" or device != "cpu":
        if runtime != "pytorch":
            log.info("runtime %s runs on the CPU only: PyTorch runs the model on %s", runtime, device)
        return _pytorch_forward(model)
    model = model.cpu().eval()
    folder = export_dir(cache_dir, runtime, checkpoint_sha256, (model.config.image_height, model.config.image_width))
    if runtime == "openvino":
        return _Exported(model, folder, _export_openvino, lambda f: _load_openvino(f, precision))
    return _Exported(model, folder, _export_onnx, _load_onnx)


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
    except (ImportError, OSError) as exc:  # OSError: a native library it needs is missing
        package = "openvino" if runtime == "openvino" else "'fashion-parts[onnx]'"
        raise RuntimeUnavailable(
            f"runtime {runtime} cannot be imported ({exc}): pip install {package}, or choose another "
            "(FASHION_RUNTIME=pytorch, --runtime pytorch)"
        ) from exc


def export_dir(cache_dir: Path, runtime: Runtime, checkpoint_sha256: str, size: tuple[int, int]) -> Path:
    """Where ``runtime``'s export of this checkpoint lives: a name that changes with the checkpoint,
    the code of the forward and of the export, torch (which traces it) and the runtime."""
    torch_version = torch.__version__.split("+")[0]
    key = (
        f"{checkpoint_sha256[:16]}-code{code_digest()}-torch{torch_version}-{runtime}{_runtime_version(runtime)}"
        f"-{size[0]}x{size[1]}"
    )
    return cache_dir / key


# (model, served field names, folder to write) -> None; (folder) -> (run one batch, output names)
Export = Callable[[PartAttentionNetwork, list[str], Path], None]
Runner = Callable[[np.ndarray], list[np.ndarray]]
Load = Callable[[Path], Runner]


class _Exported:
    """An exported forward: loaded from its cache folder, exported there first when missing, and
    exported again once when the cached copy cannot be loaded (a truncated file, a folder a
    killed export left). Calls are serialised: an inference request is not thread-safe."""

    def __init__(self, model: PartAttentionNetwork, folder: Path, export: Export, load: Load) -> None:
        self._lock = threading.Lock()
        size = (model.config.image_height, model.config.image_width)

        def export_to_folder() -> None:
            _write(folder, lambda staging: export(model, served_fields(model), staging))

        if not (folder / FIELDS).is_file():
            shutil.rmtree(folder, ignore_errors=True)  # an export that never finished
            export_to_folder()
        try:
            self.names, self._run = self._open(folder, load, size)
        except Exception as exc:  # a damaged cached export: made again, once
            log.warning("the cached export in %s cannot be loaded (%s): exporting again", folder, exc)
            shutil.rmtree(folder, ignore_errors=True)
            export_to_folder()
            try:
                self.names, self._run = self._open(folder, load, size)
            except Exception as again:
                raise RuntimeUnavailable(f"the export in {folder} cannot be loaded: {again}") from again

    @staticmethod
    def _open(folder: Path, load: Load, size: tuple[int, int]) -> tuple[list[str], Runner]:
        names = json.loads((folder / FIELDS).read_text())
        run = load(folder)
        probe = run(np.zeros((1, 3, *size), dtype=np.float32))  # fails here, not at the first photo
        if len(probe) != len(names):
            raise RuntimeUnavailable(f"the export in {folder} has {len(probe)} outputs for {len(names)} fields")
        return names, run

    def __call__(self, images: torch.Tensor) -> NetworkOutput:
        with self._lock:
            values = self._run(np.ascontiguousarray(images.cpu().numpy()))
        return NetworkOutput(**{name: torch.from_numpy(v) for name, v in zip(self.names, values, strict=True)})


FIELDS = "fields.json"  # the served fields, in output order: written last, so its presence marks a whole export


def _write(folder: Path, write: Callable[[Path], None]) -> None:
    """Run ``write`` into a temporary sibling of ``folder`` and rename it into place: a crash
    mid-export never leaves a half-written export under the real name."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        write(staging)
        staging.chmod(0o755)  # mkdtemp's 0700 would hide it from the other services sharing the cache
        try:
            os.replace(staging, folder)
        except OSError:
            if not (folder / FIELDS).is_file():
                raise
            shutil.rmtree(staging, ignore_errors=True)  # another process exported it first: theirs is as good
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _example(model: PartAttentionNetwork) -> torch.Tensor:
    return torch.rand(
        2, 3, model.config.image_height, model.config.image_width, generator=torch.Generator().manual_seed(0)
    )


def _export_openvino(model: PartAttentionNetwork, names: list[str], staging: Path) -> None:
    import openvino as ov

    log.info("exporting the model to OpenVINO (once per checkpoint; cached in %s)", staging.parent)
    try:
        with warnings.catch_warnings():  # the tracer's notes on constants (the channel count) are expected
            warnings.simplefilter("ignore")
            converted = ov.convert_model(
                _Served(model, names).eval(),
                example_input=_example(model),
                input=[(-1, 3, model.config.image_height, model.config.image_width)],
            )
    except Exception as exc:  # an operation the converter lacks
        raise RuntimeUnavailable(f"OpenVINO cannot convert this model: {str(exc).strip()[-300:]}") from exc
    ov.save_model(converted, staging / "model.xml", compress_to_fp16=False)
    (staging / FIELDS).write_text(json.dumps(names))


def _load_openvino(folder: Path, precision: str) -> Runner:
    import openvino as ov

    # float32 as PyTorch computes: the CPU plugin would otherwise pick bf16 where the CPU has it.
    config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    compiled = ov.Core().compile_model(folder / "model.xml", "CPU", config)
    request = compiled.create_infer_request()

    def run(images: np.ndarray) -> list[np.ndarray]:
        results = request.infer(images, share_inputs=True)
        return [results[output].copy() for output in compiled.outputs]  # the request reuses its buffers

    return run


def _export_onnx(model: PartAttentionNetwork, names: list[str], staging: Path) -> None:
    log.info("exporting the model to ONNX (once per checkpoint; cached in %s)", staging.parent)
    for name in ("onnx_ir", "onnxscript"):  # a line per rewrite pass otherwise
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        torch.onnx.export(
            _Served(model, names).eval(),
            (_example(model),),
            staging / "model.onnx",
            input_names=["images"],
            output_names=names,
            dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1, max=1024)}},
            dynamo=True,
        )
    except ImportError as exc:
        raise RuntimeUnavailable(f"the ONNX exporter is missing ({exc}): pip install 'fashion-parts[onnx]'") from exc
    (staging / FIELDS).write_text(json.dumps(names))


def _load_onnx(folder: Path) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])

    def run(images: np.ndarray) -> list[np.ndarray]:
        return list(session.run(None, {"images": images}))

    return run
