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


def test_group_score_is_the_sum_for_softmax_and_the_max_for_sigmoid() -> None:
    labels = ["heels", "shoes", "bag"]
    targets = np.array([[1, 1, 0], [0, 0, 1]])  # footwear in the first photo only
    scores = np.array([[0.2, 0.2, 0.6], [0.3, 0.0, 0.7]])
    # sum: footwear 0.4 vs 0.3 -> the right photo first (AP 100); max: 0.2 vs 0.3 -> second (AP 50)
    softmax = multilabel_report(targets, scores, labels, "softmax")["groups"]["map"]
    sigmoid = multilabel_report(targets, scores, labels, "sigmoid")["groups"]["map"]
    assert softmax == pytest.approx(100.0) and sigmoid == pytest.approx(75.0)  # bags: 100 in both
