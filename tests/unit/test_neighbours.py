"""GPS neighbour lists: great-circle distances, k nearest or within a radius, places without coordinates."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gleam.corpus.reader import PreparedCorpus
from gleam.errors import ConfigError
from gleam.training.neighbours import corpus_gps_neighbours, gps_neighbours, haversine_m, place_coordinates


def test_haversine_matches_known_distances() -> None:
    assert haversine_m(0, 0, 0, 1) == pytest.approx(111_195, rel=1e-4)  # one degree on the equator
    assert haversine_m(0, 0, 1, 0) == pytest.approx(111_195, rel=1e-4)
    # Paris (Notre-Dame) - London (Trafalgar Square): 343.9 km on the 6371.0088 km sphere
    assert haversine_m(48.8530, 2.3499, 51.5080, -0.1281) == pytest.approx(343_900, rel=2e-3)
    assert haversine_m(10, 179.9, 10, -179.9) == pytest.approx(haversine_m(10, 0, 10, 0.2))


def test_k_nearest_in_order_never_itself_across_the_antimeridian() -> None:
    ids = ["a", "b", "c", "d", "e"]
    lat = [0.0, 0.0, 0.0, 0.0, 45.0]
    lon = [179.99, -179.99, 179.95, 178.0, 0.0]  # a-b 2.2 km apart across 180 degrees
    lists = gps_neighbours(ids, lat, lon, k=2)
    assert lists["a"] == ["b", "c"]
    assert lists["b"] == ["a", "c"]
    assert lists["d"] == ["c", "a"]
    assert all(t not in lists[t] for t in ids)


def test_radius_limits_the_lists_and_unknown_coordinates_get_none() -> None:
    ids = ["a", "b", "c", "x"]
    lat = [0.0, 0.0, 0.0, math.nan]
    lon = [0.0, 0.001, 0.01, math.nan]  # a-b 111 m, a-c 1.1 km
    lists = gps_neighbours(ids, lat, lon, k=3, radius_m=500)
    assert lists == {"a": ["b"], "b": ["a"], "c": [], "x": []}
    assert gps_neighbours(ids, lat, lon, k=3)["c"] == ["b", "a"]


def corpus_at(root: Path, tiles: pa.Table, queries: pa.Table) -> PreparedCorpus:
    """A real PreparedCorpus over the two parts neighbours.py reads (only the columns it reads)."""
    for part, data in (("tiles", tiles), ("queries", queries)):
        (root / part).mkdir()
        pq.write_table(data, root / part / "part-0.parquet")
    return PreparedCorpus(str(root), {"files": {"tiles": ["part-0.parquet"], "queries": ["part-0.parquet"]}})


def table(rows: list[tuple[str, float | None, float | None]]) -> pa.Table:
    return pa.table(
        {"tile_id": [r[0] for r in rows], "lat": [r[1] for r in rows], "lon": [r[2] for r in rows]},
        schema=pa.schema([("tile_id", pa.string()), ("lat", pa.float64()), ("lon", pa.float64())]),
    )


def test_tile_coordinates_win_and_queries_fill_in(tmp_path: Path) -> None:
    corpus = corpus_at(
        tmp_path,
        table([("a", 1.0, 2.0), ("b", None, None), ("c", None, None)]),
        table([("a", 9.0, 9.0), ("b", 3.0, 4.0), ("b", 5.0, 6.0)]),
    )
    lat, lon = place_coordinates(corpus, ["a", "b", "c"])
    assert lat[:2] == [1.0, 4.0] and lon[:2] == [2.0, 5.0] and math.isnan(lat[2])


def test_gps_on_a_corpus_without_coordinates_is_a_config_error(tmp_path: Path) -> None:
    corpus = corpus_at(tmp_path, table([("a", None, None), ("b", None, None)]), table([("a", None, None)]))
    with pytest.raises(ConfigError, match=r"batching\.mode: gps neighbours need place coordinates"):
        corpus_gps_neighbours(corpus, ["a", "b"], k=4)
