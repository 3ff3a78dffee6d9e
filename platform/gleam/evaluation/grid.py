"""The retrieval grid: one row per query, its thumbnail then its top-k tiles, the correct tile framed green.

A grid is the fastest way to see *why* a number is low (wrong modality size, rotated tiles, a label
bug that puts the positive nowhere), so it is logged next to the metrics of every evaluation.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont, ImageOps

CORRECT = (34, 170, 68)
WRONG = (200, 50, 50)
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
MUTED = (110, 110, 110)


@dataclass(frozen=True)
class Candidate:
    """One retrieved tile: its JPEG bytes, id, similarity and whether it is the query's positive."""

    image: bytes
    tile_id: str
    score: float
    correct: bool


@dataclass(frozen=True)
class GridRow:
    """A query and what the search returned for it; `rank` is the 1-based rank of its positive."""

    image: bytes
    query_id: str
    candidates: Sequence[Candidate]
    rank: int | None = None


def _thumbnail(data: bytes, box: tuple[int, int]) -> Image.Image:
    """Fit an image into `box` keeping its aspect ratio (panoramas stay wide)."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    return ImageOps.contain(image, box, Image.BILINEAR)


def _paste_centered(canvas: Image.Image, image: Image.Image, x: int, y: int, box: tuple[int, int]) -> None:
    canvas.paste(image, (x + (box[0] - image.width) // 2, y + (box[1] - image.height) // 2))


def _frame(
    draw: ImageDraw.ImageDraw, x: int, y: int, box: tuple[int, int], colour: tuple, width: int
) -> None:
    draw.rectangle(
        (x - width, y - width, x + box[0] + width - 1, y + box[1] + width - 1), outline=colour, width=width
    )


def retrieval_grid(rows: Sequence[GridRow], title: str = "", thumb: int = 96, top_k: int = 5) -> Image.Image:
    """Render the grid as an RGB image; queries get a box twice as wide as a tile so panoramas fit."""
    if not rows:
        raise ValueError("a retrieval grid needs at least one query")
    font = ImageFont.load_default()
    pad, border, caption = 8, 3, 28
    query_box, tile_box = (2 * thumb, thumb), (thumb, thumb)
    header = 20 if title else 0
    row_height = thumb + caption + pad
    width = pad + query_box[0] + pad * 2 + top_k * (thumb + pad + 2 * border) + pad
    canvas = Image.new("RGB", (width, header + pad + len(rows) * row_height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 4), title, fill=TEXT, font=font)
    for index, row in enumerate(rows):
        y = header + pad + index * row_height
        _paste_centered(canvas, _thumbnail(row.image, query_box), pad, y, query_box)
        rank = f"positive at rank {row.rank}" if row.rank else "positive not in gallery"
        draw.text((pad, y + thumb + 2), _shorten(row.query_id, 30), fill=TEXT, font=font)
        draw.text((pad, y + thumb + 14), rank, fill=MUTED, font=font)
        x = pad + query_box[0] + pad * 2 + border
        for candidate in list(row.candidates)[:top_k]:
            _paste_centered(canvas, _thumbnail(candidate.image, tile_box), x, y, tile_box)
            _frame(draw, x, y, tile_box, CORRECT if candidate.correct else WRONG, border)
            draw.text((x, y + thumb + 4), f"{candidate.score:.3f}", fill=TEXT, font=font)
            draw.text((x, y + thumb + 16), _shorten(candidate.tile_id, 16), fill=MUTED, font=font)
            x += thumb + pad + 2 * border
    return canvas


def _shorten(text: str, limit: int) -> str:
    """Keep the end of a long id (where the distinguishing number is), marking the cut."""
    return text if len(text) <= limit else "..." + text[-(limit - 3) :]
