"""A captioned grid of demo phantoms, for a person to check that findings are drawn as reported."""

from __future__ import annotations

import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from rrg.demo.phantom import findings_from_report

# The findings shown, one or two studies each, in this order; then normal studies.
_SHOWCASE = (
    "Cardiomegaly",
    "Pleural Effusion",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Atelectasis",
    "Lung Lesion",
    "Lung Opacity",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Pleural Other",
    "Support Devices",
)


def _caption(record: dict) -> str:
    """What the phantom shows: each drawn finding with its side, or that the report is normal."""
    drawn = findings_from_report(record["id"], record["labels"], record["triplets"])
    if not drawn:
        return "normal (No Finding)" if record["labels"].get("No Finding") == "positive" else "nothing drawn"
    return ", ".join(
        f"{f.kind.replace('_', ' ')}" + ("" if f.side == "midline" else f" ({f.side})") for f in drawn
    )


def select_showcase(records: list[dict], per_finding: int = 2, normals: int = 4) -> list[dict]:
    """Studies that between them show each finding, preferring reports with few other findings."""

    def n_positive(record):
        return sum(status == "positive" for status in record["labels"].values())

    chosen: list[dict] = []
    for label in _SHOWCASE:
        candidates = [r for r in records if r["labels"].get(label) == "positive" and r not in chosen]
        chosen += sorted(candidates, key=lambda r: (n_positive(r), r["id"]))[:per_finding]
    normal = [r for r in records if r["labels"].get("No Finding") == "positive"]
    return chosen + sorted(normal, key=lambda r: r["id"])[:normals]


def render_gallery(root: Path, records: list[dict], columns: int = 7, tile: int = 256) -> Image.Image:
    """The showcase studies' phantoms in a grid, each captioned with its positive labels."""
    shown = select_showcase(records)
    rows = -(-len(shown) // columns)
    caption_height, header = 52, 56
    sheet = Image.new("L", (columns * tile, header + rows * (tile + caption_height)), color=255)
    draw = ImageDraw.Draw(sheet)
    title_font = ImageFont.load_default(size=20)
    font = ImageFont.load_default(size=13)
    draw.text(
        (10, 8),
        "rrg demo set: SYNTHETIC phantom radiographs rendered from IU X-Ray report text. Not patient images.",
        fill=0,
        font=title_font,
    )
    draw.text(
        (10, 33),
        "Each tile: one study's phantom; caption: the findings drawn (side as its report states), from its labels and triplets.",
        fill=60,
        font=font,
    )
    for i, record in enumerate(shown):
        x, y = (i % columns) * tile, header + (i // columns) * (tile + caption_height)
        with Image.open(root / record["image"]) as image:
            sheet.paste(image.convert("L").resize((tile, tile)), (x, y))
        lines = textwrap.wrap(f"{record['id']}: {_caption(record)}", width=38)[:3]
        draw.multiline_text((x + 4, y + tile + 2), "\n".join(lines), fill=0, font=font, spacing=1)
    return sheet
