"""Ground geometry shared by every stage: metres <-> WGS84 degrees near a point, distances, tile pixels.

A location estimate moves a tile's centre by a few metres (sub-tile refinement) or averages the centres
of neighbouring tiles, and evaluation scores it in metres against the photo's true position. Over such
distances (a few km at most) the local equirectangular projection around a reference point is exact to
well under a metre in 10 km away from the poles, so offsets use it; distances between two arbitrary
points use the haversine formula on the mean-radius sphere (IUGG), as GPS neighbour mining does.

Tiles are north-up: column c of a W-pixel-wide tile lies (c + 0.5 - W / 2) * gsd_m metres east of the
centre, row r lies (r + 0.5 - H / 2) * gsd_m metres south of it (row 0 is the northern edge).
"""

from __future__ import annotations

import numpy as np

EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG)

ArrayLike = float | np.ndarray


def _metres_per_degree_lon(lat: ArrayLike) -> ArrayLike:
    return np.radians(1.0) * EARTH_RADIUS_M * np.cos(np.radians(lat))


def offset_to_latlon(lat: ArrayLike, lon: ArrayLike, east_m: ArrayLike, north_m: ArrayLike) -> tuple:
    """The point `east_m` east and `north_m` north of (lat, lon), in degrees (vectorised)."""
    new_lat = np.asarray(lat, dtype=np.float64) + np.degrees(
        np.asarray(north_m, dtype=np.float64) / EARTH_RADIUS_M
    )
    new_lon = np.asarray(lon, dtype=np.float64) + np.asarray(
        east_m, dtype=np.float64
    ) / _metres_per_degree_lon(lat)
    return _scalar(new_lat), _scalar(_wrap_lon(new_lon))


def latlon_to_offset(lat0: ArrayLike, lon0: ArrayLike, lat: ArrayLike, lon: ArrayLike) -> tuple:
    """(east_m, north_m) of (lat, lon) from the reference (lat0, lon0): the inverse of offset_to_latlon."""
    north = (
        np.radians(np.asarray(lat, dtype=np.float64) - np.asarray(lat0, dtype=np.float64)) * EARTH_RADIUS_M
    )
    dlon = _wrap_lon(np.asarray(lon, dtype=np.float64) - np.asarray(lon0, dtype=np.float64))
    east = dlon * _metres_per_degree_lon(lat0)
    return _scalar(east), _scalar(north)


def distance_m(lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike) -> ArrayLike:
    """Great-circle (haversine) distance in metres between points, element-wise; NaN where one is NaN."""
    p1, p2 = np.radians(np.asarray(lat1, dtype=np.float64)), np.radians(np.asarray(lat2, dtype=np.float64))
    dlat = p2 - p1
    dlon = np.radians(np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64))
    a = np.sin(dlat / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlon / 2) ** 2
    return _scalar(2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0))))


def pixel_offset_m(col: ArrayLike, row: ArrayLike, width: int, height: int, gsd_m: float) -> tuple:
    """(east_m, north_m) of the centre of pixel (col, row) from a north-up tile's centre.

    Fractional pixels are allowed (a soft peak lies between pixel centres)."""
    east = (np.asarray(col, dtype=np.float64) + 0.5 - width / 2.0) * gsd_m
    north = (height / 2.0 - np.asarray(row, dtype=np.float64) - 0.5) * gsd_m
    return _scalar(east), _scalar(north)


def pixel_to_latlon(
    lat: float, lon: float, gsd_m: float, width: int, height: int, col: ArrayLike, row: ArrayLike
) -> tuple:
    """WGS84 degrees of pixel (col, row) of a north-up tile centred on (lat, lon) with `gsd_m` m/pixel."""
    east, north = pixel_offset_m(col, row, width, height, gsd_m)
    return offset_to_latlon(lat, lon, east, north)


def _wrap_lon(lon: np.ndarray) -> np.ndarray:
    """Longitudes (or differences) past +-180 degrees brought back by one turn, so a tile across the
    antimeridian is metres wide, not a world; values in range are returned untouched (bit for bit)."""
    return np.where(lon > 180.0, lon - 360.0, np.where(lon < -180.0, lon + 360.0, lon))


def _scalar(value: np.ndarray) -> ArrayLike:
    return float(value) if np.ndim(value) == 0 else value
