from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model.checkpoint import save_checkpoint
from model.network import PartAttentionNetwork
from tests.helpers import tiny_config
from tests.indexer.bad_maps import LABELS


@pytest.fixture(scope="session")
def shop_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny model with CCP's item labels and a product head (random, so its placements
    mean nothing): what a shop's category names are mapped onto."""
    torch.manual_seed(0)
    model = PartAttentionNetwork(tiny_config(labels=LABELS, product_labels=[*LABELS, "other"])).eval()
    return save_checkpoint(tmp_path_factory.mktemp("shop-ckpt") / "shop.pt", model)
