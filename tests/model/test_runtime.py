"""The forward pass on OpenVINO and ONNX Runtime: PyTorch's outputs, exported once per checkpoint,
never a half-written export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from model.attention import crop_grid
from model.network import PartAttentionNetwork
from model.runtime import RuntimeUnavailable, make_forward, served_fields
from tests.helpers import tiny_config

EXPORTED = ["openvino", "onnxruntime"]


@pytest.fixture(scope="module")
def model() -> PartAttentionNetwork:
    torch.manual_seed(0)
    return PartAttentionNetwork(tiny_config()).eval()


def photos(model: PartAttentionNetwork, count: int) -> torch.Tensor:
    return torch.rand(
        count, 3, model.config.image_height, model.config.image_width, generator=torch.Generator().manual_seed(count)
    )


@pytest.mark.parametrize("runtime", EXPORTED)
def test_an_exported_runtime_gives_pytorchs_outputs_at_any_batch_size(
    runtime: str, model: PartAttentionNetwork, tmp_path: Path
) -> None:
    forward = make_forward(model, runtime, "a" * 64, tmp_path)  # type: ignore[arg-type]
    for count in (1, 3):
        images = photos(model, count)
        with torch.inference_mode():
            expected = model(images)
        got = forward(images)
        for name in served_fields(model):
            torch.testing.assert_close(getattr(got, name), getattr(expected, name), atol=1e-4, rtol=1e-4, msg=name)


def test_the_export_is_made_once_per_checkpoint(
    model: PartAttentionNetwork, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import openvino

    make_forward(model, "openvino", "a" * 64, tmp_path)
    (made,) = tmp_path.iterdir()
    assert made.name.startswith("aaaaaaaaaaaaaaaa-code") and "openvino" in made.name

    def no_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(openvino, "convert_model", no_export)
    forward = make_forward(model, "openvino", "a" * 64, tmp_path)  # read from the cache
    assert forward(photos(model, 1)).scores.shape == (1, len(model.config.labels))
    with pytest.raises(RuntimeUnavailable, match="exported again"):  # another checkpoint: another export
        make_forward(model, "openvino", "b" * 64, tmp_path)


def test_a_failed_export_leaves_nothing_behind(
    model: PartAttentionNetwork, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import openvino

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(openvino, "save_model", disk_full)
    with pytest.raises(OSError, match="No space"):
        make_forward(model, "openvino", "c" * 64, tmp_path)
    assert list(tmp_path.iterdir()) == []  # neither the export nor its staging folder


def test_a_damaged_cached_export_is_made_again(model: PartAttentionNetwork, tmp_path: Path) -> None:
    make_forward(model, "openvino", "d" * 64, tmp_path)
    (folder,) = tmp_path.iterdir()
    weights = folder / "model.bin"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # cut short
    forward = make_forward(model, "openvino", "d" * 64, tmp_path)
    images = photos(model, 2)
    with torch.inference_mode():
        torch.testing.assert_close(forward(images).scores, model(images).scores, atol=1e-4, rtol=1e-4)
    (folder / "fields.json").unlink()  # as a killed export would leave it: made again too
    make_forward(model, "openvino", "d" * 64, tmp_path)
    assert (folder / "fields.json").is_file()


def test_unknown_runtimes_are_refused_and_cuda_runs_pytorch(model: PartAttentionNetwork, tmp_path: Path) -> None:
    with pytest.raises(RuntimeUnavailable, match="unknown runtime"):
        make_forward(model, "tensorrt", "a" * 64, tmp_path)  # type: ignore[arg-type]
    # An exported runtime is for the CPU; asked for on a GPU device, the PyTorch model runs (on
    # whatever device it is: here the CPU) and nothing is exported.
    forward = make_forward(model, "openvino", "a" * 64, tmp_path, device="cuda")
    images = photos(model, 2)
    with torch.inference_mode():
        assert torch.equal(forward(images).scores, model(images).scores)
    assert list(tmp_path.iterdir()) == []


def test_the_crop_grid_is_affine_grid_without_rotation() -> None:
    transforms = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    sx, sy, tx, ty = transforms.unbind(-1)
    zero = torch.zeros_like(sx)
    matrices = torch.stack([sx, zero, tx, zero, sy, ty], -1).view(5, 2, 3)
    expected = F.affine_grid(matrices, [5, 8, 6, 4], align_corners=False)
    torch.testing.assert_close(crop_grid(transforms, 6, 4), expected, atol=1e-6, rtol=0)
