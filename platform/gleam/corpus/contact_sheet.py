"""A contact sheet per query modality: sample (query, tile) pairs side by side, for a human glance.

Reading the pixels of a few pairs catches what counts cannot: swapped views, wrong rotation, a
resize that squashed panoramas.
"""

from __future__ import annotations

import io

import pyarrow.compute as pc
from PIL import Image, ImageDraw

from gleam.corpus.reader import PreparedCorpus

THUMB_HEIGHT = 128
PAD = 4


def _thumb(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    width = max(1, round(image.width * THUMB_HEIGHT / image.height))
    return image.resize((width, THUMB_HEIGHT))


def contact_sheets(corpus: PreparedCorpus, pairs: int) -> dict[str, Image.Image]:
    """modality -> sheet of up to `pairs` rows (query | its tile), first query ids in sorted order."""
    if pairs <= 0:
        return {}
    meta = corpus.read("queries", columns=["query_id", "modality", "tile_id"]).to_pylist()
    chosen: dict[str, list[dict]] = {}
    for row in sorted(meta, key=lambda r: r["query_id"]):
        if len(chosen.setdefault(row["modality"], [])) < pairs:
            chosen[row["modality"]].append(row)
    query_ids = [r["query_id"] for rows in chosen.values() for r in rows]
    tile_ids = list({r["tile_id"] for rows in chosen.values() for r in rows})
    if not query_ids:
        return {}
    queries = corpus.read("queries", ["query_id", "image"], pc.field("query_id").isin(query_ids)).to_pylist()
    tiles = corpus.read("tiles", ["tile_id", "image"], pc.field("tile_id").isin(tile_ids)).to_pylist()
    query_images = {r["query_id"]: r["image"] for r in queries}
    tile_images = {r["tile_id"]: r["image"] for r in tiles}
    return {m: _sheet(rows, query_images, tile_images) for m, rows in sorted(chosen.items())}


def _sheet(rows: list[dict], query_images: dict[str, bytes], tile_images: dict[str, bytes]) -> Image.Image:
    pairs = [(_thumb(query_images[r["query_id"]]), _thumb(tile_images[r["tile_id"]]), r) for r in rows]
    width = max(q.width + t.width for q, t, _ in pairs) + 3 * PAD
    height = len(pairs) * (THUMB_HEIGHT + PAD + 12) + PAD
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    y = PAD
    for query, tile, row in pairs:
        draw.text((PAD, y), f"{row['query_id']} -> {row['tile_id']}", fill="black")
        y += 12
        sheet.paste(query, (PAD, y))
        sheet.paste(tile, (2 * PAD + query.width, y))
        y += THUMB_HEIGHT + PAD
    return sheet
