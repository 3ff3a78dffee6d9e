"""Where was the photo taken: a position in metres with an error radius, from a query's ranked candidates.

A ranked list of tiles is not a position. This module turns the candidates an index returns into one
(`estimate_location`), says how far off it may be (a radius fitted at index build so that it covers a
stated share of validation errors), and says "unknown" when the index cannot tell places apart.

- **Probabilities.** Each candidate's similarity goes through the confidence fitted at index build for
  the query's modality (`gleam.explain.confidence.ConfidenceModel`, via `gleam.index.calibrate`): p_i =
  P(same place | similarity), with the pooled calibration as fallback, exactly what the evidence answer
  uses.
- **Fusion.** The top-1 tile anchors the estimate: the candidates whose centres lie within one tile
  footprint (gsd_m x width, the largest of the top candidates with a known footprint) of it form its
  neighbourhood, and the estimate is the p-weighted mean of their centres in local metres (`gleam.geo`).
  Overlapping tiles of a raster index and near neighbours pull the estimate together; a distant
  look-alike is outside the neighbourhood and never averages into a point between two places (a plain
  p-weighted mean of all candidates is wrong exactly there: two cities 30 km apart give a point in a
  field between them). Choosing instead the neighbourhood with the most probability mass was measured
  and dropped: the fitted probabilities come from a candidate's absolute similarity, which carries less
  than its rank (on the synthetic world a streetmap encoder with R@1 51 % had a calibration at chance,
  p ~ 0.5 everywhere), so the densest cluster of candidates won and the median error grew from 8 m
  (top-1) to 976 m (docs/benchmarks.md, "Location in metres").
  Without a footprint (gsd_m unknown) there is no scale for "near", so the estimate is the top-1 centre
  (method "top1", with the reason).
- **Refinement.** The evidence heatmap's peak on the top tile (`peak_offset_m`: a soft-argmax around the
  hottest cell of `gleam.explain.evidence.match_heatmap`'s grid, mapped to metres through the eval
  transform, which resizes the whole tile to the feature grid's input without cropping) is an absolute
  position inside the top tile: refined = top-tile centre + peak offset (method "refined"), kept beside
  the fused point (`fused`) so its effect can be measured. It is not added to the fused point, which
  would count the pull towards the neighbours twice.
- **Radius.** Fitted at index build (`fit_location` on the calibration's validation queries, one error
  per query and method: the distance of each estimate to the query's own lat/lon) as the split-conformal
  quantile of the errors at `coverage` (the ceil((n + 1) * coverage)-th smallest error), so on new
  queries of the same kind the circle holds the true position at least `coverage` of the time
  (`DEFAULT_COVERAGE`, 68 %). Per modality, with the pooled radius when a modality has fewer than
  MIN_QUERIES errors for a method, like the calibration (the pooled radius is fitted from any number of
  errors that reaches its conformal rank).
- **Unknown.** lat/lon/radius None and a one-sentence reason when the index's scores cannot tell places
  apart for the modality (collapsed or at chance, `index_quality`), when it has no fitted confidence or
  no fitted radius (an older index), or when the top candidate has no coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gleam import geo
from gleam.explain.confidence import MIN_QUERIES, POOLED, ConfidenceModel
from gleam.index.calibrate import evidence_facts

DEFAULT_COVERAGE = 0.68
DEFAULT_K = 10  # candidates fused per query (the k the radius was fitted with is stored beside it)
METHODS = ("top1", "fused", "refined")
UNKNOWN = "unknown"
# the 3x3 cells around the hottest one: enough for a sub-cell peak, too few to merge two hot spots
_PEAK_WINDOW = 1


@dataclass(frozen=True)
class Location:
    """An estimated position, how far off it may be (`radius_m` covers `coverage` of validation errors)."""

    lat: float | None
    lon: float | None
    radius_m: float | None
    coverage: float | None
    method: str  # "fused" | "refined" | "top1" | "unknown"
    reason: str | None = None  # why unknown, or why coarser than asked
    fused: tuple[float, float] | None = None  # (lat, lon) before refinement
    refinement_m: tuple[float, float] | None = None  # (east, north) of the heatmap peak from the top tile

    @property
    def known(self) -> bool:
        return self.method != UNKNOWN

    def to_dict(self) -> dict[str, Any]:
        return {
            "lat": self.lat,
            "lon": self.lon,
            "radius_m": self.radius_m,
            "coverage": self.coverage,
            "method": self.method,
            "reason": self.reason,
            "fused": None if self.fused is None else {"lat": self.fused[0], "lon": self.fused[1]},
            "refinement_m": None
            if self.refinement_m is None
            else {"east": self.refinement_m[0], "north": self.refinement_m[1]},
        }


def unknown(reason: str) -> Location:
    return Location(None, None, None, None, UNKNOWN, reason)


# --- the estimate -----------------------------------------------------------------------------------------


def estimate_location(
    candidates: list[dict],
    modality: str,
    meta: dict,
    refinement_m: tuple[float, float] | None = None,
) -> Location:
    """The position of a query from its candidates (as SatelliteIndex returns them) and the index's meta.json.

    `refinement_m`: the heatmap peak's (east, north) offset from the top candidate's centre
    (`peak_offset_m`), or None. Only the first `meta["location"]["k"]` candidates are fused: the radius
    was fitted on that many.
    """
    facts = evidence_facts(meta, modality)
    quality = facts["quality"]
    if not quality.get("reliable", True):
        return unknown(f"The position is unknown: {quality['warning']}.")
    model = _confidence(facts)
    if model is None:
        return unknown(
            "The position is unknown: this index has no fitted confidence for "
            f"{modality} queries (not calibrated, or built before confidences were fitted)."
        )
    if not model.informative:
        return unknown(
            "The position is unknown: on this index's calibration a higher similarity is not more often "
            "the same place."
        )
    fitted = meta.get("location")
    if not fitted:
        return unknown(
            "The position is unknown: this index has no fitted location radius (built before locations "
            "were fitted, or without validation queries with coordinates); rebuild it to fit one."
        )
    k = int(fitted.get("k") or DEFAULT_K)
    top = [c for c in candidates[:k] if c.get("tile_id") is not None]
    if not top or not _has_coordinates(top[0]):
        return unknown("The position is unknown: the best candidate tile has no coordinates.")
    probabilities = np.array([model.probability(float(c["score"])) for c in top])
    point = fuse(top, probabilities)
    coverage = fitted.get("coverage")
    top1 = (float(top[0]["lat"]), float(top[0]["lon"]))
    if point.method == "top1":
        return _answer(fitted, modality, "top1", top1, coverage, point.reason, None, None)
    reason = None
    if refinement_m is not None:
        if not _radius(fitted, modality, "refined"):
            reason = "No radius was fitted for refined estimates on this index, so the fused one is given."
        else:
            east, north = (float(v) for v in refinement_m)
            refined = geo.offset_to_latlon(top1[0], top1[1], east, north)
            return _answer(fitted, modality, "refined", refined, coverage, None, point.latlon, (east, north))
    return _answer(fitted, modality, "fused", point.latlon, coverage, reason, point.latlon, None)


@dataclass(frozen=True)
class FusedPoint:
    """The fused position and how it was made."""

    latlon: tuple[float, float]
    method: str  # "fused" or "top1"
    reason: str | None = None


def fuse(candidates: Sequence[dict], probabilities: np.ndarray) -> FusedPoint:
    """The p-weighted mean centre of the top-1 tile's neighbourhood (see module doc).

    `candidates[0]` (the top-1) must have coordinates; candidates without any are left out.
    """
    top = candidates[0]
    top1 = (float(top["lat"]), float(top["lon"]))
    footprint = footprint_m(candidates)
    if footprint is None:
        return FusedPoint(
            top1,
            "top1",
            "The tiles' ground size (gsd_m) is unknown, so neighbouring candidates cannot be told from "
            "distant ones: the estimate is the top tile's centre.",
        )
    keep = [i for i, c in enumerate(candidates) if _has_coordinates(c)]
    lat = np.array([float(candidates[i]["lat"]) for i in keep])
    lon = np.array([float(candidates[i]["lon"]) for i in keep])
    p = np.clip(np.asarray(probabilities, dtype=np.float64)[keep], 0.0, None)
    east, north = geo.latlon_to_offset(top1[0], top1[1], lat, lon)
    east, north = np.atleast_1d(east), np.atleast_1d(north)
    apart = np.hypot(east[:, None] - east[None, :], north[:, None] - north[None, :])
    members = apart[0] <= footprint  # keep[0] is the top-1: it has coordinates
    weights = p[members]
    total = float(weights.sum())
    if total <= 0:
        weights, total = np.ones_like(weights), float(weights.size)
    e = float(weights @ east[members]) / total
    n = float(weights @ north[members]) / total
    latlon = geo.offset_to_latlon(top1[0], top1[1], e, n)
    return FusedPoint((float(latlon[0]), float(latlon[1])), "fused")


def footprint_m(candidates: Sequence[dict]) -> float | None:
    """The ground width of a tile (gsd_m x max(width, height)), the largest among the candidates; None
    when no candidate has one."""
    sizes = []
    for c in candidates:
        gsd, width, height = c.get("gsd_m"), c.get("width"), c.get("height")
        if _finite(gsd) and float(gsd) > 0 and width and height:
            sizes.append(float(gsd) * max(int(width), int(height)))
    return max(sizes) if sizes else None


def peak_offset_m(grid: np.ndarray, gsd_m: float, width: int, height: int) -> tuple[float, float]:
    """(east_m, north_m) from the tile's centre of the heatmap's peak: a soft-argmax around its hottest cell.

    The eval transform resizes the whole tile (no crop) to the encoder's input, so cell (r, c) of an
    (h, w) feature grid covers the fraction ((c + 0.5) / w, (r + 0.5) / h) of the tile, and that fraction
    of the prepared tile (width x height pixels of gsd_m metres, north-up) is the offset. The peak is the
    grid-weighted mean cell position over the 3x3 cells around the hottest one (sub-cell, yet one hot
    spot). A grid without spread (all equal) has no peak: (0, 0), the centre.
    """
    values = np.nan_to_num(np.asarray(grid, dtype=np.float64))
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"grid must be a non-empty 2-D array, got shape {values.shape}")
    if float(values.max() - values.min()) <= 1e-6:
        return 0.0, 0.0
    rows, cols = values.shape
    row, col = np.unravel_index(int(np.argmax(values)), values.shape)
    r0, r1 = max(0, row - _PEAK_WINDOW), min(rows, row + _PEAK_WINDOW + 1)
    c0, c1 = max(0, col - _PEAK_WINDOW), min(cols, col + _PEAK_WINDOW + 1)
    window = values[r0:r1, c0:c1] - values.min()
    rr, cc = np.mgrid[r0:r1, c0:c1]
    peak_row = float((rr * window).sum() / window.sum())
    peak_col = float((cc * window).sum() / window.sum())
    east = ((peak_col + 0.5) / cols - 0.5) * width * gsd_m
    north = (0.5 - (peak_row + 0.5) / rows) * height * gsd_m
    return float(east), float(north)


# --- the radius, fitted at index build -------------------------------------------------------------------


def conformal_radius(errors: Sequence[float] | np.ndarray, coverage: float) -> float | None:
    """The ceil((n + 1) * coverage)-th smallest error: covers at least `coverage` of new errors of the
    same distribution (split conformal); None when there are too few errors for that rank."""
    values = np.sort(np.asarray(errors, dtype=np.float64)[np.isfinite(errors)])
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be in (0, 1), got {coverage}")
    rank = math.ceil((values.size + 1) * coverage)
    if values.size == 0 or rank > values.size:
        return None
    return float(values[rank - 1])


def fit_location(
    errors: dict[str, dict[str, Sequence[float]]],
    coverage: float,
    k: int,
    left_out: dict[str, int] | None = None,
    split: str | None = None,
) -> dict[str, Any] | None:
    """meta.json's `location` from the validation errors in metres: {modality: {method: [error, ...]}}.

    Pooled over modalities at the top level, and per modality in `by_modality`; a method a modality has
    fewer than MIN_QUERIES errors for gets no radius of its own (`fallback` names the pooled one), as in
    the calibration. The pooled radius needs only enough errors for its conformal rank (3 for 68 %): the
    conformal guarantee holds for any number of errors, it is just looser with few. None when no query
    had an error to measure.
    """
    if not any(len(e) for per in errors.values() for e in per.values()):
        return None
    pooled = {
        m: np.concatenate([np.asarray(per.get(m, []), float) for per in errors.values()]) for m in METHODS
    }
    out: dict[str, Any] = {
        "coverage": float(coverage),
        "k": int(k),
        "split": split,
        **_entry(pooled, coverage, minimum=1),
        "left_out": dict(left_out or {}),
        "by_modality": {},
    }
    for modality, per in sorted(errors.items()):
        own = _entry({m: _array(per.get(m, [])) for m in METHODS}, coverage, minimum=MIN_QUERIES)
        short = [m for m in METHODS if 0 < own["queries"][m] < MIN_QUERIES]
        if short:
            own["fallback"] = {"methods": short, "to": POOLED}
        out["by_modality"][modality] = own
    return out


def _array(values: Sequence[float]) -> np.ndarray:
    """Finite errors only (NaN: an estimate that did not apply to that query)."""
    array = np.asarray(values, dtype=np.float64).ravel()
    return array[np.isfinite(array)]


def _entry(errors: dict[str, np.ndarray], coverage: float, minimum: int) -> dict[str, Any]:
    enough = {m: e.size >= minimum for m, e in errors.items()}
    return {
        "radius_m": {m: conformal_radius(e, coverage) if enough[m] else None for m, e in errors.items()},
        "median_error_m": {m: float(np.median(e)) if e.size else None for m, e in errors.items()},
        "queries": {m: int(e.size) for m, e in errors.items()},
    }


def radius_for(fitted: dict[str, Any] | None, modality: str, method: str) -> tuple[float, str] | None:
    """(radius in metres, whose: the modality or POOLED) for a method, None when none was fitted."""
    if not fitted:
        return None
    own = (fitted.get("by_modality") or {}).get(modality) or {}
    radius = (own.get("radius_m") or {}).get(method)
    if radius is not None:
        return float(radius), modality
    radius = (fitted.get("radius_m") or {}).get(method)
    return (float(radius), POOLED) if radius is not None else None


def _radius(fitted: dict[str, Any], modality: str, method: str) -> float | None:
    found = radius_for(fitted, modality, method)
    return found[0] if found else None


def _answer(
    fitted: dict[str, Any],
    modality: str,
    method: str,
    latlon: tuple[float, float],
    coverage: Any,
    reason: str | None,
    fused: tuple[float, float] | None,
    refinement: tuple[float, float] | None,
) -> Location:
    radius = _radius(fitted, modality, method)
    if radius is None:
        return unknown(
            f"The position is unknown: no radius was fitted for {method} estimates of {modality} queries on "
            "this index (too few validation queries with coordinates)."
        )
    return Location(
        lat=float(latlon[0]),
        lon=float(latlon[1]),
        radius_m=radius,
        coverage=None if coverage is None else float(coverage),
        method=method,
        reason=reason,
        fused=None if fused is None else (float(fused[0]), float(fused[1])),
        refinement_m=refinement,
    )


def _confidence(facts: dict[str, Any]) -> ConfidenceModel | None:
    if facts["threshold"] is None or not facts["confidence_model"]:
        return None
    return ConfidenceModel.from_dict(facts["threshold"], facts["confidence_model"])


def probabilities(candidates: Sequence[dict], modality: str, meta: dict) -> np.ndarray | None:
    """p_i = P(same place | score) of each candidate under the index's fitted confidence (None: unfitted)."""
    model = _confidence(evidence_facts(meta, modality))
    if model is None:
        return None
    return np.array([model.probability(float(c["score"])) for c in candidates])


def _has_coordinates(candidate: dict) -> bool:
    return _finite(candidate.get("lat")) and _finite(candidate.get("lon"))


def _finite(value: Any) -> bool:
    try:
        return value is not None and not isinstance(value, bool) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
