"""Pictures for people: photos with part boxes, tiled side by side."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324", "#469990")


def draw_boxes(
    photo: Image.Image,
    boxes: Sequence[tuple[tuple[float, float, float, float], str]],
    caption: str = "",
    height: int = 420,
) -> Image.Image:
    """Scale ``photo`` to ``height`` and draw each (box, text); a caption goes underneath."""
    scale = height / photo.height
    canvas = Image.new("RGB", (int(photo.width * scale), height + (28 if caption else 0)), "white")
    canvas.paste(photo.resize((canvas.width, height)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, (box, text) in enumerate(boxes):
        colour = PALETTE[i % len(PALETTE)]
        x0, y0, x1, y1 = (v * scale for v in box)
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=3)
        draw.rectangle((x0, y0, x0 + 7 * len(text) + 4, y0 + 13), fill=colour)
        draw.text((x0 + 2, y0), text, fill="white")
    if caption:
        draw.text((4, height + 2), caption[: 2 * canvas.width // 12], fill="black")
        draw.text((4, height + 14), caption[2 * canvas.width // 12 : 4 * canvas.width // 12], fill="black")
    return canvas


def tile(panels: Sequence[Image.Image], gap: int = 6) -> Image.Image:
    height = max(p.height for p in panels)
    out = Image.new("RGB", (sum(p.width for p in panels) + gap * (len(panels) - 1), height), "white")
    x = 0
    for panel in panels:
        out.paste(panel, (x, 0))
        x += panel.width + gap
    return out
