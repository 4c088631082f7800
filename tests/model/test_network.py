import pytest
import torch

from model.attention import config_anchors, soft_box_maps
from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import ModelConfig
from model.imaging import letterbox_placement
from model.losses import total_loss
from model.network import PartAttentionNetwork, part_box, select_parts, transform_to_box
from tests.helpers import tiny_config


def test_shapes() -> None:
    cfg = tiny_config()
    out = PartAttentionNetwork(cfg).eval()(torch.rand(2, 3, 64, 48))
    assert out.scores.shape == (2, 3)
    assert out.step_scores is not None and out.step_scores.shape == (2, 3, 3)
    assert out.part_embeddings is not None and out.part_embeddings.shape == (2, 3, cfg.embedding_dim)
    assert out.transforms is not None and out.transforms.shape == (2, 3, 4)
    assert out.maps is not None and out.maps.shape == (2, 3, 4, 3)
    torch.testing.assert_close(out.maps.sum((-2, -1)), torch.ones(2, 3))
    # fused: the mean of the best crop's logit and the whole map's; each branch kept for its own loss
    assert out.crop_scores is not None and out.whole_scores is not None
    torch.testing.assert_close(out.crop_scores, out.step_scores.amax(1))
    torch.testing.assert_close(out.scores, (out.crop_scores + out.whole_scores) / 2)
    torch.testing.assert_close(out.global_embedding.norm(dim=-1), torch.ones(2))


def test_crops_alone_score_without_whole_map_scores() -> None:
    out = PartAttentionNetwork(tiny_config(whole_scores=False)).eval()(torch.rand(2, 3, 64, 48))
    assert out.whole_scores is None and out.step_scores is not None
    torch.testing.assert_close(out.scores, out.step_scores.amax(1))


def test_global_baseline_shapes() -> None:
    out = PartAttentionNetwork(tiny_config(architecture="global")).eval()(torch.rand(2, 3, 64, 48))
    assert out.scores.shape == (2, 3) and out.step_scores is None and out.global_embedding.shape == (2, 8)


@pytest.mark.parametrize("architecture", ["attention", "global", "ring-anchored"])
def test_gradients_reach_every_trainable_parameter(architecture: str) -> None:
    extra = {"anchors": "ring"} if architecture == "ring-anchored" else {"architecture": architecture}
    model = PartAttentionNetwork(tiny_config(**extra)).train()
    out = model(torch.rand(2, 3, 64, 48))
    anchors = config_anchors(model.config)
    items = [[(0, torch.tensor([-0.5, -0.5, 0.0, 0.5]), torch.ones(4, 3))], []]
    targets = torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    terms = total_loss(out, targets, anchors=anchors, items=items, box_weight=1.0, centre_weight=1.0)
    terms["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]
    assert missing == []
    if architecture != "global":  # the spatial transformer's own parameters learn through grid_sample
        assert model.attention.place.query.weight.grad.abs().sum() > 0  # type: ignore[union-attr]


def test_soft_box_map_covers_the_transformed_region() -> None:
    maps = soft_box_maps(torch.tensor([[[0.5, 0.5, -0.5, 0.5]]]), height=8, width=8, sharpness=50.0)
    # the box spans x in [-1, 0] and y in [0, 1]: the bottom-left quarter of the grid
    assert float(maps[0, 0, 4:, :4].sum()) > 0.95


def test_transform_to_box_maps_to_pixels() -> None:
    assert transform_to_box(torch.tensor([0.5, 0.5, 0.0, 0.0]), 200, 400) == (50.0, 100.0, 150.0, 300.0)
    assert transform_to_box(torch.tensor([2.0, -0.25, 0.5, -0.75]), 200, 400) == (0.0, 0.0, 200.0, 100.0)


def test_select_parts_picks_the_step_that_found_each_label() -> None:
    model = PartAttentionNetwork(tiny_config()).eval()
    with torch.inference_mode():
        out = model(torch.rand(1, 3, 64, 48))
    placement = letterbox_placement(480, 640, (64, 48))[0]
    parts = select_parts(model, out, 0, placement)
    assert [p.label for p in parts] == [model.config.labels[i] for i in out.scores[0].argsort(descending=True)]
    for p in parts:
        c = model.config.labels.index(p.label)
        assert p.step == int(out.step_scores[0, :, c].argmax())  # type: ignore[index]
        torch.testing.assert_close(p.embedding, out.part_embeddings[0, p.step])  # type: ignore[index]
        assert 0 <= p.box[0] <= p.box[2] <= 480 and 0 <= p.box[1] <= p.box[3] <= 640
    assert len(select_parts(model, out, 0, placement, max_parts=2)) == 2
    assert all(p.box is None for p in select_parts(model, out, 0))  # no placement, no box (catalogue side)


def test_part_box_goes_through_the_letterbox() -> None:
    # a 200 x 200 photo in a 64 x 48 (portrait) input: it fills the width and sits in the middle
    placement = letterbox_placement(200, 200, (64, 48))[0]
    assert part_box(torch.tensor([1.0, 1.0, 0.0, 0.0]), placement) == (0.0, 0.0, 200.0, 200.0)
    top = part_box(torch.tensor([1.0, 0.125, 0.0, -0.875]), placement)  # the input's top eighth: padding
    assert top[3] == 0.0


def test_crops_stay_on_the_photo_and_start_spread_out() -> None:
    model = PartAttentionNetwork(tiny_config(steps=9)).eval()
    with torch.inference_mode():
        t = model(torch.rand(4, 3, 64, 48)).transforms
    assert t is not None
    assert (t[..., 2:].abs() < 1).all() and (t[..., :2] >= 0.05).all() and (t[..., :2] <= 1.0).all()
    # the nine crops of one photo start on a 3 x 3 grid: their centres span the photo
    assert float(t[0, :, 3].max() - t[0, :, 3].min()) > 0.8 and float(t[0, :, 2].max() - t[0, :, 2].min()) > 0.8


def test_multiscale_trunk_gives_stride_16_and_32_maps() -> None:
    model = PartAttentionNetwork(tiny_config())
    maps = model.trunk_forward(torch.rand(1, 3, 64, 48))
    assert [tuple(m.shape[1:]) for m in maps] == [(112, 4, 3), (1280, 2, 2)]
    single = PartAttentionNetwork(tiny_config(multiscale=False)).trunk_forward(torch.rand(1, 3, 64, 48))
    assert [tuple(m.shape[1:]) for m in single] == [(112, 4, 3)]


def test_checkpoint_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = PartAttentionNetwork(tiny_config()).eval()
    path = save_checkpoint(tmp_path / "m.pt", model, metrics={"test": {"map": 12.5}})
    loaded, payload = load_checkpoint(path)
    assert loaded.config == model.config and payload["metrics"]["test"]["map"] == 12.5
    assert payload["labels"] == ["red", "green", "blue"] and payload["input_size"] == [64, 48]
    x = torch.rand(1, 3, 64, 48)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x).scores, model(x).scores)


def test_checkpoint_from_before_whole_map_scores_loads_without_them(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = PartAttentionNetwork(tiny_config(whole_scores=False)).eval()
    path = save_checkpoint(tmp_path / "m.pt", model)
    payload = torch.load(path, weights_only=True)
    del payload["config"]["whole_scores"]  # as written before the option existed
    torch.save(payload, path)
    loaded, _ = load_checkpoint(path)
    assert loaded.config.whole_scores is False


def test_compact_checkpoint_leaves_out_the_packaged_trunk_and_stores_half(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = PartAttentionNetwork(tiny_config(pretrained=True)).eval()  # the trunk: the package's ImageNet weights
    full = save_checkpoint(tmp_path / "full.pt", model)
    compact = save_checkpoint(tmp_path / "compact.pt", model, with_trunk=False, half=True)
    assert compact.stat().st_size < full.stat().st_size / 10
    loaded, payload = load_checkpoint(compact)
    assert payload["trunk_stored"] is False
    assert all(not k.startswith("trunk.") for k in payload["state_dict"])
    x = torch.rand(2, 3, 64, 48)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.trunk_forward(x), model.trunk_forward(x))  # the same ImageNet trunk
        torch.testing.assert_close(loaded(x).scores, model(x).scores, atol=2e-2, rtol=1e-2)  # float16 weights
    untrained = PartAttentionNetwork(tiny_config()).eval()  # random trunk: nothing to load it from
    save_checkpoint(tmp_path / "lost.pt", untrained, with_trunk=False)
    with pytest.raises(ValueError, match="no trunk weights"):
        load_checkpoint(tmp_path / "lost.pt")


@pytest.mark.parametrize(
    "overrides", [{"trunk": "vgg"}, {"labels": []}, {"image_height": 50}, {"steps": 0}, {"classification": "hinge"}]
)
def test_config_rejects_bad_values(overrides: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError):
        ModelConfig(**{"labels": ["a"], **overrides})


def test_efficientnet_trunk_loads_shipped_imagenet_weights() -> None:
    from model.backbones import EfficientNetLite0, lite0_weights_path

    net = EfficientNetLite0(classifier=True)
    net.load_reference_weights(lite0_weights_path())  # strict: every key must match
    assert net.stem[0].weight.abs().sum() > 0
