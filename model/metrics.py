"""Multi-label retrieval metrics of the paper: AP_all (micro AP) and mAP (mean per-label AP)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score

from model.labels import GROUP_SCORE, group_names, group_of, group_probabilities, to_groups


def ap_all(targets: np.ndarray, scores: np.ndarray) -> float:
    """Micro AP over all image-label pairs."""
    return float(average_precision_score(targets.ravel(), scores.ravel()))


def per_label_ap(targets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AP of each label; NaN for labels with no positive."""
    out = np.full(targets.shape[1], np.nan)
    for c in range(targets.shape[1]):
        if targets[:, c].any():
            out[c] = average_precision_score(targets[:, c], scores[:, c])
    return out


def multilabel_report(
    targets: np.ndarray, scores: np.ndarray, labels: Sequence[str], classification: str = "sigmoid"
) -> dict[str, object]:
    """AP_all and mAP (over labels present) over labels and over coarse groups, in percent. A
    group's score is the probability that any of its labels is present (model.labels.group_probabilities:
    the sum of softmax probabilities, or 1 - prod(1 - p) of independent sigmoid probabilities)."""
    report: dict[str, object] = {"group_score": GROUP_SCORE[classification]}
    group_scores = group_probabilities(scores, labels, classification)
    for level, (t, s) in {
        "labels": (targets, scores),
        "groups": (to_groups(targets, labels), group_scores),
    }.items():
        aps = per_label_ap(t, s)
        report[level] = {
            "ap_all": 100 * ap_all(t, s),
            "map": 100 * float(np.nanmean(aps)),
            "present": int((~np.isnan(aps)).sum()),
        }
    report["per_label_ap"] = {
        name: round(100 * float(ap), 2)
        for name, ap in zip(labels, per_label_ap(targets, scores), strict=True)
        if not np.isnan(ap)
    }
    report["per_group_ap"] = {
        name: round(100 * float(ap), 2)
        for name, ap in zip(group_names(labels), per_label_ap(to_groups(targets, labels), group_scores), strict=True)
        if not np.isnan(ap)
    }
    return report


def own_group_report(
    scores: np.ndarray, categories: Sequence[str], labels: Sequence[str], classification: str = "sigmoid"
) -> dict[str, float]:
    """Product photos, each of a known category: the share whose most probable group is the
    category's own (``top1``), and the own group's mean probability (``own_probability``)."""
    groups = group_names(labels)
    grouped = group_probabilities(scores, labels, classification)
    own = np.array([groups.index(group_of(category)) for category in categories])
    rows = np.arange(len(own))
    return {
        "top1": float(np.mean(grouped.argmax(1) == own)),
        "own_probability": float(np.mean(grouped[rows, own])),
        "products": len(own),
    }
