from typing import cast

import numpy as np
import pytest

from model.metrics import ap_all, multilabel_report, per_label_ap


def test_ap_all_and_map_by_hand() -> None:
    targets = np.array([[1, 0], [0, 1], [1, 0]])
    scores = np.array([[0.9, 0.1], [0.8, 0.7], [0.3, 0.2]])
    # label 0: ranking 0.9 (+), 0.8 (-), 0.3 (+): AP = (1/1 + 2/3) / 2; label 1: 0.7 (+) first: AP = 1
    aps = per_label_ap(targets, scores)
    assert aps == pytest.approx([(1 + 2 / 3) / 2, 1.0])
    # micro: 0.9 +, 0.8 -, 0.7 +, 0.3 +, 0.2 -, 0.1 -: AP = (1 + 2/3 + 3/4) / 3
    assert ap_all(targets, scores) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)


def test_report_skips_absent_labels_and_scores_softmax_groups_by_their_sum() -> None:
    labels = ["heels", "shoes", "bag"]
    targets = np.array([[1, 0, 0], [0, 0, 1], [1, 0, 0]])  # `shoes` is never present
    scores = np.array([[0.3, 0.3, 0.4], [0.1, 0.1, 0.8], [0.25, 0.25, 0.5]])
    report = multilabel_report(targets, scores, labels, "softmax")
    assert report["labels"]["present"] == 2 and "shoes" not in report["per_label_ap"]
    # footwear = heels + shoes: 0.6, 0.2, 0.5 -> both footwear photos rank first: AP 100
    assert report["per_label_ap"]["heels"] == 100.0
    assert report["groups"]["map"] == pytest.approx(100.0)
    assert multilabel_report(targets, scores, labels, "sigmoid")["labels"] == report["labels"]  # labels: same


def test_group_score_is_the_sum_for_softmax_and_any_label_for_sigmoid() -> None:
    labels = ["heels", "shoes", "bag"]
    targets = np.array([[1, 1, 0], [0, 0, 1]])  # footwear in the first photo only
    scores = np.array([[0.2, 0.2, 0.6], [0.3, 0.0, 0.7]])
    # sum: footwear 0.4 vs 0.3 -> the right photo first (AP 100); any (1 - prod(1 - p)): 0.36 vs 0.3 ->
    # first too. The max (0.2 vs 0.3, AP 50), used before, put the photo with the split evidence second.
    softmax = multilabel_report(targets, scores, labels, "softmax")
    sigmoid = multilabel_report(targets, scores, labels, "sigmoid")
    assert softmax["groups"]["map"] == pytest.approx(100.0) and sigmoid["groups"]["map"] == pytest.approx(100.0)
    assert (softmax["group_score"], sigmoid["group_score"]) == ("sum", "any")  # recorded with the figures


# Four photos, four labels; `hat` is never present. Every score differs, so no ranking has ties.
TOY_LABELS = ["heels", "sneakers", "bag", "hat"]  # groups: footwear, footwear, bags, headwear
TOY_TARGETS = np.array([[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 1, 0]])
TOY_SCORES = np.array(
    [
        [0.60, 0.10, 0.20, 0.15],
        [0.12, 0.30, 0.90, 0.25],
        [0.45, 0.42, 0.50, 0.33],
        [0.22, 0.35, 0.40, 0.05],
    ]
)


def test_labels_without_a_positive_are_nan_and_left_out_of_map() -> None:
    aps = per_label_ap(TOY_TARGETS, TOY_SCORES)
    # heels: its photo ranks first: 1; sneakers: 0.42 -, 0.35 -, 0.30 +: 1/3;
    # bag: 0.90 +, 0.50 -, 0.40 +: (1 + 2/3) / 2; hat: no positive, no AP
    assert aps[:3] == pytest.approx([1.0, 1 / 3, 5 / 6]) and np.isnan(aps[3])
    report = multilabel_report(TOY_TARGETS, TOY_SCORES, TOY_LABELS, "sigmoid")
    labels = cast(dict[str, float], report["labels"])
    assert labels["present"] == 3
    assert labels["map"] == pytest.approx(100 * (1 + 1 / 3 + 5 / 6) / 3)  # the NaN counted as 0 would give 3/4 of it
    # micro AP keeps every pair, `hat`'s negatives too: 0.90 +, 0.60 +, 0.50, 0.45, 0.42, 0.40 +, 0.35, 0.33, 0.30 +
    assert labels["ap_all"] == pytest.approx(100 * (1 + 1 + 3 / 6 + 4 / 9) / 4)
    assert report["per_label_ap"] == {"heels": 100.0, "sneakers": 33.33, "bag": 83.33}  # no `hat`


def test_per_group_ap_scores_a_sigmoid_group_by_the_probability_of_any_of_its_labels() -> None:
    report = multilabel_report(TOY_TARGETS, TOY_SCORES, TOY_LABELS, "sigmoid")
    # footwear (heels, sneakers) is in photos 0 and 1; its score is 1 - (1 - heels)(1 - sneakers):
    # 0.640 +, 0.384 +, 0.681 -, 0.493 -: ranked 0.681 -, 0.640 +, 0.493 -, 0.384 +: AP (1/2 + 2/4) / 2.
    # bags = bag: (1 + 2/3) / 2. headwear: never present, left out.
    assert report["per_group_ap"] == {"bags": 83.33, "footwear": 50.0}
    groups = cast(dict[str, float], report["groups"])
    assert groups["present"] == 2 and groups["map"] == pytest.approx(100 * (5 / 6 + 1 / 2) / 2)
    # micro over the 12 photo-group pairs: 0.90 +, 0.681, 0.640 +, 0.50, 0.493, 0.40 +, 0.384 +, ...
    assert groups["ap_all"] == pytest.approx(100 * (1 + 2 / 3 + 3 / 6 + 4 / 7) / 4)
    # a softmax model's group score is the sum of its labels' probabilities: photo 2 then ranks first
    softmax = multilabel_report(TOY_TARGETS, TOY_SCORES, TOY_LABELS, "softmax")
    assert softmax["per_group_ap"] == {"bags": 83.33, "footwear": 50.0}
    assert softmax["per_label_ap"] == report["per_label_ap"]  # labels are scored the same either way
