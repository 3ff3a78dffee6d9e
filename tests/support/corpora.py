"""Raw corpora built on the spot, in the generic manifest layout, for prepare tests."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import bad_images

MANIFEST_COLUMNS = ["query_uri", "modality", "tile_uri", "location_id", "lat", "lon", "split"]


@dataclass
class RawCorpus:
    root: Path
    rows: list[dict[str, str]] = field(default_factory=list)

    def file(self, relative: str, data: bytes) -> str:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return relative

    def row(self, query: str, modality: str, tile: str, location: str, **extra: str) -> None:
        self.rows.append(
            {"query_uri": query, "modality": modality, "tile_uri": tile, "location_id": location, **extra}
        )

    def write_manifest(self, name: str = "manifest.csv") -> Path:
        path = self.root / name
        with path.open("w", newline="") as handle:
            # optional columns (gsd_m, set_id, ...) only when a row gives them
            extra = sorted({c for row in self.rows for c in row} - set(MANIFEST_COLUMNS))
            columns = [*MANIFEST_COLUMNS, *extra]
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            for row in self.rows:
                writer.writerow({c: row.get(c, "") for c in columns})
        return path


# (file name, modality, tile, bytes builder, expected reject reason or None)
def bad_input_corpus(root: Path) -> tuple[RawCorpus, dict[str, str | None]]:
    """One raw corpus holding every kind of bad input the platform promises to handle.

    Returns the corpus and the expected outcome per query/tile file name: None = accepted, else the
    reject reason.
    """
    corpus = RawCorpus(root)
    expected: dict[str, str | None] = {}
    tile_bytes = {f"t{i}": bad_images.jpeg((80, 80), seed=100 + i) for i in range(1, 5)}
    for name, data in tile_bytes.items():
        corpus.file(f"sat/{name}.jpg", data)
        expected[f"{name}.jpg"] = None
    corpus.file("sat/tdup.jpg", tile_bytes["t1"])  # same bytes as t1: kept once
    expected["tdup.jpg"] = "duplicate"
    corpus.file("sat/tbroken.jpg", bad_images.truncated_jpeg(seed=5))
    expected["tbroken.jpg"] = "decode_error"

    drone_ok = bad_images.jpeg((96, 64), seed=1)
    cases = [
        ("ok.jpg", "drone", "t1", drone_ok, None),
        ("gray.jpg", "ground", "t1", bad_images.grayscale_jpeg(), None),
        ("cmyk.jpg", "drone", "t2", bad_images.cmyk_jpeg(), None),
        ("deep16.png", "streetmap", "t2", bad_images.png_16bit_gray(), None),
        ("alpha.png", "panorama", "t3", bad_images.png_with_alpha((128, 64)), None),
        ("palette.png", "ground", "t3", bad_images.palette_png(), None),
        ("rotated.jpg", "ground", "t4", bad_images.exif_rotated_jpeg(), None),
        ("to_dup_tile.jpg", "drone", "tdup", bad_images.jpeg((64, 64), seed=9), None),
        ("empty.jpg", "drone", "t1", b"", "empty_file"),
        ("truncated.jpg", "drone", "t2", bad_images.truncated_jpeg(seed=2), "decode_error"),
        ("corrupt.jpg", "drone", "t2", bad_images.corrupt_jpeg(seed=3), "decode_error"),
        ("notes.jpg", "ground", "t3", bad_images.text_file(), "not_an_image"),
        ("bomb.png", "drone", "t1", bad_images.png_header_only(100_000, 100_000), "pixel_limit"),
        ("wide.png", "drone", "t1", bad_images.png_header_only(40_000, 64), "too_large"),
        ("tiny.jpg", "ground", "t2", bad_images.tiny_jpeg(), "too_small"),
        ("to_broken_tile.jpg", "drone", "tbroken", bad_images.jpeg((64, 64), seed=11), "missing_pair"),
        ("ok_copy.jpg", "drone", "t2", drone_ok, "duplicate"),
        ("thermal.jpg", "thermal", "t1", bad_images.jpeg((64, 64), seed=12), "unknown_modality"),
    ]
    for name, modality, tile, data, outcome in cases:
        corpus.file(f"queries/{name}", data)
        corpus.row(f"queries/{name}", modality, f"sat/{tile}.jpg", f"loc-{tile}")
        expected[name] = outcome
    corpus.row("queries/no_tile.jpg", "drone", "", "loc-none")
    corpus.file("queries/no_tile.jpg", bad_images.jpeg((64, 64), seed=13))
    expected["no_tile.jpg"] = "missing_pair"
    corpus.row("queries/not_there.jpg", "ground", "sat/t4.jpg", "loc-t4")
    expected["not_there.jpg"] = "missing_file"
    corpus.row("", "", "sat/t4.jpg", "loc-t4")  # t4 also as a tile-only row: still one tile
    return corpus, expected
