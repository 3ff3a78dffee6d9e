"""UTM easting/northing to WGS84 latitude/longitude, for sources that ship projected coordinates (CVACT).

The transverse Mercator inverse is PROJ's (reached through rasterio, already the platform's GeoTIFF
reader), not a hand-written series: PROJ implements Karney's (2011) Krüger series, accurate to
nanometres across a zone. rasterio is imported only when a conversion is asked for, so listing a source
without coordinates never loads GDAL.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

MAX_EASTING = 1_000_000.0  # metres; a zone spans about 166-834 km with the 500 km false easting
MAX_NORTHING = 10_000_000.0  # metres; the southern hemisphere's false northing


def utm_epsg(zone: int, south: bool) -> str:
    """The WGS84 / UTM CRS of a zone: EPSG:326zz north of the equator, EPSG:327zz south of it."""
    if not 1 <= zone <= 60:
        raise ValueError(f"UTM zones are numbered 1-60, got {zone}")
    return f"EPSG:{(32700 if south else 32600) + zone}"


def utm_to_latlon(
    eastings: Sequence[float], northings: Sequence[float], zone: int, south: bool
) -> list[tuple[float, float] | None]:
    """(lat, lon) in degrees for each point; None where the point is not a UTM coordinate at all.

    UTM eastings lie strictly between 0 and 1,000 km and northings between 0 and 10,000 km; anything
    else (NaN, a 0 placeholder) would make PROJ refuse the whole batch, so it is left out and gets None.
    """
    if len(eastings) != len(northings):
        raise ValueError(f"{len(eastings)} eastings but {len(northings)} northings")
    valid = [
        i
        for i, (e, n) in enumerate(zip(eastings, northings, strict=True))
        if math.isfinite(e) and math.isfinite(n) and 0 < e < MAX_EASTING and 0 <= n <= MAX_NORTHING
    ]
    result: list[tuple[float, float] | None] = [None] * len(eastings)
    if not valid:
        return result
    from rasterio.warp import transform

    xs, ys = [float(eastings[i]) for i in valid], [float(northings[i]) for i in valid]
    lons, lats = transform(utm_epsg(zone, south), "EPSG:4326", xs, ys)
    for i, lat, lon in zip(valid, lats, lons, strict=True):
        result[i] = (float(lat), float(lon))
    return result
