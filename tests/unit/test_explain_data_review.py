"""Human revision: export a split with its images, import the edits back; a bad file changes nothing and
says which row and field."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from gleam.errors import InvalidInputError
from gleam.explain.dataset.review import ReviewFileError, export_split, import_review
from gleam.explain.explanation_set import open_explanation_set
from tests.support.explanation_sets import pairs_from_corpus, write_explanation_set

PLACES = {"a": "test", "b": "test", "c": "train"}


def jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def tiny_corpus(folder: Path) -> str:
    """A prepared corpus written directly in its layout: 3 tiles, one drone query per tile (id with a '/')."""
    from gleam.corpus.schema import QUERIES_SCHEMA, TILES_SCHEMA

    common = {
        "height": 16,
        "width": 16,
        "lat": None,
        "lon": None,
        "source": "t",
        "sha256": "x",
        "source_uri": "u",
    }
    tiles = [
        {**common, "tile_id": f"tile-{p}", "image": jpeg(i), "location_id": p, "split": s}
        for i, (p, s) in enumerate(PLACES.items())
    ]
    queries = [
        {**common, "query_id": f"q/{p}", "modality": "drone", "image": jpeg(10 + i), "tile_id": f"tile-{p}"}
        | {"location_id": p, "split": s}
        for i, (p, s) in enumerate(PLACES.items())
    ]
    for part, rows, schema in (("tiles", tiles, TILES_SCHEMA), ("queries", queries, QUERIES_SCHEMA)):
        (folder / part).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / part / "part.parquet")
    manifest = {"files": {"tiles": ["part.parquet"], "queries": ["part.parquet"], "rejects": []}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return str(folder)


@pytest.fixture
def set_uri(tmp_path: Path) -> str:
    corpus = tiny_corpus(tmp_path / "corpus")
    return write_explanation_set(tmp_path / "set", corpus, pairs_from_corpus(corpus, per_query_negatives=1))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def test_export_writes_the_split_with_images_linked_relative_to_the_file(
    set_uri: str, tmp_path: Path
) -> None:
    result = export_split(set_uri, "test", tmp_path / "out" / "review.jsonl")
    rows = read_jsonl(result.path)
    assert result.rows == len(rows) == 4 and {r["split"] for r in rows} == {"test"}  # 2 queries x (match + 1)
    assert result.images == 2 + 2
    for row in rows:
        query = result.path.parent / row["query_image"]
        assert not Path(row["query_image"]).is_absolute() and query.is_file()
        assert Image.open(query).size == (16, 16)
        assert (result.path.parent / row["tile_image"]).is_file()
        assert row["reasoning_zh"] in (
            "道路布局和屋顶颜色一致。",
            "河流弯曲的方向不同。",
        )  # kept as text, not escaped
    assert "q_a" in rows[0]["query_image"] or "q_b" in rows[0]["query_image"]  # the '/' made safe


def test_import_marks_edited_rows_revised_and_the_others_approved(set_uri: str, tmp_path: Path) -> None:
    before = open_explanation_set(set_uri)
    old_files = before.files("pairs")
    rows = read_jsonl(export_split(set_uri, "test", tmp_path / "review.jsonl").path)
    rows[0]["reasoning_en"] = "  The junction north of the roofs is in both views.  "
    rows[1]["reasoning_zh"] = "两张图像的路口位置相同。"
    result = import_review(set_uri, write_jsonl(tmp_path / "edited.jsonl", rows))
    assert (result.revised, result.approved) == (2, 2)
    after = open_explanation_set(set_uri)
    table = {r["pair_id"]: r for r in after.read("pairs").to_pylist()}
    assert table[rows[0]["pair_id"]]["reasoning_en"] == "The junction north of the roofs is in both views."
    assert table[rows[1]["pair_id"]]["reasoning_zh"] == "两张图像的路口位置相同。"
    assert [table[r["pair_id"]]["review"] for r in rows] == ["revised", "revised", "approved", "approved"]
    train = [r["review"] for r in table.values() if r["split"] == "train"]
    assert train == ["none"]  # not exported: untouched (one train place: no negative for it)
    counts = after.manifest["counts"]
    assert counts["pairs"] == len(table) == 5 and counts["review"] == {"approved": 2, "none": 1, "revised": 2}
    assert counts["by_split"] == {"test": 4, "train": 1}
    assert not any(Path(f).exists() for f in old_files)  # replaced, after the manifest
    assert all(Path(f).exists() for f in after.files("pairs"))
    (record,) = after.manifest["reviews"]
    assert record["revised"] == 2 and (Path(set_uri) / record["file"]).read_text().startswith("{")
    again = import_review(
        set_uri,
        write_jsonl(
            tmp_path / "again.jsonl", read_jsonl(export_split(set_uri, "test", tmp_path / "r2.jsonl").path)
        ),
    )
    assert (again.revised, again.approved) == (2, 2)  # a person's words stay "revised" when re-approved


def test_csv_round_trip_with_excel_bom(set_uri: str, tmp_path: Path) -> None:
    path = export_split(set_uri, "test", tmp_path / "review.csv").path
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"), newline="")))
    assert rows[0]["match"] in ("true", "false")
    rows[2]["reasoning_en"] = 'A "quoted" edit,\nover two lines.'
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = import_review(set_uri, path)
    assert (result.revised, result.approved) == (1, 3)
    table = {r["pair_id"]: r for r in open_explanation_set(set_uri).read("pairs").to_pylist()}
    assert table[rows[2]["pair_id"]]["reasoning_en"] == 'A "quoted" edit,\nover two lines.'


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda rows: rows[1].update(pair_id="0000feedbeef0000"),
            "line 2 (pair_id 0000feedbeef0000): pair_id: unknown",
        ),
        (lambda rows: rows[2].update(match=not rows[2]["match"]), "line 3 (pair_id {2}): match: changed"),
        (lambda rows: rows[0].update(tile_id="tile-c"), "line 1 (pair_id {0}): tile_id: changed"),
        (lambda rows: rows[3].update(reasoning_zh=" "), "line 4 (pair_id {3}): reasoning_zh: empty"),
        (lambda rows: rows[3].update(reasoning_zh="The roads agree."), "reasoning_zh: asked for Chinese"),
        (lambda rows: rows[0].pop("reasoning_en"), "line 1 (pair_id {0}): missing field(s) reasoning_en"),
        (lambda rows: rows.append(dict(rows[0])), "line 5 (pair_id {0}): pair_id: appears more than once"),
    ],
)
def test_a_bad_row_is_named_and_nothing_is_written(set_uri: str, tmp_path: Path, edit, expected: str) -> None:
    rows = read_jsonl(export_split(set_uri, "test", tmp_path / "review.jsonl").path)
    for row in rows:
        row["reasoning_en"] = row["reasoning_en"] + " Edited."
    edit(rows)
    manifest = (Path(set_uri) / "manifest.json").read_bytes()
    with pytest.raises(ReviewFileError) as caught:
        import_review(set_uri, write_jsonl(tmp_path / "bad.jsonl", rows))
    assert expected.format(*(r["pair_id"] for r in rows)) in str(caught.value)
    assert "nothing was imported" in str(caught.value)
    assert (Path(set_uri) / "manifest.json").read_bytes() == manifest
    assert not (Path(set_uri) / "review").exists()


def test_bad_encoding_json_and_suffix_are_clear_errors(set_uri: str, tmp_path: Path) -> None:
    path = export_split(set_uri, "test", tmp_path / "review.jsonl").path
    lines = path.read_bytes().splitlines(keepends=True)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b"".join([lines[0], lines[1].replace(b"The", "Thé".encode("latin-1")), *lines[2:]]))
    with pytest.raises(ReviewFileError, match=r"line 2 is not valid UTF-8 \(byte 0xe9\)"):
        import_review(set_uri, latin)
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(lines[0] + b'{"pair_id": \n')
    with pytest.raises(ReviewFileError, match="line 2 is not valid JSON"):
        import_review(set_uri, broken)
    with pytest.raises(InvalidInputError, match=r"must end in \.jsonl or \.csv"):
        export_split(set_uri, "test", tmp_path / "review.xlsx")
