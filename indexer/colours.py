"""Colour families: a catalogue's ``baseColour`` names and a photographed item's pixels, on one scale.

Used by the shop-the-look evaluation to ask whether a returned product looks like the item it
answers, not only whether it is of its category. Names are grouped into eleven families (the shop's
names are finer than a photo's light allows: "Navy Blue" and "Blue", "Tan" and "Brown"); pixels are
named by the nearest anchor colour in CIELAB.
"""

from __future__ import annotations

import numpy as np

# baseColour name -> family. "Multi", "NA" and unknown names have no family (left out of the score).
NAME_TO_FAMILY = {
    "Black": "black",
    "White": "white",
    "Off White": "white",
    "Cream": "white",
    "Grey": "grey",
    "Grey Melange": "grey",
    "Charcoal": "grey",
    "Silver": "grey",
    "Steel": "grey",
    "Metallic": "grey",
    "Blue": "blue",
    "Navy Blue": "blue",
    "Teal": "blue",
    "Turquoise Blue": "blue",
    "Red": "red",
    "Maroon": "red",
    "Burgundy": "red",
    "Rust": "red",
    "Pink": "pink",
    "Magenta": "pink",
    "Peach": "pink",
    "Purple": "purple",
    "Lavender": "purple",
    "Mauve": "purple",
    "Green": "green",
    "Olive": "green",
    "Sea Green": "green",
    "Fluorescent Green": "green",
    "Yellow": "yellow",
    "Mustard": "yellow",
    "Gold": "yellow",
    "Orange": "orange",
    "Copper": "orange",
    "Brown": "brown",
    "Coffee Brown": "brown",
    "Tan": "brown",
    "Khaki": "brown",
    "Beige": "brown",
    "Taupe": "brown",
    "Bronze": "brown",
    "Nude": "brown",
    "Skin": "brown",
}

# sRGB anchors of each family (several shades where the family spans a range).
ANCHORS: dict[str, list[tuple[int, int, int]]] = {
    "black": [(20, 20, 22)],
    "white": [(240, 240, 240), (235, 225, 205)],
    "grey": [(128, 128, 128), (75, 75, 80), (185, 185, 190)],
    "blue": [(40, 70, 160), (30, 35, 70), (80, 130, 200), (0, 120, 130)],
    "red": [(190, 30, 40), (110, 25, 35)],
    "pink": [(240, 150, 180), (200, 40, 130), (245, 190, 170)],
    "purple": [(110, 50, 140), (180, 150, 210)],
    "green": [(40, 140, 60), (100, 110, 40), (20, 80, 50)],
    "yellow": [(230, 200, 40), (200, 160, 40)],
    "orange": [(240, 130, 30), (190, 100, 50)],
    "brown": [(110, 70, 40), (190, 150, 100), (215, 195, 160), (160, 140, 100)],
}


def family_of_name(name: object) -> str | None:
    return NAME_TO_FAMILY.get(str(name).strip())


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) sRGB in 0-255 -> CIELAB (D65)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    matrix = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = linear @ matrix.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


_FAMILIES = [family for family, shades in ANCHORS.items() for _ in shades]
_ANCHOR_LAB = srgb_to_lab(np.array([shade for shades in ANCHORS.values() for shade in shades]))


def family_of_pixels(pixels: np.ndarray) -> str | None:
    """The family most of the (N, 3) sRGB pixels fall in (each pixel named by its nearest anchor)."""
    if len(pixels) == 0:
        return None
    lab = srgb_to_lab(pixels)
    nearest = np.argmin(((lab[:, None, :] - _ANCHOR_LAB[None]) ** 2).sum(-1), 1)
    votes: dict[str, int] = {}
    for index in nearest:
        votes[_FAMILIES[index]] = votes.get(_FAMILIES[index], 0) + 1
    return max(votes, key=lambda family: votes[family])
