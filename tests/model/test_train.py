"""A short training run on a tiny generated set: the loss must fall, and training must resume."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model.checkpoint import load_checkpoint
from model.data import Sample
from model.network import NetworkOutput, PartAttentionNetwork
from model.train import TrainConfig, Trainer, cosine_lr, train, with_offset
from tests.helpers import tiny_ccp, tiny_config

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


def generated_samples(folder: Path, count: int = 48) -> list[Sample]:
    """Grey photos with one to three coloured squares; the labels are the colours drawn."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(count):
        image = np.full((64, 48, 3), 128, dtype=np.uint8)
        names = [n for n in COLOURS if rng.random() < 0.5] or ["red"]
        for name in names:
            y, x = rng.integers(0, 44), rng.integers(0, 28)
            image[y : y + 20, x : x + 20] = COLOURS[name]
        path = folder / f"{i}.png"
        Image.fromarray(image).save(path)
        samples.append(Sample(path, names))
    return samples


def quick_config(tmp_path: Path, **overrides: object) -> TrainConfig:
    """A few-second frozen-trunk run on the generated photos (its output in tmp_path / "run")."""
    values: dict[str, object] = dict(
        out=tmp_path / "run", batch_size=8, workers=0, val_fraction=0.25, cache_dir=tmp_path / "cache", warmup_epochs=0
    )
    return TrainConfig(**(values | overrides))  # type: ignore[arg-type]


def test_short_training_lowers_the_loss_and_resumes(tmp_path: Path) -> None:
    samples = generated_samples(tmp_path)
    cfg = quick_config(tmp_path, epochs=10, lr=1e-2)
    model_cfg = tiny_config(classification="sigmoid", pretrained=True)  # ImageNet trunk: colours are easy
    best = train(model_cfg, cfg, samples)
    _, payload = load_checkpoint(best)
    history = load_checkpoint(tmp_path / "run" / "last.pt")[1]["history"]
    assert len(history) == 10
    assert history[-1]["loss"] < 0.8 * history[0]["loss"]
    assert payload["metrics"]["validation"]["labels"]["map"] >= max(h["val_map"] for h in history) - 1e-9
    assert list((tmp_path / "cache").glob("views-*/done.json")), "frozen mode caches trunk maps"

    # a longer run resumes from epoch 10 instead of starting again
    cfg.epochs, cfg.resume = 12, True
    train(model_cfg, cfg, samples)
    assert [h["epoch"] for h in load_checkpoint(tmp_path / "run" / "last.pt")[1]["history"]] == list(range(1, 13))


def test_group_term_is_trained_and_recorded(tmp_path: Path) -> None:
    samples = generated_samples(tmp_path, 24)
    cfg = quick_config(tmp_path, epochs=1, group_weight=1.0)
    train(tiny_config(classification="sigmoid", pretrained=True), cfg, samples)
    _, payload = load_checkpoint(tmp_path / "run" / "last.pt")
    assert payload["history"][-1]["group"] > 0 and payload["training"]["group_weight"] == "1.0"


def test_group_term_refuses_a_softmax_model_before_training(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--group-weight 0"):
        Trainer(
            PartAttentionNetwork(tiny_config(classification="softmax")), TrainConfig(out=tmp_path, group_weight=1.0)
        )
    Trainer(PartAttentionNetwork(tiny_config(classification="softmax")), TrainConfig(out=tmp_path, group_weight=0.0))


def test_tag_bias_learns_what_the_taggers_leave_out(tmp_path: Path) -> None:
    # Every other photo is "image-level", and its taggers never name red, drawn or not: the bias
    # of their photos absorbs that (photos look alike either way, so the network cannot).
    samples = generated_samples(tmp_path)
    for i, sample in enumerate(samples):
        if i % 2:
            sample.source = "image-level"
            sample.labels = [n for n in sample.labels if n != "red"] or ["green"]
        else:
            sample.source = "pixel-level"
    cfg = quick_config(tmp_path, epochs=8, lr=1e-2, tag_bias=True)
    labels = list(COLOURS)
    train(tiny_config(classification="sigmoid", pretrained=True, labels=labels), cfg, samples)
    bias = load_checkpoint(tmp_path / "run" / "last.pt")[1]["tag_bias"]
    cfg.epochs, cfg.resume, cfg.tag_bias = 9, True, False
    with pytest.raises(ValueError, match="tag_bias=True"):  # a clear word, not the optimiser's mismatch
        train(tiny_config(classification="sigmoid", pretrained=True, labels=labels), cfg, samples)
    assert float(bias[labels.index("red")]) < -0.1
    assert float(bias[labels.index("red")]) < float(bias[labels.index("blue")]) - 0.1


def test_with_offset_moves_every_classified_score_but_not_the_crops_ranking() -> None:
    out = NetworkOutput(
        scores=torch.zeros(2, 3),
        global_embedding=torch.zeros(2, 4),
        crop_scores=torch.ones(2, 3),
        whole_scores=None,
        step_scores=torch.ones(2, 5, 3),
    )
    moved = with_offset(out, torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]))
    torch.testing.assert_close(moved.scores[0], torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(moved.crop_scores, out.crop_scores + torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]))
    assert moved.whole_scores is None and moved.step_scores is out.step_scores


def test_cosine_schedule() -> None:
    assert cosine_lr(0, 100, 1.0, 10) == 0.1
    assert cosine_lr(10, 100, 1.0, 10) == 1.0
    assert abs(cosine_lr(100, 100, 1.0, 10)) < 1e-12


def test_init_seed_changes_the_start_and_keeps_the_validation_split(tmp_path: Path) -> None:
    samples = generated_samples(tmp_path, count=24)
    runs = []
    for init_seed in (-1, 0, 1):
        cfg = TrainConfig(
            out=tmp_path / f"run{init_seed}",
            epochs=1,
            batch_size=8,
            workers=0,
            val_fraction=0.25,
            cache_dir=tmp_path / f"cache{init_seed}",  # each fresh: cached float16 maps would differ a little
            init_seed=init_seed,
        )
        _, payload = load_checkpoint(train(tiny_config(pretrained=True), cfg, samples))
        runs.append(payload)
    assert runs[0]["validation_photos"] == runs[1]["validation_photos"] == runs[2]["validation_photos"]
    first = [p for name, p in runs[0]["state_dict"].items() if "encoding" in name]
    # -1 means "the split's seed" (0): the same run; another init seed starts elsewhere
    assert all(
        torch.equal(a, b)
        for a, b in zip(first, [p for n, p in runs[1]["state_dict"].items() if "encoding" in n], strict=True)
    )
    assert not all(
        torch.equal(a, b)
        for a, b in zip(first, [p for n, p in runs[2]["state_dict"].items() if "encoding" in n], strict=True)
    )


def test_the_second_stage_adds_product_photos_and_reframed_views(tmp_path: Path) -> None:
    from model.products import product_split
    from tests.model.test_products import product_set

    samples = generated_samples(tmp_path, 24)
    root = product_set(tmp_path / "products", per_type=10)
    data = tiny_ccp(tmp_path / "data" / "ccp").parent  # the product head's street surfaces and item crops
    labels = [*COLOURS, "bag", "jeans"]
    cfg = quick_config(
        tmp_path, epochs=2, adapt_epochs=1, products=root, products_per_epoch=12, reframes=2, look=False, data=data
    )
    best = train(tiny_config(classification="sigmoid", pretrained=True, labels=labels), cfg, samples)
    first = load_checkpoint(tmp_path / "run" / "first-stage" / "last.pt")[1]
    second = load_checkpoint(tmp_path / "run" / "last.pt")[1]
    assert len(first["history"]) == 2 and "val_products" not in first["history"][-1]  # CCP as shot only
    assert second["training"]["init_from"] == str(tmp_path / "run" / "first-stage" / "best.pt")
    validation_products = len(product_split(root, labels, "validation"))
    assert second["history"][-1]["val_products"]["products"] == validation_products > 0
    assert load_checkpoint(best)[0].config.product_labels  # the product head, fitted after


def test_a_second_stage_starts_from_a_checkpoint(tmp_path: Path) -> None:
    samples = generated_samples(tmp_path, 24)
    model_cfg = tiny_config(classification="sigmoid", pretrained=True)
    first = train(model_cfg, quick_config(tmp_path, epochs=2), samples)
    start = load_checkpoint(first)[0].state_dict()
    cfg = quick_config(tmp_path, out=tmp_path / "second", epochs=1, lr=1e-9, warmup_epochs=0, init_from=first)
    second = load_checkpoint(train(model_cfg, cfg, samples))[0].state_dict()
    learnt = [k for k in start if "head." in k and "running" not in k and "num_batches" not in k]
    moved = max(float((second[k].float() - start[k].float()).abs().max()) for k in learnt)
    assert moved < 1e-2  # a step of almost nothing from where the first stage ended, not from afresh
    with pytest.raises(ValueError, match="other labels"):
        train(tiny_config(classification="sigmoid", pretrained=True, labels=["a", "b"]), cfg, samples)


def test_heads_are_taken_from_a_checkpoint_with_the_same_trunk(tmp_path: Path) -> None:
    from model.checkpoint import save_checkpoint
    from model.train import take_heads

    torch.manual_seed(0)
    heads = {"product_labels": ["red", "blue"], "look_dim": 8, "look_colour_weight": 0.4, "look_whole_share": 0.7}
    donor = PartAttentionNetwork(tiny_config(**heads))
    trained = PartAttentionNetwork(tiny_config(product_labels=["red", "green"], look_dim=8))  # heads of its own
    trained.load_state_dict(donor.state_dict(), strict=False)  # the same trunk
    with torch.no_grad():
        for name, weight in trained.named_parameters():
            if not name.startswith("trunk."):
                weight.add_(1.0)  # what training moved
    save_checkpoint(tmp_path / "donor.pt", donor, metrics={"products": {"group_top1": 0.9}, "look": {"r1": 0.5}})
    save_checkpoint(tmp_path / "trained.pt", trained, metrics={"validation": {"map": 30.0}}, history=[1])
    merged, payload = load_checkpoint(take_heads(tmp_path / "trained.pt", tmp_path / "donor.pt"))
    assert merged.config.product_labels == ["red", "blue"] and merged.config.look_colour_weight == 0.4
    assert merged.config.look_whole_share == 0.7
    state, donor_state, trained_state = merged.state_dict(), donor.state_dict(), trained.state_dict()
    heads = [name for name in state if name.startswith(("product_head.", "look."))]
    assert any(name.startswith("product_head.") for name in heads) and any(name.startswith("look.") for name in heads)
    for name, tensor in state.items():
        expected = donor_state[name] if name in heads else trained_state[name]
        torch.testing.assert_close(tensor, expected, atol=2e-3, rtol=2e-3)  # float16 storage
    assert payload["metrics"]["validation"] == {"map": 30.0} and payload["metrics"]["products"] == {"group_top1": 0.9}
    assert "look" not in payload["metrics"]  # the donor's look figures are the donor's attention's
    assert payload["metrics"]["heads_from"]["look"] == {"r1": 0.5}
    assert payload["metrics"]["heads_from"]["checkpoint"] == str(tmp_path / "donor.pt")
    assert payload["history"] == [1]
    other = PartAttentionNetwork(tiny_config(labels=["a", "b", "c"]))
    save_checkpoint(tmp_path / "other.pt", other)
    with pytest.raises(ValueError, match="other labels"):
        take_heads(tmp_path / "trained.pt", tmp_path / "other.pt")
    bare = PartAttentionNetwork(tiny_config())
    bare.load_state_dict(donor.state_dict(), strict=False)
    save_checkpoint(tmp_path / "bare.pt", bare)
    with pytest.raises(ValueError, match="no product head"):
        take_heads(tmp_path / "bare.pt", tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="add --products"):  # before any training
        train(tiny_config(), TrainConfig(out=tmp_path / "run", heads_from=tmp_path / "donor.pt"), [])


def test_product_balance_draws_rare_categories_more_often(tmp_path: Path) -> None:
    from model.train import ViewData
    from model.views import TrainingViews, View

    training = TrainingViews()
    for i in range(100):  # 90 products of label 0, 10 of label 1
        targets = torch.zeros(2)
        targets[int(i >= 90)] = 1.0
        training.add("product", [View(tmp_path / f"{i}.jpg", None, targets, targets.clone())])
    labels = [int(training.views[r].targets.argmax()) for r in range(100)]

    def rare_share(balance: float) -> float:
        torch.manual_seed(0)
        data = ViewData(quick_config(tmp_path, products_per_epoch=20, product_balance=balance), training, [])
        epochs = [data.epoch_rows() for _ in range(50)]
        assert all(len(set(rows)) == len(rows) == 20 for rows in epochs)  # no product twice in an epoch
        drawn = [labels[r] for rows in epochs for r in rows]
        return sum(drawn) / len(drawn)

    uniform, square_root, alike = rare_share(0.0), rare_share(0.5), rare_share(1.0)
    assert 0.05 < uniform < 0.15  # the category's share of the products
    # the weights give the rare category sqrt(10) / (sqrt(10) + sqrt(90)) = 0.25 and 0.5 of the first
    # draw; drawn without replacement, a little less over an epoch (about 0.22 and 0.35)
    assert 0.17 < square_root < 0.28
    assert square_root < alike < 0.5


@pytest.mark.parametrize("balance", [-0.5, 1.5, float("nan")])
def test_a_product_balance_out_of_range_is_refused_before_training(balance: float, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="product_balance is between 0 and 1"):
        quick_config(tmp_path, product_balance=balance)
