"""The retrieval grid: one row per query, its thumbnail then its top-k tiles, the correct tile framed green.

A grid is the fastest way to see *why* a number is low (wrong modality size, rotated tiles, a label
bug that puts the positive nowhere), so it is logged next to the metrics of every evaluation.
`search_grid` builds the rows from a search over a prepared corpus; `retrieval_grid` draws them.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow.compute as pc
from PIL import Image, ImageDraw, ImageFont, ImageOps

from gleam.corpus.reader import PreparedCorpus
from gleam.model.embedding import Embedded
from gleam.retrieval.search import SearchFn

GRID_TOP_K = 5  # tiles shown per query

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


def search_grid(
    corpus: PreparedCorpus, search: SearchFn, depth: int, queries: Embedded, n: int, title: str
) -> Image.Image:
    """The first `n` queries (by id) with their top tiles; rank of the positive within `depth` results.

    Tiles the corpus does not hold (an index built from another corpus) are left out of the rows.
    """
    n = min(n, len(queries.ids))
    scores, ranked = search(queries.vectors[:n], depth)
    wanted_tiles = sorted({t for t in ranked[:, :GRID_TOP_K].reshape(-1).tolist() if t is not None})
    tile_images = _images(corpus, "tiles", "tile_id", wanted_tiles)
    query_images = _images(corpus, "queries", "query_id", queries.ids[:n])
    rows = []
    for i in range(n):
        positive = queries.labels[i]
        listed = ranked[i].tolist()
        rank = listed.index(positive) + 1 if positive in listed else None
        candidates = [
            Candidate(tile_images[t], t, float(s), t == positive)
            for t, s in zip(listed[:GRID_TOP_K], scores[i, :GRID_TOP_K], strict=True)
            if t in tile_images
        ]
        rows.append(GridRow(query_images[queries.ids[i]], queries.ids[i], candidates, rank))
    return retrieval_grid(rows, title=title, top_k=GRID_TOP_K)


def _images(corpus: PreparedCorpus, part: str, id_column: str, ids: Sequence[str]) -> dict[str, bytes]:
    """JPEG bytes by id, read back from the corpus (only the few a grid shows)."""
    table = corpus.read(part, [id_column, "image"], filter=pc.field(id_column).isin(list(ids)))
    return dict(zip(table.column(id_column).to_pylist(), table.column("image").to_pylist(), strict=True))
