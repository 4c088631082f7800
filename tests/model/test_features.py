import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from model.features import _cache_key, trunk_features
from model.network import PartAttentionNetwork
from tests.helpers import make_catalogue, tiny_config


def model_of(**overrides: object) -> PartAttentionNetwork:
    """A tiny model on the package's ImageNet trunk: the same trunk weights whatever the head."""
    return PartAttentionNetwork(tiny_config(**{"pretrained": True, **overrides}))


def test_cache_key_changes_with_what_the_trunk_features_depend_on_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photos = [tmp_path / f"p{i}.jpg" for i in range(3)]  # the key reads the list, not the files
    model = model_of()
    key = _cache_key(model, photos, flips=False)

    retrained_head = copy.deepcopy(model).train()
    with torch.no_grad():
        for p in retrained_head.head.parameters():
            p.add_(1.0)
    monkeypatch.chdir(tmp_path)
    same = {
        "the same call": _cache_key(model, photos, False),
        "another model object, same config": _cache_key(model_of(), photos, False),
        "another head": _cache_key(
            model_of(labels=["a", "b"], channels=4, steps=5, hidden=8, codewords=2, dropout=0.5), photos, False
        ),
        "the global baseline's head": _cache_key(model_of(architecture="global"), photos, False),
        "head weights and train mode": _cache_key(retrained_head, photos, False),
        "a tuple of the same paths": _cache_key(model, tuple(photos), False),
        "relative paths to the same files": _cache_key(model, [Path(p.name) for p in photos], False),
    }
    assert {name: k for name, k in same.items() if k != key} == {}

    other_trunk_weights = copy.deepcopy(model)
    with torch.no_grad():
        other_trunk_weights.trunk.get_parameter("stem.0.weight")[0, 0, 0, 0] += 1e-3
    other_bn_statistics = copy.deepcopy(model)
    other_bn_statistics.trunk.get_buffer("stem.1.running_mean")[0] += 1e-3
    changed = {
        "a photo fewer": _cache_key(model, photos[:2], False),
        "a photo more": _cache_key(model, [*photos, tmp_path / "p3.jpg"], False),
        "another photo": _cache_key(model, [*photos[:2], tmp_path / "q.jpg"], False),
        "the same photos in another order": _cache_key(model, photos[::-1], False),
        "flips": _cache_key(model, photos, True),
        "pooled": _cache_key(model, photos, False, pooled=True),
        "pooled and flips": _cache_key(model, photos, True, pooled=True),
        "input height": _cache_key(model_of(image_height=80), photos, False),
        "input width": _cache_key(model_of(image_width=64), photos, False),
        "stride 16 only": _cache_key(model_of(multiscale=False), photos, False),
        "normalisation mean": _cache_key(model_of(mean=(0.4, 0.5, 0.5)), photos, False),
        "normalisation std": _cache_key(model_of(std=(0.5, 0.5, 0.25)), photos, False),
        "a random trunk": _cache_key(model_of(pretrained=False), photos, False),
        "another trunk": _cache_key(model_of(trunk="stylenet", pretrained=False), photos, False),
        "one trunk weight": _cache_key(other_trunk_weights, photos, False),
        "trunk batch-norm statistics": _cache_key(other_bn_statistics, photos, False),
    }
    assert [name for name, k in changed.items() if k == key] == []
    assert len(set(changed.values())) == len(changed)  # and no two of them collide


def test_trunk_features_run_the_trunk_once_per_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photos = sorted((make_catalogue(tmp_path / "catalogue", count=3) / "images").glob("*.jpg"))
    model = model_of()
    runs: list[int] = []

    def counted(model: PartAttentionNetwork, device: str = "cpu") -> Callable[[torch.Tensor], list[np.ndarray]]:
        model.eval()  # as the real runner: the trunk's statistics stay

        def run(images: torch.Tensor) -> list[np.ndarray]:
            runs.append(len(images))
            with torch.inference_mode():
                return [level.half().numpy() for level in model.trunk_forward(images)]

        return run

    monkeypatch.setattr("model.features.trunk_runner", counted)
    cache = tmp_path / "cache"

    first = trunk_features(model, photos, cache, flips=True, workers=0)
    assert runs == [3, 3]  # one batch, and its mirror
    assert [tuple(level.shape) for level in first] == [(3, 2, 112, 4, 3), (3, 2, 1280, 2, 2)]
    assert all(level.dtype == torch.float16 for level in first)
    assert [p.name for p in cache.iterdir()] == [f"trunk-efficientnet_lite0-{_cache_key(model, photos, True)}.pt"]

    again = trunk_features(model, photos, cache, flips=True, workers=0)
    assert runs == [3, 3]  # from the file: the trunk did not run
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)

    runs.clear()
    trunk_features(model, photos[:2], cache, flips=True, workers=0)  # another photo list: computed
    trunk_features(model, photos, cache, flips=False, workers=0)  # no mirrors: computed
    pooled = trunk_features(model, photos, cache, flips=True, workers=0, pooled=True)  # pooled: computed
    assert runs == [2, 2, 3, 3, 3]
    assert [tuple(level.shape) for level in pooled] == [(3, 2, 112), (3, 2, 1280)]
    for level, full in zip(pooled, first, strict=True):  # the spatial mean of the same maps
        torch.testing.assert_close(level.float(), full.float().mean((-2, -1)), atol=2e-2, rtol=1e-2)
    assert len(list(cache.glob("*.pt"))) == 4 and len(list(cache.glob("pooled-*.pt"))) == 1
    assert not list(cache.glob("*.tmp"))
