import numpy as np

from indexer.colours import NAME_TO_FAMILY, family_of_name, family_of_pixels
from indexer.evaluate import ARTICLE_TYPE_TO_LABEL, HUB_MIN_ANSWERS, QueryResult, Returned, product_label, summarise
from model.labels import LABEL_TO_GROUP


def test_every_article_type_maps_to_a_ccp_item_label() -> None:
    assert set(ARTICLE_TYPE_TO_LABEL.values()) <= set(LABEL_TO_GROUP)
    assert product_label({"articleType": "Handbags"}) == "bag"
    assert product_label({"articleType": "Perfume and Body Mist"}) is None


def part(item: str, part_label: str | None, product: str | None, colour: str | None = None) -> Returned:
    return Returned(item, part_label, product, colour)


def test_a_product_is_right_only_for_its_own_part() -> None:
    # truth: shoes, bag, jeans (groups shoes, bags, bottoms)
    result = QueryResult(
        ["shoes", "bag", "jeans"],
        [
            part("a", "heels", "shoes"),  # same group as its part, and in the photo: right
            part("b", "shoes", "bag"),  # a bag for the shoes: wrong, though the photo has a bag
            part("c", "bag", None),  # perfume: wrong
            part("d", "hat", "hat"),  # right group for its part, but no hat in the photo: wrong
        ],
    )
    assert result.scores() == {"precision_at_1": 1 / 4, "coverage": 1 / 3}
    loose = result.any_label_scores("groups")  # the looser figure counts the bag for the shoes
    assert loose == {"precision_at_1": 2 / 4, "coverage": 2 / 3, "distinct": 3.0}
    baseline = QueryResult(["bag"], [part("e", None, "bag"), part("f", None, "shoes")])
    assert baseline.scores()["precision_at_1"] == 1 / 2  # no part: held to the photo's groups only


def test_summary_and_colour_agreement() -> None:
    a = QueryResult(["bag"], [part("1", "bag", "bag", "black")], {"bag": "black"})
    b = QueryResult(
        ["bag", "hat", "jeans"],
        [part("2", "hat", "hat", "red"), part("3", "jeans", "jeans", "grey"), part("4", "top", "top", "blue")],
        {"bag": "brown", "hat": "blue", "jeans": "blue"},
    )
    summary = summarise([a, b])
    assert summary["returned_per_query"] == 2.0 and summary["distinct_items_per_query"] == 2.0
    assert summary["groups"]["precision_at_1"] == (1 + 2 / 3) / 2  # type: ignore[index]
    assert summary["groups"]["precision_at_1_micro"] == 3 / 4  # type: ignore[index]
    # colour pairs: bag black/black, hat red/blue, jeans grey/blue; the top has no item in the photo
    assert summary["colour"] == {"pairs": 3.0, "agreement": 1 / 3}  # type: ignore[comparison-overlap]
    assert summary["across_queries"] == {
        "distinct_products": 4,
        "top_product_share": 1 / 4,
        "max_group_top_share": 0.0,  # no group has HUB_MIN_ANSWERS answers
        "groups": {},
    }
    shoes = [QueryResult(["shoes"], [part(str(i % 4), "shoes", "shoes")]) for i in range(HUB_MIN_ANSWERS * 2)]
    hub = summarise([QueryResult(["shoes"], [part("7", "shoes", "shoes")]) for _ in range(HUB_MIN_ANSWERS)] + shoes)
    across = hub["across_queries"]
    assert across["distinct_products"] == 5 and across["top_product_share"] == 1 / 3  # type: ignore[index]
    # one shoe answers a third of the footwear answers; the bag's group has too few answers to count
    assert across["max_group_top_share"] == round(1 / 3, 4)  # type: ignore[index]
    assert across["groups"] == {"footwear": {"answers": 60, "distinct": 5, "top_share": round(1 / 3, 4)}}  # type: ignore[index]


def test_colour_families() -> None:
    assert family_of_name("Navy Blue") == family_of_name("Blue") == "blue"
    assert family_of_name("Multi") is None and set(NAME_TO_FAMILY.values()) >= {"black", "white", "brown"}
    dark_navy = np.array([[25, 30, 75]] * 8 + [[250, 250, 250]] * 2)  # mostly navy, a white stripe
    assert family_of_pixels(dark_navy) == "blue"
    assert family_of_pixels(np.array([[15, 15, 15], [240, 240, 240], [10, 12, 10]])) == "black"
    assert family_of_pixels(np.zeros((0, 3))) is None


def test_a_groups_top_share_floor_counts_what_the_catalogue_holds() -> None:
    # 20 necklace answers from a catalogue of 2 necklaces, 10 watch answers from 100 watches
    necklaces = [QueryResult(["necklace"], [part(f"n{i % 2}", "necklace", "necklace")]) for i in range(20)]
    watches = [QueryResult(["watch"], [part(f"w{i}", "watch", "watch")]) for i in range(10)]
    across = summarise(necklaces + watches, label_sizes={"necklace": 2, "watch": 100})["across_queries"]
    jewellery = across["groups"]["jewellery"]  # type: ignore[index]
    assert jewellery["top_share"] == round(10 / 30, 4)  # each necklace answers half the necklaces
    assert jewellery["top_share_floor"] == round(10 / 30, 4)  # and no search could do better
    assert across["max_group_top_share_floor"] == round(10 / 30, 4)  # type: ignore[index]
    assert "top_share_floor" not in summarise(necklaces + watches)["across_queries"]["groups"]["jewellery"]  # type: ignore[index]
    # a label the catalogue holds none of bounds nothing; the necklaces still do
    unknown = summarise(necklaces + watches, label_sizes={"necklace": 2})["across_queries"]
    assert unknown["max_group_top_share_floor"] == round(10 / 30, 4)  # type: ignore[index]
