"""gleam.geo: the round trip pixel -> metres -> lat/lon against known points and closed-form distances."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gleam.geo import (
    EARTH_RADIUS_M,
    distance_m,
    latlon_to_offset,
    offset_to_latlon,
    pixel_offset_m,
    pixel_to_latlon,
)

ZURICH = (47.3769, 8.5417)
DEGREE_M = math.pi / 180 * EARTH_RADIUS_M  # one degree of a great circle on the mean-radius sphere


def test_distances_match_closed_forms_on_the_sphere() -> None:
    assert abs(DEGREE_M - 111_195.08) < 0.01  # 1 degree of latitude on the IUGG mean-radius sphere
    assert distance_m(0.0, 0.0, 1.0, 0.0) == pytest.approx(DEGREE_M, rel=1e-12)
    assert distance_m(47.0, 8.0, 48.0, 8.0) == pytest.approx(DEGREE_M, rel=1e-12)  # any meridian
    assert distance_m(0.0, 0.0, 0.0, 90.0) == pytest.approx(math.pi / 2 * EARTH_RADIUS_M, rel=1e-12)
    assert distance_m(0.0, 0.0, 0.0, 180.0) == pytest.approx(math.pi * EARTH_RADIUS_M, rel=1e-12)
    assert distance_m(90.0, 0.0, -90.0, 0.0) == pytest.approx(math.pi * EARTH_RADIUS_M, rel=1e-12)
    assert distance_m(*ZURICH, *ZURICH) == 0.0
    # a short step along a parallel is cos(latitude) times the same step along the equator
    assert distance_m(60.0, 0.0, 60.0, 0.001) == pytest.approx(distance_m(0.0, 0.0, 0.0, 0.001) / 2, rel=1e-6)
    assert isinstance(distance_m(0.0, 0.0, 1.0, 0.0), float)


def test_distance_is_vectorised_and_nan_where_a_point_is_unknown() -> None:
    lats = np.array([0.0, 47.0, np.nan])
    got = distance_m(lats, 0.0, lats + 1.0, 0.0)
    assert got.shape == (3,)
    assert got[:2] == pytest.approx([DEGREE_M, DEGREE_M], rel=1e-12)
    assert math.isnan(got[2])


def test_a_point_100_m_east_or_north_is_100_m_away() -> None:
    for east, north in ((100.0, 0.0), (0.0, 100.0), (-60.0, 80.0)):
        lat, lon = offset_to_latlon(*ZURICH, east, north)
        assert distance_m(*ZURICH, lat, lon) == pytest.approx(100.0, abs=1e-3)
    lat, lon = offset_to_latlon(*ZURICH, 100.0, 0.0)
    assert lat == ZURICH[0] and lon > ZURICH[1]  # east keeps the latitude
    lat, lon = offset_to_latlon(*ZURICH, 0.0, -100.0)
    assert lon == ZURICH[1] and lat < ZURICH[0]
    # 10 km east stays within 1 cm of 10 km (the local projection vs the great circle)
    assert distance_m(*ZURICH, *offset_to_latlon(*ZURICH, 10_000.0, 0.0)) == pytest.approx(10_000.0, abs=0.01)


@pytest.mark.parametrize("lat0", [-70.0, -33.9, 0.0, 47.3769, 64.1])
def test_latlon_to_offset_inverts_offset_to_latlon_to_a_millimetre(lat0: float) -> None:
    rng = np.random.default_rng(0)
    east, north = rng.uniform(-5_000, 5_000, 200), rng.uniform(-5_000, 5_000, 200)
    lat, lon = offset_to_latlon(lat0, 151.2, east, north)
    back_east, back_north = latlon_to_offset(lat0, 151.2, lat, lon)
    assert np.max(np.abs(back_east - east)) < 1e-3
    assert np.max(np.abs(back_north - north)) < 1e-3
    # and the offset's length is the great-circle distance to within 0.1 % near the reference
    near = np.hypot(east, north) < 2_000
    assert distance_m(lat0, 151.2, lat[near], lon[near]) == pytest.approx(
        np.hypot(east, north)[near], rel=1e-3
    )


def test_pixel_offsets_of_a_256_px_tile_at_half_a_metre() -> None:
    assert pixel_offset_m(0, 0, 256, 256, 0.5) == (-63.75, 63.75)  # the north-west corner pixel's centre
    assert pixel_offset_m(255, 255, 256, 256, 0.5) == (63.75, -63.75)  # south-east
    assert pixel_offset_m(255, 0, 256, 256, 0.5) == (63.75, 63.75)  # north-east: row 0 is the north
    assert pixel_offset_m(127.5, 127.5, 256, 256, 0.5) == (0.0, 0.0)  # between the four centre pixels
    assert pixel_offset_m(-0.5, -0.5, 256, 256, 0.5) == (-64.0, 64.0)  # the tile's corner itself
    assert pixel_offset_m(1.5, 0.5, 4, 2, 2.0) == (0.0, 0.0)  # a non-square tile's centre
    east, north = pixel_offset_m(np.array([0, 255]), np.array([255, 0]), 256, 256, 0.5)
    assert east.tolist() == [-63.75, 63.75] and north.tolist() == [-63.75, 63.75]


def test_round_trip_pixel_to_metres_to_latlon_against_known_points() -> None:
    lat, lon, gsd, side = *ZURICH, 0.5, 256
    corner = pixel_to_latlon(lat, lon, gsd, side, side, 0, 0)
    assert distance_m(lat, lon, *corner) == pytest.approx(math.hypot(63.75, 63.75), abs=1e-3)
    # the corner pixel lies 63.75 m north (along the meridian) and 63.75 m west (along the parallel)
    assert corner[0] - lat == pytest.approx(63.75 / DEGREE_M, rel=1e-12)
    assert lon - corner[1] == pytest.approx(63.75 / (DEGREE_M * math.cos(math.radians(lat))), rel=1e-12)
    assert pixel_to_latlon(lat, lon, gsd, side, side, 127.5, 127.5) == (lat, lon)
    # the tile's two edges are 256 px * 0.5 m = 128 m apart
    west = pixel_to_latlon(lat, lon, gsd, side, side, -0.5, 127.5)
    east = pixel_to_latlon(lat, lon, gsd, side, side, 255.5, 127.5)
    assert distance_m(*west, *east) == pytest.approx(128.0, abs=1e-3)
    # every pixel back to metres through latlon_to_offset: its own offset, to a millimetre
    cols, rows = np.meshgrid(np.arange(0, side, 15), np.arange(0, side, 15))
    lats, lons = pixel_to_latlon(lat, lon, gsd, side, side, cols.ravel(), rows.ravel())
    east_m, north_m = latlon_to_offset(lat, lon, lats, lons)
    want_east, want_north = pixel_offset_m(cols.ravel(), rows.ravel(), side, side, gsd)
    assert np.max(np.abs(east_m - want_east)) < 1e-3 and np.max(np.abs(north_m - want_north)) < 1e-3


def test_equator_and_a_known_degree_of_longitude() -> None:
    # at the equator, 1 degree of longitude is as long as 1 degree of latitude on the sphere
    lat, lon = pixel_to_latlon(0.0, 0.0, DEGREE_M / 1000, 2000, 2000, 1999.5, 999.5)
    assert (lat, lon) == (pytest.approx(0.0, abs=1e-12), pytest.approx(1.0, rel=1e-12))


def test_offsets_across_the_antimeridian_stay_local() -> None:
    """Fiji: a tile centred at 179.9999 E reaches past 180; its pixels are metres away, not a world."""
    lat, lon = -17.8, 179.9999
    east_lat, east_lon = offset_to_latlon(lat, lon, 50.0, 0.0)
    assert -180.0 <= east_lon < -179.99  # wrapped to the western side
    assert distance_m(lat, lon, east_lat, east_lon) == pytest.approx(50.0, abs=1e-3)
    assert latlon_to_offset(lat, lon, east_lat, east_lon) == (pytest.approx(50.0, abs=1e-6), 0.0)
    assert latlon_to_offset(lat, -179.9999, lat, lon)[0] == pytest.approx(
        -0.0002 * DEGREE_M * math.cos(math.radians(lat))
    )
