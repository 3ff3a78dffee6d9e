"""Human revision of an explanation set: export a split to a reviewable file, import the edits back.

Export writes the split's rows as JSON Lines or CSV (by the file's suffix) and the query and tile images
as JPEG files in a folder beside it (`<file stem>_images/`), linked from each row by a path relative to
the file, so the folder can be zipped and sent to reviewers as is. Reviewers edit the `reasoning_<lang>`
columns and nothing else.

Import validates the whole file before writing anything: every row must name a pair of the set and keep
its ids, modality, split and label; every language's reasoning must be non-empty and in its language;
the file must be UTF-8. Any problem is an InvalidInputError naming the row (line) and the field. Then
rows whose words changed become `review: revised` with the new words, unchanged rows `approved` (a row
already revised stays revised), the set's pairs are written as new files, the manifest (counts, review
history) last, and the old files are deleted after it. The imported file is archived under `review/`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from gleam import storage
from gleam.corpus.reader import open_corpus
from gleam.errors import InvalidInputError, RefusedError
from gleam.explain.dataset.answers import language_problem
from gleam.explain.dataset.manifest import count_pairs, publish, write_pairs
from gleam.explain.explanation_set import LANGUAGE_COLUMNS, PAIRS_SCHEMA, Review, open_explanation_set

FORMATS = (".jsonl", ".csv")
KEY_FIELDS = ("query_id", "tile_id", "modality", "split")  # with `match`: what a reviewer may not change
MAX_REPORTED = 20
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class ReviewFileError(InvalidInputError, ValueError):
    """The imported file cannot be applied; the message names each offending row and field."""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    rows: int
    images: int


@dataclass(frozen=True)
class ImportResult:
    set_uri: str
    revised: int
    approved: int
    manifest: dict[str, Any]


# --- export ------------------------------------------------------------------------------------------------


def export_split(set_uri: str, split: str, out: str | Path) -> ExportResult:
    """Write `split`'s rows to `out` (.jsonl or .csv) and their images beside it; returns what was written."""
    path = Path(out).expanduser().resolve()
    file_format = _format(path)
    explanation_set = open_explanation_set(set_uri)
    pairs = explanation_set.read("pairs", pc.field("split") == split).sort_by("pair_id")
    if not pairs.num_rows:
        raise RefusedError(f"explanation set {explanation_set.uri} has no {split!r} rows to export")
    languages = _languages(explanation_set.manifest)
    folder = path.parent / f"{path.stem}_images"
    corpus = open_corpus(explanation_set.corpus_uri)
    links = {
        "query": _write_images(
            corpus, "queries", "query_id", set(pairs["query_id"].to_pylist()), folder, path
        ),
        "tile": _write_images(corpus, "tiles", "tile_id", set(pairs["tile_id"].to_pylist()), folder, path),
    }
    rows = []
    for row in pairs.to_pylist():
        out_row = {
            "pair_id": row["pair_id"],
            "split": row["split"],
            "modality": row["modality"],
            "match": row["match"],
            "rank": row["rank"],
            "similarity": round(float(row["similarity"]), 6),
            "query_id": row["query_id"],
            "tile_id": row["tile_id"],
            "query_image": links["query"].get(row["query_id"], ""),
            "tile_image": links["tile"].get(row["tile_id"], ""),
            "teacher": row["teacher"],
            "review": row["review"],
        }
        out_row.update({LANGUAGE_COLUMNS[lang]: row[LANGUAGE_COLUMNS[lang]] for lang in languages})
        rows.append(out_row)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = _jsonl(rows) if file_format == ".jsonl" else _csv(rows)
    # a BOM for CSV so spreadsheet programs read UTF-8 (Chinese) correctly; import accepts either
    path.write_bytes(text.encode("utf-8-sig" if file_format == ".csv" else "utf-8"))
    return ExportResult(path, len(rows), len(links["query"]) + len(links["tile"]))


def _write_images(
    corpus: Any, part: str, column: str, ids: set[str], folder: Path, path: Path
) -> dict[str, str]:
    """id -> link relative to the export file; the corpus's JPEG bytes, written as they are."""
    table = corpus.read(part, [column, "image"], pc.field(column).isin(sorted(ids)))
    target = folder / part
    target.mkdir(parents=True, exist_ok=True)
    links = {}
    for item_id, image in zip(table[column].to_pylist(), table["image"].to_pylist(), strict=True):
        file = target / f"{_file_name(item_id)}.jpg"
        file.write_bytes(image)
        links[item_id] = file.relative_to(path.parent).as_posix()
    return links


def _file_name(item_id: str) -> str:
    """A safe file name for an id; ids with other characters get a short hash so two never collide."""
    safe = _UNSAFE.sub("_", item_id)
    return safe if safe == item_id else f"{safe}-{hashlib.sha256(item_id.encode()).hexdigest()[:8]}"


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("true" if v else "false") if isinstance(v, bool) else v for k, v in row.items()})
    return buffer.getvalue()


# --- import ------------------------------------------------------------------------------------------------


def import_review(set_uri: str, file: str | Path) -> ImportResult:
    """Apply a reviewed file to the set (see the module docstring); nothing is written if any row is bad."""
    path = Path(file).expanduser().resolve()
    file_format = _format(path)
    explanation_set = open_explanation_set(set_uri)
    languages = _languages(explanation_set.manifest)
    data = path.read_bytes()
    rows = _read_rows(_decode(data, path), file_format, path)
    pairs = explanation_set.read("pairs")
    current = {row["pair_id"]: row for row in pairs.to_pylist()}
    edits = _validate(rows, current, languages, path)
    updated, revised, approved = [], 0, 0
    for pair_id, row in current.items():
        edit = edits.get(pair_id)
        if edit is None:
            updated.append(row)
            continue
        changed = any(edit[LANGUAGE_COLUMNS[lang]] != row[LANGUAGE_COLUMNS[lang]] for lang in languages)
        review = Review.REVISED if changed or row["review"] == Review.REVISED.value else Review.APPROVED
        revised += review is Review.REVISED
        approved += review is Review.APPROVED
        updated.append(
            {**row, **{LANGUAGE_COLUMNS[lang]: edit[LANGUAGE_COLUMNS[lang]] for lang in languages}}
        )
        updated[-1]["review"] = review.value
    table = pa.Table.from_pylist(updated, schema=PAIRS_SCHEMA)
    stamp = datetime.now(timezone.utc)
    archived = storage.join(
        explanation_set.uri, "review", f"import-{stamp.strftime('%Y%m%dT%H%M%S')}-{path.name}"
    )
    storage.write_bytes(archived, data)
    manifest = dict(explanation_set.manifest)
    manifest["files"] = {**manifest["files"], "pairs": write_pairs(explanation_set.uri, table)}
    manifest["counts"] = {**manifest["counts"], **count_pairs(table)}
    record = {
        "imported": stamp.isoformat(timespec="seconds"),
        "file": storage.relative_to(archived, explanation_set.uri),
        "rows": len(edits),
        "revised": revised,
        "approved": approved,
        "splits": sorted({current[p]["split"] for p in edits}),
    }
    manifest["reviews"] = [*manifest.get("reviews", []), record]
    publish(explanation_set.uri, manifest)
    return ImportResult(explanation_set.uri, revised, approved, manifest)


def _decode(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ReviewFileError(
            f"{path}: line {line} is not valid UTF-8 (byte 0x{data[exc.start]:02x}); save the file as UTF-8"
        ) from None


def _read_rows(text: str, file_format: str, path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) pairs; a line that is not a JSON object, or a CSV without its columns, fails."""
    rows = []
    if file_format == ".jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ReviewFileError(f"{path}: line {number} is not valid JSON: {exc.msg}") from None
            if not isinstance(row, dict):
                raise ReviewFileError(f"{path}: line {number} is not a JSON object")
            rows.append((number, row))
        return rows
    reader = csv.DictReader(io.StringIO(text, newline=""))
    for row in reader:
        if None in row:
            raise ReviewFileError(f"{path}: line {reader.line_num} has more fields than the header")
        rows.append((reader.line_num, row))
    return rows


def _validate(
    rows: list[tuple[int, dict[str, Any]]],
    current: dict[str, dict[str, Any]],
    languages: list[str],
    path: Path,
) -> dict[str, dict[str, Any]]:
    """pair_id -> the reviewed words per language; every problem of the file at once, or none."""
    problems: list[str] = []
    edits: dict[str, dict[str, Any]] = {}
    required = ["pair_id", *KEY_FIELDS, "match", *(LANGUAGE_COLUMNS[lang] for lang in languages)]
    for number, row in rows:
        pair_id = str(row.get("pair_id") or "").strip()
        where = f"line {number} (pair_id {pair_id or '?'})"
        missing = [name for name in required if name not in row]
        if missing:
            problems.append(f"{where}: missing field(s) {', '.join(missing)}")
            continue
        if pair_id not in current:
            problems.append(f"{where}: pair_id: unknown, not a pair of this set")
            continue
        if pair_id in edits:
            problems.append(f"{where}: pair_id: appears more than once in the file")
            continue
        original = current[pair_id]
        for name in KEY_FIELDS:
            if str(row[name]).strip() != original[name]:
                problems.append(f"{where}: {name}: changed from {original[name]!r} to {row[name]!r}")
        label = _as_bool(row["match"])
        if label is not original["match"]:
            problems.append(f"{where}: match: changed from {original['match']} to {row['match']!r}")
        edit: dict[str, Any] = {}
        for lang in languages:
            column = LANGUAGE_COLUMNS[lang]
            words = row[column]
            if not isinstance(words, str) or not words.strip():
                problems.append(f"{where}: {column}: empty (every language needs a reasoning)")
                continue
            problem = language_problem(words, lang)
            if problem:
                problems.append(f"{where}: {column}: {problem}")
            edit[column] = words.strip()
        edits[pair_id] = edit
    if problems:
        shown = problems[:MAX_REPORTED]
        more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        raise ReviewFileError(
            f"{path}: {len(problems)} problem(s), nothing was imported:\n  " + "\n  ".join(shown) + more
        )
    if not edits:
        raise ReviewFileError(f"{path}: no rows to import")
    return edits


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    return {"true": True, "false": False}.get(word)


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise InvalidInputError(f"{path}: a review file must end in .jsonl or .csv, not {suffix or '(none)'}")
    return suffix


def _languages(manifest: dict[str, Any]) -> list[str]:
    return [lang for lang in manifest.get("languages") or list(LANGUAGE_COLUMNS) if lang in LANGUAGE_COLUMNS]
