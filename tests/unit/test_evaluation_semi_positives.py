"""The queries' semi-positives as evaluation reads them: aligned with the embedded ids, absent when none."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from gleam.corpus.reader import PreparedCorpus, open_corpus
from gleam.corpus.schema import SEMI_POSITIVES, SEMI_POSITIVES_FIELD, Modality
from gleam.evaluation.split import split_semi_positives

ROWS = [  # query_id, modality, split, semi-positives
    ("q0", "panorama", "test", ["t1", "t2"]),
    ("q1", "panorama", "test", None),
    ("q2", "panorama", "train", ["t9"]),
    ("q3", "drone", "test", None),
]


def _corpus(root: Path, with_column: bool = True) -> PreparedCorpus:
    """A queries part holding only the columns read here (the reader checks no more than that)."""
    columns = {name: [row[i] for row in ROWS] for i, name in enumerate(["query_id", "modality", "split"])}
    fields = [pa.field(name, pa.string()) for name in columns]
    if with_column:
        columns[SEMI_POSITIVES] = [row[3] for row in ROWS]
        fields.append(SEMI_POSITIVES_FIELD)
    (root / "queries").mkdir(parents=True)
    pq.write_table(pa.table(columns, schema=pa.schema(fields)), root / "queries" / "part-0.parquet")
    files = {"tiles": [], "queries": ["part-0.parquet"], "rejects": []}
    (root / "manifest.json").write_text(json.dumps({"files": files}))
    return open_corpus(str(root))


def test_semi_positives_follow_the_embedded_query_order(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path)
    assert split_semi_positives(corpus, "test", Modality.PANORAMA, ["q1", "q0"]) == [[], ["t1", "t2"]]


def test_none_where_no_query_of_the_split_and_modality_has_any(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path)
    assert split_semi_positives(corpus, "test", Modality.DRONE, ["q3"]) is None
    assert split_semi_positives(corpus, "val", Modality.PANORAMA, []) is None


def test_a_corpus_prepared_before_the_column_has_none(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path, with_column=False)
    assert split_semi_positives(corpus, "test", Modality.PANORAMA, ["q0", "q1"]) is None
