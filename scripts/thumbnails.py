"""The template browser's picture of each example workflow (<name>.jpg beside it, harness/templates.py).

Every front-end of the matrix shows exactly /api/workflow_templates/<pack>/<name>.jpg on the template's card, in a
square box, and takes the card's title and description from the file name alone. So the picture carries what the
workflow is for: its one-line description under a picture of it. The picture is the demo's own output where the
workflow has one (docs/, written by `make demo`), a diagram of the graph otherwise: the nodes where the workflow
places them, the RLG nodes in colour, the links between them.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from harness.host import ROOT

SIZE = 512
CAPTION = 132  # the strip under the picture that holds the description
BACKGROUND = (30, 30, 34)
CAPTION_BACKGROUND = (18, 18, 20)
TEXT = (236, 236, 236)
RLG = (214, 120, 40)  # the RLG nodes
LOADER = (62, 96, 80)
OTHER = (70, 72, 84)
NOTE = (92, 86, 52)
LINK = (150, 150, 160)
DOCS = ROOT / "docs"


def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)  # Pillow's own scalable font: the same picture on every machine


def _caption(draw: ImageDraw.ImageDraw, text: str) -> None:
    draw.rectangle([0, SIZE - CAPTION, SIZE, SIZE], fill=CAPTION_BACKGROUND)
    for size in (28, 26, 24, 22, 20):
        font = _font(size)
        width = max(8, int(SIZE / (size * 0.52)))
        lines = textwrap.wrap(text, width)
        if len(lines) * (size + 6) <= CAPTION - 16 and all(draw.textlength(line, font=font) <= SIZE - 24
                                                           for line in lines):
            break
    y = SIZE - CAPTION + (CAPTION - len(lines) * (size + 6)) // 2
    for line in lines:
        draw.text((12, y), line, fill=TEXT, font=font)
        y += size + 6


def _fit(picture: Image.Image, box: tuple[int, int]) -> Image.Image:
    scale = min(box[0] / picture.width, box[1] / picture.height)
    return picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                          Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS)


def _demo_rows() -> Image.Image | None:
    """The demo's samples at rlg_scale 0, 1, 2 and 3 (rows of docs/rlg_demo_samples.png), labelled."""
    path = DOCS / "rlg_demo_samples.png"
    if not path.exists():
        return None
    samples = Image.open(path).convert("RGB")
    rows, label_width = 8, 128  # the figure: 8 rows (w = 0, 0.5, 1, 1.5, 2, 3, RL alone x2), labels on the left
    row_h = samples.height / rows
    cells = 8
    cell_w = (samples.width - label_width) / 16
    out = Image.new("RGB", (150 + round(cells * cell_w), round(4 * row_h)), BACKGROUND)
    draw = ImageDraw.Draw(out)
    for i, (row, label) in enumerate(((0, "rlg_scale 0"), (2, "rlg_scale 1"), (4, "rlg_scale 2"), (5, "rlg_scale 3"))):
        strip = samples.crop((label_width, round(row * row_h), label_width + round(cells * cell_w),
                              round((row + 1) * row_h)))
        out.paste(strip, (150, round(i * row_h)))
        draw.text((6, round(i * row_h + row_h / 2 - 9)), label, fill=TEXT, font=_font(18))
    return out


def _demo_sweep() -> Image.Image | None:
    path = DOCS / "rlg_sweep_grid.png"
    return Image.open(path).convert("RGB") if path.exists() else None


PICTURES = {"rlg_demo": _demo_rows, "rlg_demo_sweep": _demo_sweep}


def _node_color(node: dict) -> tuple[int, int, int]:
    kind = node["type"]
    if kind.startswith("RLG") and not kind.startswith("RLGDemo"):
        return RLG
    if kind == "Note":
        return NOTE
    if "Loader" in kind:
        return LOADER
    return OTHER


def _short_title(node: dict) -> str:
    title = node.get("title") or node["type"]
    return {"CheckpointLoaderSimple": "Load Checkpoint", "RLGLoraLoaderModelOnly": "RL LoRA",
            "LoraLoaderModelOnly": "LoRA", "UNETLoader": "Load Model", "CLIPTextEncode": "Prompt",
            "KSamplerAdvanced": "KSampler", "SamplerCustomAdvanced": "Sampler", "RLGApplyMulti": "RLG Apply (several)",
            "RLGRLModel": "RLG RL Model"}.get(node["type"], title)


def diagram(workflow: dict, box: tuple[int, int]) -> Image.Image:
    """The graph as it is laid out: a box per node (title bar included), RLG nodes in colour, the links."""
    nodes = {n["id"]: n for n in workflow["nodes"]}
    x0 = min(n["pos"][0] for n in nodes.values())
    y0 = min(n["pos"][1] - 30 for n in nodes.values())
    x1 = max(n["pos"][0] + n["size"][0] for n in nodes.values())
    y1 = max(n["pos"][1] + n["size"][1] for n in nodes.values())
    pad = 14
    scale = min((box[0] - 2 * pad) / (x1 - x0), (box[1] - 2 * pad) / (y1 - y0))
    off = (pad + ((box[0] - 2 * pad) - (x1 - x0) * scale) / 2, pad + ((box[1] - 2 * pad) - (y1 - y0) * scale) / 2)

    def at(x: float, y: float) -> tuple[float, float]:
        return off[0] + (x - x0) * scale, off[1] + (y - y0) * scale

    out = Image.new("RGB", box, BACKGROUND)
    draw = ImageDraw.Draw(out)
    for link in workflow.get("links", []):
        _, origin, _, target, _, _ = link[:6]
        a, b = nodes.get(origin), nodes.get(target)
        if a is None or b is None:
            continue
        start = at(a["pos"][0] + a["size"][0], a["pos"][1] + 10)
        end = at(b["pos"][0], b["pos"][1] + 10)
        mid = (start[0] + end[0]) / 2
        draw.line([start, (mid, start[1]), (mid, end[1]), end], fill=LINK, width=2)
    font = _font(max(10, min(16, round(120 * scale))))
    for node in nodes.values():
        left, top = at(node["pos"][0], node["pos"][1] - 30)
        right, bottom = at(node["pos"][0] + node["size"][0], node["pos"][1] + node["size"][1])
        color = _node_color(node)
        draw.rounded_rectangle([left, top, right, bottom], radius=4, fill=tuple(c // 2 for c in color), outline=color,
                               width=2)
        draw.rectangle([left + 2, top + 2, right - 2, min(bottom - 2, top + 30 * scale + 2)], fill=color)
        title = _short_title(node)
        while title and draw.textlength(title, font=font) > right - left - 6:
            title = title[:-1]
        draw.text((left + 4, top + 3), title, fill=TEXT, font=font)
    return out


def write_thumbnail(name: str, workflow: dict, description: str, path: Path) -> None:
    box = (SIZE, SIZE - CAPTION)
    canvas = Image.new("RGB", (SIZE, SIZE), BACKGROUND)
    picture = PICTURES[name]() if name in PICTURES else None
    if picture is None:
        picture = diagram(workflow, box)
    picture = _fit(picture, box)
    canvas.paste(picture, ((box[0] - picture.width) // 2, (box[1] - picture.height) // 2))
    _caption(ImageDraw.Draw(canvas), description)
    canvas.save(path, "JPEG", quality=88, optimize=True)
