"""One labelled picture from a scale sweep's images: plain torch and Pillow (which ComfyUI ships).

The images come scale by scale (all images of the first scale, then the next), as RLG Scale Sweep
lays out its batch; each scale becomes a column, with its label under every image.

GridLayout is where every pixel goes (the drawing below and the front-end's scrubber, which crops one
column out of the saved picture with its boxes, use the same numbers): no ComfyUI import here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)
GAP = 4


def scale_label(scale: float) -> str:
    return f"rlg_scale {scale:g}"


@dataclass(frozen=True)
class GridLayout:
    """The grid of `columns` scales x `rows` images of `image_width` x `image_height` pixels.

    Each cell is the image with its label strip under it; `gap` pixels of background lie between cells and
    around the grid.
    """

    columns: int
    rows: int
    image_width: int
    image_height: int
    gap: int = GAP

    @property
    def text_size(self) -> int:
        return max(10, min(32, self.image_width // 8))

    @property
    def strip(self) -> int:
        """The label strip's height, under each image."""
        return self.text_size + 2 * self.gap

    @property
    def cell_width(self) -> int:
        return self.image_width + self.gap

    @property
    def cell_height(self) -> int:
        return self.image_height + self.strip

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the whole picture."""
        return self.columns * self.cell_width + self.gap, self.rows * self.cell_height + self.gap

    def image_box(self, column: int, row: int) -> tuple[int, int, int, int]:
        """(x, y, width, height) of the image of scale `column`, row `row`, in the picture's pixels."""
        if not (0 <= column < self.columns and 0 <= row < self.rows):
            raise IndexError(f"no cell ({column}, {row}) in a grid of {self.columns} x {self.rows}")
        return (self.gap + column * self.cell_width, self.gap + row * self.cell_height, self.image_width,
                self.image_height)

    def label_box(self, column: int, row: int) -> tuple[int, int, int, int]:
        """(x, y, width, height) of the label strip under that image."""
        x, y, w, h = self.image_box(column, row)
        return x, y + h, w, self.strip

    def batch_index(self, column: int, row: int) -> int:
        """Which image of the sweep's batch lies in that cell (the batch is scale by scale)."""
        self.image_box(column, row)
        return column * self.rows + row

    def as_dict(self) -> dict:
        """What the front-end needs to crop exactly one column: JSON-ready, every number in pixels."""
        width, height = self.size
        return {
            "size": [width, height],
            "columns": self.columns,
            "rows": self.rows,
            "image": [self.image_width, self.image_height],
            "gap": self.gap,
            "boxes": [[list(self.image_box(c, r)) for r in range(self.rows)] for c in range(self.columns)],
        }


def grid_layout(count: int, height: int, width: int, columns: int, gap: int = GAP) -> GridLayout:
    """The layout of `count` images of height x width in `columns` columns (count must split evenly)."""
    if columns < 1 or count < 1 or count % columns:
        raise ValueError(f"{count} images cannot be split evenly over {columns} scales")
    return GridLayout(columns=columns, rows=count // columns, image_width=width, image_height=height, gap=gap)


def _fitted(label: str, draw: ImageDraw.ImageDraw, font, width: int) -> str:
    """The label, or its last word (the value alone) where the whole label is wider than the image."""
    return label if draw.textlength(label, font=font) <= width else label.split()[-1]


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow 10.1+: a scalable built-in font
    except TypeError:
        return ImageFont.load_default()


def sweep_grid(images: torch.Tensor, labels: Sequence[str], gap: int = GAP) -> torch.Tensor:
    """images (N, H, W, C) in 0..1, N = len(labels) * per_label -> one image (1, H', W', 3).

    Column i holds the images of labels[i], top to bottom, each with the label written under it.
    """
    count, height, width = images.shape[0], images.shape[1], images.shape[2]
    if not labels:
        raise ValueError(f"{count} images cannot be split evenly over 0 scales")
    layout = grid_layout(count, height, width, len(labels), gap)
    canvas = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = _font(layout.text_size)
    pixels = (images[..., :3].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    for i, label in enumerate(labels):
        label = _fitted(label, draw, font, width)
        for j in range(layout.rows):
            x, y, _, _ = layout.image_box(i, j)
            canvas.paste(Image.fromarray(pixels[layout.batch_index(i, j)]), (x, y))
            text_w = draw.textlength(label, font=font)
            draw.text((x + max(0, (width - text_w) / 2), y + height + gap // 2), label, fill=TEXT, font=font)
    return torch.from_numpy(np.asarray(canvas).astype(np.float32) / 255.0)[None]
