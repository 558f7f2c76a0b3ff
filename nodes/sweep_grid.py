"""One labelled picture from a scale sweep's images: plain torch and Pillow (which ComfyUI ships).

The images come scale by scale (all images of the first scale, then the next), as RLG Scale Sweep
lays out its batch; each scale becomes a column, with its label under every image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)


def scale_label(scale: float) -> str:
    return f"rlg_scale {scale:g}"


def _fitted(label: str, draw: ImageDraw.ImageDraw, font, width: int) -> str:
    """The label, or its last word (the value alone) where the whole label is wider than the image."""
    return label if draw.textlength(label, font=font) <= width else label.split()[-1]


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow 10.1+: a scalable built-in font
    except TypeError:
        return ImageFont.load_default()


def sweep_grid(images: torch.Tensor, labels: Sequence[str], gap: int = 4) -> torch.Tensor:
    """images (N, H, W, C) in 0..1, N = len(labels) * per_label -> one image (1, H', W', 3).

    Column i holds the images of labels[i], top to bottom, each with the label written under it.
    """
    count, height, width = images.shape[0], images.shape[1], images.shape[2]
    if not labels or count % len(labels):
        raise ValueError(f"{count} images cannot be split evenly over {len(labels)} scales")
    per_label = count // len(labels)
    text_size = max(10, min(32, width // 8))
    strip = text_size + 2 * gap
    cell_w, cell_h = width + gap, height + strip
    canvas = Image.new("RGB", (len(labels) * cell_w + gap, per_label * cell_h + gap), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = _font(text_size)
    pixels = (images[..., :3].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    for i, label in enumerate(labels):
        label = _fitted(label, draw, font, width)
        for j in range(per_label):
            x, y = gap + i * cell_w, gap + j * cell_h
            canvas.paste(Image.fromarray(pixels[i * per_label + j]), (x, y))
            text_w = draw.textlength(label, font=font)
            draw.text((x + max(0, (width - text_w) / 2), y + height + gap // 2), label, fill=TEXT, font=font)
    return torch.from_numpy(np.asarray(canvas).astype(np.float32) / 255.0)[None]
