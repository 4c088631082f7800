"""What only a GPU machine can check: the model on CUDA gives the CPU's answers, FAISS on the GPU
builds the index the CPU builds, and the service answers with FASHION_DEVICE=cuda. Skipped where
there is no CUDA device (run by bench/gpu_check.sh on a machine that has one)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from app.main import create_app
from indexer.faiss_index import build_index, gpu_available
from model.network import PartAttentionNetwork, select_parts
from model.runtime import make_forward
from tests.app.conftest import make_settings, photo_bytes
from tests.helpers import tiny_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_the_model_on_cuda_gives_the_cpus_parts() -> None:
    torch.manual_seed(0)
    model = PartAttentionNetwork(tiny_config()).eval()
    images = torch.rand(4, 3, model.config.image_height, model.config.image_width)
    with torch.inference_mode():
        on_cpu = model(images)
    forward = make_forward(model.to("cuda"), "openvino", "a" * 64, device="cuda")  # PyTorch on CUDA
    on_gpu = forward(images)
    torch.testing.assert_close(on_gpu.scores.cpu(), on_cpu.scores, atol=1e-3, rtol=1e-3)
    for i in range(4):
        cpu_parts = [p.label for p in select_parts(model, on_cpu, i, max_parts=3)]
        gpu_parts = [p.label for p in select_parts(model, on_gpu, i, max_parts=3)]
        assert gpu_parts == cpu_parts


@pytest.mark.skipif(not gpu_available(), reason="faiss sees no GPU (pip install '.[gpu]')")
def test_faiss_on_the_gpu_builds_the_cpus_index() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3000, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(3000, dtype=np.int64)
    on_cpu = build_index(vectors, ids, "IVF32,Flat", use_gpu=False)
    on_gpu = build_index(vectors, ids, "IVF32,Flat", use_gpu=True)
    for index in (on_cpu, on_gpu):
        index.nprobe = 32  # every list: exact, so both must agree
    _, found_cpu = on_cpu.search(vectors[:50], 5)
    _, found_gpu = on_gpu.search(vectors[:50], 5)
    assert (found_cpu[:, 0] == ids[:50]).all() and (found_gpu[:, 0] == ids[:50]).all()


def test_the_service_answers_on_cuda(tiny_checkpoint: Path, bundles_dir: Path, catalogue_dir: Path) -> None:
    settings = make_settings(tiny_checkpoint, bundles_dir, catalogue_dir, device="cuda")
    with TestClient(create_app(settings)) as client:
        response = client.post("/recommend", files={"image": ("p.jpg", photo_bytes(), "image/jpeg")})
    assert response.status_code == 200, response.text
    items = [p["item"]["id"] for p in response.json()["parts"] if p["item"]]
    assert items and len(items) == len(set(items))
