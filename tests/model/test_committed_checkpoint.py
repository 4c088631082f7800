"""The committed model (weights/ccp-attention.pt): it loads with the current code, is compact, and
still scores on its validation photos what its training run recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from app.settings import Settings
from model.checkpoint import load_checkpoint
from model.data import ClothingCoParsing, label_vector, load_image
from model.metrics import multilabel_report

COMMITTED = Path(__file__).resolve().parents[2] / "weights" / "ccp-attention.pt"
MAX_BYTES = 20 * 1024 * 1024


def test_committed_checkpoint_is_the_served_default_and_compact() -> None:
    assert Settings().checkpoint == Path("weights/ccp-attention.pt")
    assert COMMITTED.is_file() and COMMITTED.stat().st_size <= MAX_BYTES


def test_committed_checkpoint_reproduces_its_validation_figures(ccp_root: Path) -> None:
    model, payload = load_checkpoint(COMMITTED)
    recorded = payload["metrics"]["validation"]
    names = set(payload["validation_photos"])
    train, _ = ClothingCoParsing(ccp_root).split()
    samples = [s for s in train if s.image.name in names]
    assert len(samples) == len(names) == 150
    labels, size = model.config.labels, (model.config.image_height, model.config.image_width)
    probabilities = []
    with torch.inference_mode():
        for i in range(0, len(samples), 16):
            images = torch.stack([load_image(s.image, size) for s in samples[i : i + 16]])
            probabilities.append(model.probabilities(model(images).scores))
    targets = torch.stack([label_vector(s, labels) for s in samples]).numpy()
    report = multilabel_report(targets, torch.cat(probabilities).numpy(), labels, model.config.classification)
    for level in ("labels", "groups"):  # float16 weights, trunk run afresh rather than cached: a little drift
        assert np.isclose(report[level]["map"], recorded[level]["map"], atol=0.5), (level, report, recorded)  # type: ignore[index]
