"""Item labels and coarse item groups.

CCP's 59 labels less the non-items give 56 item labels. The groups exist because CCP's two
annotation sets name the same items differently (pixel annotators say `shoes` where taggers said
`heels`), so a score over groups measures the model rather than that shift.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NON_ITEMS = ("null", "skin", "hair")

# Every CCP item label belongs to exactly one group.
ITEM_GROUPS: dict[str, tuple[str, ...]] = {
    "footwear": ("boots", "clogs", "flats", "heels", "loafers", "pumps", "sandals", "shoes", "sneakers", "wedges"),
    "bags": ("bag", "purse", "wallet"),
    "tops": (
        "blouse",
        "bodysuit",
        "cardigan",
        "hoodie",
        "jumper",
        "shirt",
        "sweater",
        "sweatshirt",
        "t-shirt",
        "top",
        "vest",
    ),
    "outerwear": ("blazer", "cape", "coat", "jacket", "suit"),
    "dresses": ("dress", "romper"),
    "bottoms": ("jeans", "leggings", "pants", "shorts", "skirt"),
    "legwear": ("socks", "stockings", "tights"),
    "eyewear": ("glasses", "sunglasses"),
    "jewellery": ("bracelet", "earrings", "necklace", "ring", "watch"),
    "headwear": ("hat",),
    "neckwear": ("scarf", "tie"),
    "belts": ("belt",),
    "gloves": ("gloves",),
    "intimates": ("bra", "intimate", "panties", "swimwear"),
    "accessories": ("accessories",),
}
LABEL_TO_GROUP = {label: group for group, labels in ITEM_GROUPS.items() for label in labels}


def item_labels(all_labels: Sequence[str], non_items: Sequence[str] = NON_ITEMS) -> list[str]:
    """The labels that name items, in their original order."""
    return [name for name in all_labels if name not in set(non_items)]


def group_of(label: str) -> str:
    """A label's coarse group; a label outside the table is its own group."""
    return LABEL_TO_GROUP.get(label, label)


def group_names(labels: Sequence[str]) -> list[str]:
    return sorted({group_of(label) for label in labels})


def group_matrix(labels: Sequence[str]) -> np.ndarray:
    """(C, G) 0/1 matrix mapping labels to the groups of ``group_names(labels)``."""
    groups = group_names(labels)
    matrix = np.zeros((len(labels), len(groups)), dtype=np.float32)
    for i, label in enumerate(labels):
        matrix[i, groups.index(group_of(label))] = 1
    return matrix


def to_groups(values: np.ndarray, labels: Sequence[str], reduce: str = "max") -> np.ndarray:
    """(N, C) label targets or scores -> (N, G) group values over each group's labels.

    "max" for 0/1 targets; "sum" for softmax probabilities, whose sum over a group's labels is the
    probability of the group; "any" for independent (sigmoid) probabilities: 1 - prod(1 - p), the
    probability that any of the group's labels is present."""
    matrix = group_matrix(labels).astype(bool)
    columns = [values[:, matrix[:, g]] for g in range(matrix.shape[1])]
    if reduce == "sum":
        return np.stack([c.sum(1) for c in columns], 1)
    if reduce == "any":
        return np.stack([1 - (1 - c).prod(1) for c in columns], 1)
    if reduce != "max":
        raise ValueError(f"reduce must be 'max', 'sum' or 'any', not {reduce!r}")
    return np.stack([c.max(1) for c in columns], 1)


# How a model's label probabilities make a group's, by its classification (see to_groups).
GROUP_SCORE = {"softmax": "sum", "sigmoid": "any", "asymmetric": "any"}


def group_probabilities(probabilities: np.ndarray, labels: Sequence[str], classification: str) -> np.ndarray:
    """(N, C) label probabilities of a model -> (N, G) probabilities of the groups of
    ``group_names(labels)``, in the form the model was trained with (GROUP_SCORE)."""
    return to_groups(probabilities, labels, GROUP_SCORE[classification])
