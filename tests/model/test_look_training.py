"""Instance-level training of the look head: InfoNCE pulls a product's views together."""

import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from model.look import LookHead
from model.look_training import LookConfig, head_cache, info_nce, label_pools, ranks, train_projection
from model.products import Product
from tests.helpers import tiny_config


def test_info_nce_is_low_when_each_view_is_nearest_its_own_product() -> None:
    anchors = torch.eye(3)
    index = torch.tensor([0, 1, 2, 2])
    right = info_nce(torch.eye(3)[index], anchors, index, temperature=0.1)
    wrong = info_nce(torch.eye(3)[torch.tensor([1, 2, 0, 0])], anchors, index, temperature=0.1)
    assert float(right) < 0.01 < 5 < float(wrong)


@pytest.mark.parametrize("input_dropout", [0.0, 0.3])
def test_training_brings_views_to_their_products(input_dropout: float) -> None:
    # 40 products, each a random feature vector; its re-shot views are noisy copies
    torch.manual_seed(0)
    products = torch.randn(40, 20)
    owner = torch.arange(40).repeat(3)
    views = products[owner] + 0.8 * torch.randn(120, 20)
    config = tiny_config(look_dim=8, look_hidden=32)
    head = LookHead(config, [4, 6])  # 2 * (4 + 6) = 20 features
    cfg = LookConfig(epochs=40, batch_size=32, lr=3e-3, input_dropout=input_dropout)
    history = train_projection(head, products, views, owner, cfg)
    assert history[-1] < history[0]
    with torch.inference_mode():
        found = ranks(
            head.embed(views).numpy(), head.embed(products).numpy(), owner.numpy(), [np.arange(40)] * len(views)
        )
    assert float(np.mean(found == 0)) > 0.8


def test_dropout_is_of_training_only() -> None:
    head = LookHead(tiny_config(look_dim=8, look_hidden=32), [4, 6])
    features = torch.randn(5, 20)
    head.train()
    assert not torch.equal(head.embed(features, 0.5), head.embed(features, 0.5))
    head.eval()
    torch.testing.assert_close(head.embed(features, 0.5), head.embed(features))


def test_a_trained_head_is_kept_by_its_training_settings_only(tmp_path: Path) -> None:
    base = LookConfig()
    same = head_cache(tmp_path, "k", base, "whole")
    # indexing-time settings do not train another head
    assert head_cache(tmp_path, "k", LookConfig(whole_share=0.3, colour_weight=0.1, skin_weight=0.5), "whole") == same
    without, with_dropout = (head_cache(tmp_path, "k", LookConfig(input_dropout=p), "whole") for p in (0.0, 0.3))
    assert without != with_dropout
    assert head_cache(tmp_path, "k", base, "crop") != same
    # a head trained without dropout keeps the name it had before the dropout and the whole share existed
    before = dict(reshots=6, epochs=30, batch_size=256, lr=1e-3, weight_decay=0.05, temperature=0.05)
    before.update(look_dim=256, hidden=512, seed=0, region="whole", colour_weight=0.0)
    name = f"head-k-{zlib.crc32(repr(sorted(before.items())).encode()):08x}.pt"
    assert head_cache(tmp_path, "k", LookConfig(input_dropout=0.0), "whole").name == name


def test_label_pools_hold_each_categorys_products(tmp_path: Path) -> None:
    products = [Product(str(i), tmp_path / f"{i}.jpg", label, False) for i, label in enumerate(["top", "bag", "top"])]
    pools = label_pools(products)
    assert pools["top"].tolist() == [0, 2] and pools["bag"].tolist() == [1]


def test_a_look_head_is_trained_on_a_product_set_and_written_into_the_checkpoint(tmp_path: Path) -> None:
    from PIL import Image

    from model.checkpoint import load_checkpoint, save_checkpoint
    from model.look_training import add_trained_look_head
    from model.network import PartAttentionNetwork, select_parts
    from tests.model.test_products import product_set

    root = product_set(tmp_path / "products", per_type=12)
    streets = []
    for i in range(3):
        streets.append(tmp_path / f"street{i}.jpg")
        Image.new("RGB", (60, 90), (90 + 40 * i, 90, 90)).save(streets[-1])
    model = PartAttentionNetwork(tiny_config(labels=["bag", "jeans", "belt"], pretrained=True)).eval()
    checkpoint = save_checkpoint(tmp_path / "best.pt", model, with_trunk=False, metrics={"validation": {"x": 1}})
    cfg = LookConfig(reshots=2, epochs=3, batch_size=16, look_dim=8, hidden=16, skin_weight=0.5)

    import model.look_training as look_training

    original = look_training.street_photos
    look_training.street_photos = lambda data=None: streets  # type: ignore[assignment]
    try:
        add_trained_look_head(checkpoint, root, cache=tmp_path / "cache", workers=0, cfg=cfg)
    finally:
        look_training.street_photos = original  # type: ignore[assignment]
    loaded, payload = load_checkpoint(checkpoint)
    assert loaded.config.look_dim == 8 and loaded.config.look_colour_weight == cfg.colour_weight
    assert loaded.config.look_skin_weight == 0.5 and loaded.look is not None and loaded.look.skin_weight == 0.5
    assert payload["metrics"]["validation"] == {"x": 1}  # what was there is kept
    look = payload["metrics"]["look"]
    assert len(look["history"]) == 3 and 0 <= look["validation_reshot"]["r1"] <= 1
    with torch.inference_mode():
        out = loaded(torch.rand(1, 3, 64, 48))
    (part,) = select_parts(loaded, out, 0, labels=["bag"])
    assert part.embedding.shape == (8 + 64,)


def test_more_reshots_compute_only_the_new_views_and_none_need_none(tmp_path: Path) -> None:
    from PIL import Image

    from model.checkpoint import save_checkpoint
    from model.look_training import look_data
    from model.network import PartAttentionNetwork
    from tests.model.test_products import product_set

    root = product_set(tmp_path / "products", per_type=12)
    street = tmp_path / "street.jpg"
    Image.new("RGB", (60, 90), (120, 90, 90)).save(street)
    model = PartAttentionNetwork(tiny_config(labels=["bag", "jeans", "belt"], pretrained=True)).eval()
    checkpoint = save_checkpoint(tmp_path / "best.pt", model, with_trunk=False)
    cache = tmp_path / "cache"
    one = look_data(model, checkpoint, root, [street], LookConfig(reshots=1), cache, workers=0)
    (first,) = cache.glob("train-view0-*.npz")
    written = first.stat().st_mtime_ns
    two = look_data(model, checkpoint, root, [street], LookConfig(reshots=2), cache, workers=0)
    assert first.stat().st_mtime_ns == written  # the first re-shots' views are read back, not computed again
    assert len(list(cache.glob("train-view*.npz"))) == 2
    n = len(one.train_rows)
    assert len(two.features["train"].crop) == len(two.train_owner) == 2 * n
    np.testing.assert_array_equal(two.features["train"].crop[:n], one.features["train"].crop)
    assert two.train_owner.tolist() == one.train_owner.tolist() * 2  # view-major: each view owned by its product
    none = look_data(model, checkpoint, root, [street], LookConfig(reshots=0), cache, workers=0)
    assert len(none.features["train"].crop) == len(none.train_owner) == 0  # scoring a fitted head needs none
    assert none.features["train"].crop.shape[1:] == one.features["train"].crop.shape[1:]
    np.testing.assert_array_equal(none.features["validation"].crop, one.features["validation"].crop)
