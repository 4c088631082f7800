"""Settings: one source for each default, and the indexer's options built from them in one place."""

from app.recommender import RecommendOptions
from app.settings import Settings
from indexer.build import IndexOptions
from model.imaging import DEFAULT_MAX_PIXELS
from model.network import DEFAULT_ITEM_LABEL_THRESHOLD, DEFAULT_PART_THRESHOLD
from model.runtime import DEFAULT_CACHE, DEFAULT_RUNTIME


def test_index_options_follow_the_settings() -> None:
    options = Settings(max_pixels=1234, item_label_threshold=0.2, labels_from="kind", device="cpu").index_options()
    assert (options.limits.max_pixels, options.threshold, options.labels_from) == (1234, 0.2, "kind")
    options = Settings(index_engine="ray", ray_address="ray://head:10001").index_options()
    assert (options.engine, options.ray.address) == ("ray", "ray://head:10001")


def test_defaults_have_one_source() -> None:
    settings, index, request = Settings(), IndexOptions(), RecommendOptions()
    assert settings.part_threshold == DEFAULT_PART_THRESHOLD
    assert settings.item_label_threshold == index.threshold == DEFAULT_ITEM_LABEL_THRESHOLD
    assert settings.max_pixels == index.limits.max_pixels == DEFAULT_MAX_PIXELS
    assert settings.labels_from == index.labels_from
    assert (settings.index_engine, settings.ray_address) == (index.engine, index.ray.address) == ("local", None)
    assert (
        (settings.runtime, settings.runtime_cache)
        == (index.runtime, index.runtime_cache)
        == (DEFAULT_RUNTIME, DEFAULT_CACHE)
    )
    assert (settings.default_max_parts, settings.default_candidates) == (request.max_parts, request.candidates)
