"""UTM -> lat/lon (gleam.corpus.utm) against published grid/geographic pairs.

Reference points: the worked examples of the Geocentric Datum of Australia Technical Manual (ICSM, GDA94,
version 2.3, "Redfearn's formulae" chapter), computed there independently of PROJ:

- Flinders Peak: 37°57'03.7203" S, 144°25'29.5244" E = MGA zone 55, E 273 741.297 m, N 5 796 489.777 m
- Buninyong:     37°39'10.1561" S, 143°55'35.3839" E = MGA zone 54, E 758 173.797 m, N 5 828 674.340 m

MGA is UTM on the GRS80 ellipsoid, whose flattening differs from WGS84's by about 1e-11: well below a
millimetre, so the pairs are UTM zone 55S/54S pairs for this purpose.
"""

from __future__ import annotations

import math

import pytest

from gleam.corpus.utm import utm_epsg, utm_to_latlon

METRES_PER_DEGREE = 111_320.0


def _dms_south(d: int, m: int, s: float) -> float:
    return -(d + m / 60 + s / 3600)


def _dms(d: int, m: int, s: float) -> float:
    return d + m / 60 + s / 3600


def _metres_apart(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Small-distance approximation, plenty for a 1 m tolerance."""
    dlat = (a[0] - b[0]) * METRES_PER_DEGREE
    dlon = (a[1] - b[1]) * METRES_PER_DEGREE * math.cos(math.radians(a[0]))
    return math.hypot(dlat, dlon)


@pytest.mark.parametrize(
    ("easting", "northing", "zone", "lat", "lon"),
    [
        (273741.297, 5796489.777, 55, _dms_south(37, 57, 3.7203), _dms(144, 25, 29.5244)),  # Flinders Peak
        (758173.797, 5828674.340, 54, _dms_south(37, 39, 10.1561), _dms(143, 55, 35.3839)),  # Buninyong
    ],
)
def test_published_points_within_a_metre(
    easting: float, northing: float, zone: int, lat: float, lon: float
) -> None:
    [place] = utm_to_latlon([easting], [northing], zone, south=True)
    assert place is not None
    assert _metres_apart(place, (lat, lon)) < 1.0


def test_a_canberra_coordinate_lands_in_canberra() -> None:
    """Zone 55 south, where CVACT lies: a point near Capital Hill falls inside the city."""
    [place] = utm_to_latlon([693_000.0], [6_093_000.0], 55, south=True)
    assert place is not None
    assert -35.4 < place[0] < -35.2 and 149.0 < place[1] < 149.2


def test_points_that_are_not_utm_coordinates_give_none_and_spare_the_others() -> None:
    places = utm_to_latlon(
        [273741.297, float("nan"), 0.0, 2e6], [5796489.777, 6e6, 0.0, 6e6], zone=55, south=True
    )
    assert places[0] is not None and places[1:] == [None, None, None]
    assert utm_to_latlon([], [], 55, True) == []
    with pytest.raises(ValueError, match="northings"):
        utm_to_latlon([1.0], [], 55, True)


def test_zone_codes() -> None:
    assert utm_epsg(55, south=True) == "EPSG:32755"
    assert utm_epsg(5, south=False) == "EPSG:32605"
    with pytest.raises(ValueError, match="1-60"):
        utm_epsg(61, south=True)
