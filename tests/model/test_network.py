import pytest
import torch

from model.attention import config_anchors, soft_box_maps
from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import ModelConfig
from model.errors import CheckpointError
from model.imaging import Placement, letterbox_placement
from model.losses import Item, total_loss
from model.network import (
    NetworkOutput,
    PartAttentionNetwork,
    part_box,
    photo_parts,
    query_parts,
    select_parts,
    transform_to_box,
)
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


PLACEMENT = "head.attention.place."  # the spatial transformer: where each crop goes
CROP_SCORER = "head.attention.classify."  # s_k from each crop's encoding
WHOLE_SCORER = "head.whole."  # the whole map's scores


def training_terms(trunk: bool = False, **overrides: object) -> tuple[PartAttentionNetwork, dict[str, torch.Tensor]]:
    """A tiny model's loss terms on one batch; the first photo has one item box with a region that
    is not constant (so the centre term has a slope), the second has none. The trunk is frozen
    unless ``trunk``: backpropagating through it is most of the time and none of the question."""
    model = PartAttentionNetwork(tiny_config(dropout=0.0, **overrides)).train()
    model.trunk.requires_grad_(trunk)
    out = model(torch.rand(2, 3, 64, 48))
    region = torch.zeros(4, 3)
    region[:, :1] = 1.0  # the item fills the left column of the frame
    items: list[list[Item]] = [[(0, torch.tensor([-0.5, -0.5, 0.0, 0.5]), region)], []]
    targets = torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    anchors = config_anchors(model.config)
    kind = model.config.classification
    terms = total_loss(out, targets, kind, anchors=anchors, items=items, box_weight=1.0, centre_weight=1.0)
    return model, terms


def reached_by(model: PartAttentionNetwork, loss: torch.Tensor) -> set[str]:
    """The parameters that ``loss`` gives a non-zero gradient."""
    model.zero_grad(set_to_none=True)
    if not loss.requires_grad:  # computed on detached outputs: it trains nothing
        return set()
    loss.backward(retain_graph=True)
    return {n for n, p in model.named_parameters() if p.grad is not None and bool(p.grad.any())}


@pytest.mark.parametrize("architecture", ["attention", "global", "ring-anchored"])
def test_gradients_reach_every_trainable_parameter(architecture: str) -> None:
    extra = {"anchors": "ring"} if architecture == "ring-anchored" else {"architecture": architecture}
    model, terms = training_terms(trunk=True, **extra)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert sorted(trainable - reached_by(model, terms["loss"])) == []  # no dead (unused or detached) parameter


def test_each_loss_term_trains_the_parameters_it_is_for() -> None:
    """Each term, on its own, reaches what it exists to train and nothing it has no path to: a
    term wired to the wrong output (the crops' loss on the fused scores, L_loc on detached
    transforms, the whole map's loss on the crops) moves the wrong parameters and fails here."""
    model, terms = training_terms()
    names = {n for n, _ in model.named_parameters()}
    placement = {n for n in names if n.startswith(PLACEMENT)}
    crop_scorer = {n for n in names if n.startswith(CROP_SCORER)}
    whole_scorer = {n for n in names if n.startswith(WHOLE_SCORER)}
    assert placement and crop_scorer and whole_scorer

    crop = reached_by(model, terms["crop_cls"])
    assert placement <= crop and crop_scorer <= crop  # the crops' scores train where the crops go
    assert not crop & whole_scorer

    whole = reached_by(model, terms["whole_cls"])
    assert whole_scorer <= whole and "reduce.project.0.weight" in whole
    assert not whole & (placement | crop_scorer)  # the whole map's scores know nothing of the crops

    fused = reached_by(model, terms["cls"])
    assert whole_scorer | crop_scorer | placement <= fused  # (s_whole + max_k s_k) / 2 reads both

    # L_loc and L_div read only the transforms and their maps: L_loc's anchor term pulls the crops'
    # centres (the learned anchors), L_div's overlap moves their centres and sizes
    loc, div = reached_by(model, terms["loc"]), reached_by(model, terms["div"])
    assert f"{PLACEMENT}anchor_logits" in loc and not loc & (crop_scorer | whole_scorer)
    assert {f"{PLACEMENT}anchor_logits", f"{PLACEMENT}scale_logits"} <= div and not div & (crop_scorer | whole_scorer)

    box = reached_by(model, terms["box"])  # pulls matched crops onto boxes, and makes them score the label
    assert placement <= box and f"{CROP_SCORER}2.weight" in box and not box & whole_scorer


def test_crop_placement_learns_through_the_sampled_crops(monkeypatch: pytest.MonkeyPatch) -> None:
    """The classification loss alone (no box or anchor term) must move every placement parameter,
    which it can only do through grid_sample's gradient with respect to the sampling grid; cutting
    that path (the grid detached) leaves them without a gradient, which the same check catches."""
    model, terms = training_terms()
    placement = {n for n, _ in model.named_parameters() if n.startswith(PLACEMENT)}
    assert len(placement) == 7 and placement <= reached_by(model, terms["crop_cls"])

    sample = torch.nn.functional.grid_sample
    monkeypatch.setattr(torch.nn.functional, "grid_sample", lambda x, grid, **kw: sample(x, grid.detach(), **kw))
    cut, cut_terms = training_terms()
    assert not placement & reached_by(cut, cut_terms["crop_cls"])


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


@pytest.mark.parametrize(("region", "share"), [("whole", 1.0), ("crop", 0.0)])
def test_checkpoint_naming_its_product_look_region_loads_as_a_whole_share(region, share, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = PartAttentionNetwork(tiny_config(look_dim=8, look_hidden=16)).eval()
    path = save_checkpoint(tmp_path / "m.pt", model)
    payload = torch.load(path, weights_only=True)
    del payload["config"]["look_whole_share"]  # as written before 2026-12-07
    payload["config"]["look_product_region"] = region
    torch.save(payload, path)
    loaded, _ = load_checkpoint(path)
    assert loaded.config.look_whole_share == share
    payload["config"]["look_product_region"] = "elsewhere"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="unknown look_product_region 'elsewhere'"):
        load_checkpoint(path)


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
    with pytest.raises(CheckpointError, match="no trunk weights"):
        load_checkpoint(tmp_path / "lost.pt")


@pytest.mark.parametrize(
    "overrides", [{"trunk": "vgg"}, {"labels": []}, {"image_height": 50}, {"steps": 0}, {"classification": "hinge"}]
)
def test_config_rejects_bad_values(overrides: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError):
        ModelConfig(**{"labels": ["a"], **overrides})


def test_efficientnet_trunk_loads_shipped_imagenet_weights() -> None:
    from model.backbones import EfficientNetLite, lite_weights_path

    reference = torch.load(lite_weights_path(), map_location="cpu", weights_only=True)
    net = EfficientNetLite(classifier=True)
    net.load_reference_weights(lite_weights_path())  # strict: every key must match
    state = net.state_dict()
    assert len(state) == len(reference) == 296  # every tensor of the file has a place, and only those
    # each reference name lands on the layer it names: a mix-up of same-shaped tensors (the blocks'
    # three batch norms, stem and head) loads strictly but computes nonsense
    for ours, theirs in {
        "stem.0.weight": "_conv_stem.weight",
        "stem.1.running_var": "_bn0.running_var",
        "blocks.0.depthwise.0.weight": "_blocks.0._depthwise_conv.weight",
        "blocks.0.depthwise.1.running_mean": "_blocks.0._bn1.running_mean",
        "blocks.0.project.1.weight": "_blocks.0._bn2.weight",
        "blocks.1.expand.0.weight": "_blocks.1._expand_conv.weight",
        "blocks.1.expand.1.running_mean": "_blocks.1._bn0.running_mean",
        "blocks.1.depthwise.1.running_var": "_blocks.1._bn1.running_var",
        "blocks.1.project.1.bias": "_blocks.1._bn2.bias",
        "blocks.15.project.0.weight": "_blocks.15._project_conv.weight",
        "head.0.weight": "_conv_head.weight",
        "head.1.running_mean": "_bn1.running_mean",
        "head.5.weight": "_fc.weight",
        "head.5.bias": "_fc.bias",
    }.items():
        assert torch.equal(state[ours], reference[theirs]), ours
    # and the network's pretrained trunk is that file's, not a random init
    trunk = PartAttentionNetwork(tiny_config(pretrained=True)).trunk.state_dict()
    assert torch.equal(trunk["stem.0.weight"], reference["_conv_stem.weight"])
    assert torch.equal(trunk["head.0.weight"], reference["_conv_head.weight"])


def test_command_lines_turn_model_errors_into_one_line_and_exit_2(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from model.errors import run_command

    not_ours = tmp_path / "notes.pt"
    not_ours.write_text("not a checkpoint")
    assert run_command(lambda: load_checkpoint(not_ours)) == 2
    message = capsys.readouterr().err
    assert message.startswith("error: cannot load the checkpoint") and message.count("\n") == 1
    with pytest.raises(ValueError):  # a programming error keeps its traceback
        run_command(lambda: ModelConfig(labels=[]))


def test_a_batched_output_splits_into_each_photos_own() -> None:
    model = PartAttentionNetwork(tiny_config()).eval()
    x = torch.rand(3, 3, 64, 48)
    with torch.inference_mode():
        batched = model(x).per_photo()
        alone = model(x[1:2])
    assert len(batched) == 3 and batched[1].scores.shape == alone.scores.shape == (1, len(tiny_config().labels))
    for name in ("scores", "global_embedding", "part_embeddings", "transforms"):
        torch.testing.assert_close(getattr(batched[1], name), getattr(alone, name), atol=1e-5, rtol=1e-4)


def _output_with_probabilities(probs: list[float]) -> NetworkOutput:
    """A one-photo output whose fused sigmoid scores are ``probs``; step k scores label k highest."""
    logits = torch.logit(torch.tensor([probs]))
    steps = len(probs)
    return NetworkOutput(
        scores=logits,
        global_embedding=torch.zeros(1, 4),
        step_scores=torch.eye(steps).unsqueeze(0),
        part_embeddings=torch.arange(steps * 4, dtype=torch.float32).reshape(1, steps, 4),
        transforms=torch.tensor([[[0.5, 0.5, 0.0, 0.0]] * steps]),
    )


def test_query_parts_take_one_part_per_group_ranked_by_the_group_probability() -> None:
    model = PartAttentionNetwork(tiny_config(labels=["shoes", "heels", "bag", "jeans"], steps=4)).eval()
    out = _output_with_probabilities([0.31, 0.3, 0.45, 0.2])
    # by label, two of the top three parts would name the same shoes; footwear's probability is
    # 1 - 0.69 * 0.7 = 0.517, above the bag's 0.45; jeans (0.2) is under the threshold
    parts = query_parts(model, out, 0, threshold=0.4)
    assert [(p.label, p.index_label, round(p.score, 3)) for p in parts] == [
        ("shoes", "shoes", 0.517),
        ("bag", "bag", 0.45),
    ]
    assert all(p.confident for p in parts)
    assert [p.step for p in parts] == [0, 2]  # each found by its own label's crop
    torch.testing.assert_close(parts[1].embedding, out.part_embeddings[0, 2])  # type: ignore[index]
    # a catalogue without "shoes" products: the footwear part is still the shoes the model saw (its
    # crop), answered from the heels index, still first
    substituted = query_parts(model, out, 0, threshold=0.4, searchable={"heels", "bag"})
    assert [(p.label, p.index_label, p.step) for p in substituted] == [("shoes", "heels", 0), ("bag", "bag", 2)]
    assert round(substituted[0].score, 3) == 0.517  # the group's probability, whichever label is searched
    assert query_parts(model, out, 0, threshold=0.0, searchable=set()) == []
    assert [p.label for p in query_parts(model, out, 0, threshold=0.0, max_parts=1)] == ["shoes"]
    assert query_parts(model, out, 0, threshold=0.4, searchable={"jeans"}, floor=None) == []


def test_a_photo_with_no_sure_part_gets_its_likeliest_one_unless_nothing_is_there() -> None:
    model = PartAttentionNetwork(tiny_config(labels=["shoes", "heels", "bag", "jeans"], steps=4)).eval()
    out = _output_with_probabilities([0.1, 0.05, 0.3, 0.2])
    (part,) = query_parts(model, out, 0, threshold=0.6, floor=0.2)
    assert (part.label, part.confident, round(part.score, 2)) == ("bag", False, 0.3)
    # only searchable groups compete: without bags, the jeans are the likeliest
    (part,) = query_parts(model, out, 0, threshold=0.6, floor=0.15, searchable={"jeans", "shoes"})
    assert (part.label, part.confident) == ("jeans", False)
    assert query_parts(model, out, 0, threshold=0.6, floor=0.31) == []  # below the floor: nothing to wear
    assert query_parts(model, out, 0, threshold=0.6, floor=None) == []  # no fallback at all
    # one sure part: no unsure ones beside it
    assert [(p.label, p.confident) for p in query_parts(model, out, 0, threshold=0.25, floor=0.0)] == [("bag", True)]


def test_a_photo_seen_twice_keeps_each_labels_higher_probability_and_its_views_part() -> None:
    model = PartAttentionNetwork(tiny_config(labels=["shoes", "heels", "bag", "jeans"], steps=4)).eval()
    at_top = _output_with_probabilities([0.05, 0.05, 0.7, 0.3])  # a bag seen high in the frame
    at_bottom = _output_with_probabilities([0.6, 0.05, 0.2, 0.2])  # shoes seen low
    at_bottom.transforms = torch.tensor([[[0.5, 0.5, 0.0, 0.5]] * 4])  # its crops sit lower
    top, bottom = Placement(100, 50, 100, 150, 0, 0), Placement(100, 50, 100, 150, 0, 100)
    parts = photo_parts(model, [(at_top, 0, top), (at_bottom, 0, bottom)], threshold=0.5)
    assert [(p.label, round(p.score, 3)) for p in parts] == [("bag", 0.7), ("shoes", 0.62)]
    # each part's box is read in the view it was seen in, mapped back to the photo
    assert parts[0].box == part_box(at_top.transforms[0, 2], top)  # type: ignore[index]
    assert parts[1].box == part_box(at_bottom.transforms[0, 0], bottom)  # type: ignore[index]
    assert parts[1].box != part_box(at_top.transforms[0, 0], top)  # type: ignore[index]
    # neither view alone finds both
    assert [p.label for p in query_parts(model, at_top, 0, top, threshold=0.5)] == ["bag"]
    assert [p.label for p in query_parts(model, at_bottom, 0, bottom, threshold=0.5)] == ["shoes"]
    with pytest.raises(ValueError, match="at least one view"):
        photo_parts(model, [])


def test_a_wide_photo_keeps_its_groups_from_its_own_threshold_a_photo_seen_once_from_the_usual() -> None:
    model = PartAttentionNetwork(tiny_config(labels=["shoes", "heels", "bag", "jeans"], steps=4)).eval()
    at_top = _output_with_probabilities([0.05, 0.05, 0.7, 0.42])  # jeans cut at the frame's edge: unsure
    at_bottom = _output_with_probabilities([0.6, 0.05, 0.2, 0.3])
    top, bottom = Placement(100, 50, 100, 150, 0, 0), Placement(100, 50, 100, 150, 0, 100)
    views = [(at_top, 0, top), (at_bottom, 0, bottom)]
    assert [p.label for p in photo_parts(model, views, threshold=0.5)] == ["bag", "shoes"]
    wide = photo_parts(model, views, threshold=0.5, wide_threshold=0.4)
    assert [(p.label, round(p.score, 2), p.confident) for p in wide] == [
        ("bag", 0.7, True),
        ("shoes", 0.62, True),
        ("jeans", 0.42, True),
    ]
    assert [p.label for p in photo_parts(model, views, threshold=0.3, wide_threshold=0.65)] == ["bag"]
    # a photo seen once keeps the usual threshold whatever the wide one
    assert [p.label for p in photo_parts(model, [(at_top, 0, top)], threshold=0.5, wide_threshold=0.4)] == ["bag"]


def test_query_parts_sum_softmax_probabilities_of_a_group() -> None:
    model = PartAttentionNetwork(tiny_config(labels=["shoes", "heels", "bag"], steps=3, classification="softmax"))
    out = _output_with_probabilities([0.3, 0.3, 0.4])
    out.scores = torch.log(torch.tensor([[0.3, 0.3, 0.4]]))  # softmax gives back these probabilities
    parts = query_parts(model.eval(), out, 0, threshold=0.0)
    assert [(p.label, round(p.score, 3)) for p in parts] in (
        [("shoes", 0.6), ("bag", 0.4)],
        [("heels", 0.6), ("bag", 0.4)],
    )


@pytest.mark.parametrize("variant,stride16_channels", [("lite1", 112), ("lite2", 120)])
def test_larger_efficientnet_lite_trunks_load_their_shipped_weights(variant: str, stride16_channels: int) -> None:
    from model.backbones import EfficientNetLite, build_trunk, lite_weights_path

    reference = torch.load(lite_weights_path(variant), map_location="cpu", weights_only=True)
    net = EfficientNetLite(variant, classifier=True)
    net.load_reference_weights(lite_weights_path(variant))  # strict: the stage table matches the file
    assert len(net.state_dict()) == len(reference)
    trunk, channels = build_trunk(f"efficientnet_{variant}")
    maps = trunk.eval()(torch.rand(1, 3, 64, 48))
    assert channels == [stride16_channels, 1280]
    assert [tuple(m.shape[1:]) for m in maps] == [(stride16_channels, 4, 3), (1280, 2, 2)]
