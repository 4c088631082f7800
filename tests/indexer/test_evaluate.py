from indexer.evaluate import ARTICLE_TYPE_TO_LABEL, QueryResult, product_label, summarise
from model.labels import LABEL_TO_GROUP


def test_every_article_type_maps_to_a_ccp_item_label() -> None:
    assert set(ARTICLE_TYPE_TO_LABEL.values()) <= set(LABEL_TO_GROUP)
    assert product_label({"articleType": "Handbags"}) == "bag"
    assert product_label({"articleType": "Perfume and Body Mist"}) is None


def test_scores_by_hand() -> None:
    # truth: shoes, bag, jeans (groups footwear, bags, bottoms); returned: heels, bag, None (perfume), bag
    result = QueryResult(["shoes", "bag", "jeans"], ["heels", "bag", None, "bag"], ["a", "b", "c", "d"])
    labels = result.scores("labels")
    assert labels == {"precision_at_1": 2 / 4, "coverage": 1 / 3, "distinct": 2.0}
    groups = result.scores("groups")
    assert groups == {"precision_at_1": 3 / 4, "coverage": 2 / 3, "distinct": 2.0}


def test_summary_averages_over_queries() -> None:
    a = QueryResult(["bag"], ["bag"], ["1"])
    b = QueryResult(["bag", "hat"], ["shoes", "hat", "bag"], ["2", "3", "4"])
    summary = summarise([a, b])
    assert summary["returned_per_query"] == 2.0 and summary["distinct_items_per_query"] == 2.0
    assert summary["labels"]["precision_at_1"] == (1 + 2 / 3) / 2  # type: ignore[index]
    assert summary["labels"]["precision_at_1_micro"] == 3 / 4  # type: ignore[index]
    assert summary["labels"]["coverage"] == 1.0  # type: ignore[index]
