"""GPS neighbour lists: for each place (a tile), the other places nearest to it on the globe.

Used by the `gps` batch composition (gleam.training.composition): near places look alike, so putting them
in one batch gives the contrastive loss hard negatives. Distances are great-circle (haversine) distances
from the places' lat/lon, searched with scikit-learn's BallTree (exact, O(n log n), no dense matrix).
A place without coordinates has no neighbours and is nobody's neighbour: it is batched at random.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gleam.corpus.reader import PreparedCorpus
from gleam.errors import ConfigError

EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG), the usual sphere for haversine distances


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres between two points given in degrees."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, a)))


def gps_neighbours(
    tile_ids: Sequence[str],
    lat: Sequence[float],
    lon: Sequence[float],
    k: int,
    radius_m: float | None = None,
) -> dict[str, list[str]]:
    """tile_id -> up to `k` other tile_ids, nearest first (ties by id), within `radius_m` when given.

    NaN coordinates mean "unknown": such places get an empty list and appear in no other list."""
    from sklearn.neighbors import BallTree

    ids = np.asarray(tile_ids, dtype=object)
    coords = np.radians(np.column_stack([np.asarray(lat, float), np.asarray(lon, float)]))
    known = np.isfinite(coords).all(axis=1)
    lists: dict[str, list[str]] = {str(t): [] for t in ids}
    located, points = ids[known], coords[known]
    if len(located) < 2 or k < 1:
        return lists
    tree = BallTree(points, metric="haversine")
    count = min(k + 1, len(located))
    distances, indices = tree.query(points, k=count)
    limit = math.inf if radius_m is None else radius_m / EARTH_RADIUS_M
    for row, (dist, idx) in enumerate(zip(distances, indices, strict=True)):
        me = located[row]
        ranked = sorted(
            (float(d), str(located[j]))
            for d, j in zip(dist, idx, strict=True)
            if located[j] != me and d <= limit
        )
        lists[str(me)] = [tile for _, tile in ranked[:k]]
    return lists


def place_coordinates(corpus: PreparedCorpus, tile_ids: Sequence[str]) -> tuple[list[float], list[float]]:
    """(lat, lon) of each tile: the tile's own, else the mean of its queries' (NaN when neither has any)."""
    wanted = pa.array(list(tile_ids), pa.string())
    found: dict[str, tuple[float, float]] = {}
    for part in ("queries", "tiles"):  # tiles last: a tile's own coordinates win
        table = corpus.read(part, ["tile_id", "lat", "lon"], filter=pc.field("tile_id").isin(wanted))
        table = table.filter(pc.and_(pc.is_valid(table["lat"]), pc.is_valid(table["lon"])))
        if not table.num_rows:
            continue
        means = table.group_by("tile_id").aggregate([("lat", "mean"), ("lon", "mean")])
        for row in means.to_pylist():
            found[row["tile_id"]] = (row["lat_mean"], row["lon_mean"])
    nan = (math.nan, math.nan)
    return [found.get(t, nan)[0] for t in tile_ids], [found.get(t, nan)[1] for t in tile_ids]


def corpus_gps_neighbours(
    corpus: PreparedCorpus, tile_ids: Sequence[str], k: int, radius_m: float | None = None
) -> dict[str, list[str]]:
    """GPS neighbour lists of the given places; a ConfigError when none of them has coordinates."""
    tiles = sorted(set(tile_ids))
    lat, lon = place_coordinates(corpus, tiles)
    located = sum(1 for a, b in zip(lat, lon, strict=True) if math.isfinite(a) and math.isfinite(b))
    if located == 0:
        raise ConfigError(
            f"batching.mode: gps neighbours need place coordinates, and no train place of corpus "
            f"{corpus.uri} has a lat/lon (University-1652 has none); use batching.mode random or similarity"
        )
    return gps_neighbours(tiles, lat, lon, k, radius_m)
