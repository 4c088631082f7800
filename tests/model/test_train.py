"""A short training run on a tiny generated set: the loss must fall, and training must resume."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model.checkpoint import load_checkpoint
from model.data import Sample
from model.imaging import letterbox_placement
from model.network import NetworkOutput, PartAttentionNetwork
from model.train import TrainConfig, Trainer, cosine_lr, photo_items, region_on_frame, train, with_offset
from tests.helpers import tiny_config

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
    assert list((tmp_path / "cache").glob("trunk-*.pt")), "frozen mode caches trunk maps"

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


def test_item_regions_land_where_the_letterbox_puts_the_photo(tmp_path: Path) -> None:
    # A 200 x 100 photo in a 256 x 384 input sits in rows 128-255 (cells 16-31 of 48); its item
    # fills the photo's left half (cells 0-15 of 32 across).
    region = np.zeros((13, 25), dtype=np.float32)  # 8-pixel cells of the 100 x 200 photo
    region[:, :12] = 1.0
    placement = letterbox_placement(200, 100, (384, 256))[0]
    on_frame = region_on_frame(region, placement, (384, 256))
    assert on_frame.shape == (48, 32)
    assert float(on_frame[:15].sum()) == 0 and float(on_frame[33:].sum()) == 0  # the padding (edges blend)
    assert float(on_frame[17:31, 1:14].min()) == 1 and float(on_frame[17:31, 17:].max()) == 0

    path = tmp_path / "photo.png"
    Image.new("RGB", (200, 100)).save(path)
    sample = Sample(path, ["bag"], boxes={"bag": (0.0, 0.0, 96.0, 100.0)}, regions={"bag": region})
    (label, box, plain), (_, mirrored_box, mirrored) = (items[0] for items in photo_items(sample, ["bag"], (384, 256)))
    assert label == 0 and plain is not None and mirrored is not None
    assert torch.equal(mirrored, plain.flip(-1))
    assert float(mirrored_box[0]) == -float(box[2])


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
