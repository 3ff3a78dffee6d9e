"""The location estimate: fusion of neighbouring candidates, the heatmap peak, the radius, unknown."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gleam import geo
from gleam.explain.confidence import MIN_QUERIES, POOLED
from gleam.index.location import (
    DEFAULT_COVERAGE,
    Location,
    conformal_radius,
    estimate_location,
    fit_location,
    peak_offset_m,
    radius_for,
)

LAT, LON = 48.85, 2.35
GSD, SIZE = 0.5, 200  # 100 m tiles


def _tile(tile_id: str, score: float, east: float, north: float, gsd: float | None = GSD) -> dict:
    lat, lon = geo.offset_to_latlon(LAT, LON, east, north)
    return {
        "tile_id": tile_id,
        "score": score,
        "lat": lat,
        "lon": lon,
        "gsd_m": gsd,
        "width": SIZE,
        "height": SIZE,
    }


def _meta(at_chance: bool = False, location: bool = True, slope: float = 40.0) -> dict:
    calibration = {
        "threshold": 0.5,
        "accuracy": 0.5 if at_chance else 0.9,
        "at_chance": at_chance,
        "confidence": {"slope": slope, "pairs": 200, "method": "platt-logistic"},
        "queries": 100,
        "by_modality": {},
    }
    meta = {
        "calibration": calibration,
        "spread": {"collapsed": False, "mean_cosine": 0.5, "effective_rank": 9},
    }
    if location:
        errors = {"drone": {"top1": np.arange(1, 101.0), "fused": np.arange(1, 101.0) / 2, "refined": []}}
        meta["location"] = fit_location(errors, DEFAULT_COVERAGE, k=10)
    return meta


def _offset(location: Location) -> tuple[float, float]:
    return geo.latlon_to_offset(LAT, LON, location.lat, location.lon)


def test_overlapping_tiles_pull_the_estimate_together() -> None:
    # the top tile and its overlapping neighbour 50 m east, almost as likely: the estimate lies between them
    candidates = [_tile("a", 0.60, 0, 0), _tile("b", 0.59, 50, 0), _tile("far", 0.30, 5000, 0)]
    location = estimate_location(candidates, "drone", _meta())
    east, north = _offset(location)
    assert location.method == "fused" and location.reason is None
    assert 20 < east < 30 and abs(north) < 1e-6  # p-weighted: a little nearer the better one
    assert location.fused == (location.lat, location.lon) and location.refinement_m is None
    assert location.radius_m == conformal_radius(np.arange(1, 101.0) / 2, DEFAULT_COVERAGE)
    assert location.coverage == DEFAULT_COVERAGE


def test_a_distant_look_alike_does_not_drag_the_estimate() -> None:
    # as likely as the top tile, 30 km away: it forms its own neighbourhood, the estimate stays home
    candidates = [_tile("a", 0.60, 0, 0), _tile("twin", 0.60, 30_000, 0), _tile("b", 0.55, 0, 40)]
    east, north = _offset(estimate_location(candidates, "drone", _meta()))
    assert abs(east) < 1e-6 and 0 < north < 40


def test_the_top_tile_anchors_the_estimate_against_a_distant_cluster() -> None:
    # three look-alikes together 20 km away carry more probability than the lone top tile, but a
    # calibrated probability reads a similarity, not a rank: the top tile keeps the estimate
    candidates = [_tile("lone", 0.62, 0, 0)] + [_tile(f"c{i}", 0.6, 20_000 + 30 * i, 0) for i in range(3)]
    location = estimate_location(candidates, "drone", _meta(), refinement_m=(10.0, 0.0))
    east, north = _offset(location)
    assert abs(east) < 1e-6 and abs(north) < 1e-6
    assert location.method == "fused" and location.fused is not None


def test_refinement_moves_the_estimate_inside_the_top_tile() -> None:
    errors = {"drone": {m: np.arange(1, 41.0) for m in ("top1", "fused", "refined")}}
    meta = _meta() | {"location": fit_location(errors, 0.5, k=10)}
    candidates = [_tile("a", 0.60, 0, 0), _tile("b", 0.59, 50, 0)]
    location = estimate_location(candidates, "drone", meta, refinement_m=(-30.0, 20.0))
    east, north = _offset(location)
    assert location.method == "refined" and location.refinement_m == (-30.0, 20.0)
    assert east == pytest.approx(-30.0, abs=1e-6) and north == pytest.approx(20.0, abs=1e-6)
    fused_east, _ = geo.latlon_to_offset(LAT, LON, *location.fused)
    assert 20 < fused_east < 30
    assert location.to_dict()["refinement_m"] == {"east": -30.0, "north": 20.0}
    # without a refined radius the fused estimate is given, and says why
    fused = estimate_location(candidates, "drone", _meta(), refinement_m=(-30.0, 20.0))
    assert fused.method == "fused" and "refined" in fused.reason


def test_without_a_footprint_the_estimate_is_the_top_tile_centre() -> None:
    candidates = [_tile("a", 0.60, 0, 0, gsd=None), _tile("b", 0.59, 50, 0, gsd=None)]
    location = estimate_location(candidates, "drone", _meta())
    assert location.method == "top1" and "gsd_m" in location.reason
    assert (location.lat, location.lon) == (candidates[0]["lat"], candidates[0]["lon"])
    assert location.radius_m == conformal_radius(np.arange(1, 101.0), DEFAULT_COVERAGE)


@pytest.mark.parametrize(
    ("meta", "candidates", "says"),
    [
        (_meta(at_chance=True), [_tile("a", 0.6, 0, 0)], "no better than chance"),
        (_meta(location=False), [_tile("a", 0.6, 0, 0)], "no fitted location radius"),
        (_meta(slope=-1.0), [_tile("a", 0.6, 0, 0)], "not more often"),
        (_meta(), [{"tile_id": "a", "score": 0.6, "lat": None, "lon": None}], "no coordinates"),
        ({"calibration": None}, [_tile("a", 0.6, 0, 0)], "no fitted confidence"),
        (_meta(), [], "no coordinates"),
    ],
)
def test_unknown_when_the_index_cannot_say(meta: dict, candidates: list[dict], says: str) -> None:
    location = estimate_location(candidates, "drone", meta)
    assert (location.lat, location.lon, location.radius_m, location.method) == (None, None, None, "unknown")
    assert says in location.reason and location.reason.endswith(".")
    assert location.to_dict()["fused"] is None


def test_a_collapsed_index_gives_no_position() -> None:
    meta = _meta()
    meta["spread"] = {"collapsed": True, "mean_cosine": 0.9999, "effective_rank": 1.2}
    location = estimate_location([_tile("a", 0.6, 0, 0)], "drone", meta)
    assert location.method == "unknown" and "collapsed" in location.reason


@pytest.mark.parametrize(("width", "height"), [(200, 200), (300, 150)])
def test_peak_offset_maps_a_grid_peak_to_metres(width: int, height: int) -> None:
    grid = np.zeros((4, 4), dtype=np.float32)
    grid[0, 3] = 1.0  # north-east cell: its centre is 3/8 of the tile east and north of the centre
    east, north = peak_offset_m(grid, 0.5, width, height)
    assert east == pytest.approx(0.375 * width * 0.5) and north == pytest.approx(0.375 * height * 0.5)
    # a peak between two cells lies between their centres; a flat grid has no peak
    grid[1, 3] = 1.0
    assert peak_offset_m(grid, 0.5, width, height)[1] == pytest.approx(0.25 * height * 0.5)
    assert peak_offset_m(np.full((3, 3), 0.7), 0.5, width, height) == (0.0, 0.0)
    centre = np.zeros((3, 3))
    centre[1, 1] = 1.0
    assert peak_offset_m(centre, 1.0, 99, 99) == pytest.approx((0.0, 0.0))


def test_the_radius_covers_its_share_of_new_errors() -> None:
    rng = np.random.default_rng(0)
    for scale in (lambda n: rng.exponential(80.0, n), lambda n: rng.lognormal(4.0, 1.0, n)):
        for coverage in (0.5, DEFAULT_COVERAGE, 0.9):
            # on average over fits from 100 errors: at least the target, by no more than the rank's rounding
            covered = [np.mean(scale(2000) <= conformal_radius(scale(100), coverage)) for _ in range(200)]
            assert coverage - 0.005 <= np.mean(covered) <= coverage + 0.015
            # one fit from 3000 errors: within a few points
            assert abs(np.mean(scale(20_000) <= conformal_radius(scale(3000), coverage)) - coverage) < 0.03
    assert conformal_radius([1.0, 2.0], 0.68) is None  # rank 3 of 2: too few to promise 68 %
    assert conformal_radius([3.0, 1.0, 2.0, 4.0], 0.5) == 3.0


def test_fit_location_falls_back_to_the_pooled_radius_for_small_modalities() -> None:
    errors = {
        "drone": {"top1": np.arange(1, 41.0), "fused": np.arange(1, 41.0)},
        "ground": {"top1": np.arange(1.0, MIN_QUERIES), "fused": []},
    }
    fitted = fit_location(errors, 0.68, k=10, left_out={"queries_without_coordinates": 3}, split="val")
    assert fitted["queries"]["top1"] == 40 + MIN_QUERIES - 1
    assert fitted["by_modality"]["ground"]["radius_m"]["top1"] is None
    assert fitted["by_modality"]["ground"]["fallback"] == {"methods": ["top1"], "to": POOLED}
    assert radius_for(fitted, "ground", "top1") == (fitted["radius_m"]["top1"], POOLED)
    assert radius_for(fitted, "drone", "top1")[1] == "drone"
    assert radius_for(fitted, "drone", "refined") is None
    assert fitted["left_out"] == {"queries_without_coordinates": 3} and fitted["split"] == "val"
    assert fit_location({"drone": {"top1": []}}, 0.68, k=10) is None
    assert not math.isnan(fitted["median_error_m"]["top1"])


def _grid_world(
    queries: int, seed: int
) -> tuple[list[list[dict]], list[tuple[float, float]], np.ndarray, np.ndarray]:
    """A raster-style gallery (100 m tiles every 50 m over 2 km) and photos anywhere in it, scored by a
    noisy "encoder" whose similarity falls off with distance: candidates, positions, calibration pairs."""
    rng = np.random.default_rng(seed)
    centres = np.arange(-1000.0, 1000.1, 50.0)
    east, north = (a.ravel() for a in np.meshgrid(centres, centres))
    lat, lon = geo.offset_to_latlon(LAT, LON, east, north)
    cameras = rng.uniform(-950.0, 950.0, (queries, 2))
    candidates, positions, positive, negative = [], [], [], []
    for cam_east, cam_north in cameras:
        distance = np.hypot(east - cam_east, north - cam_north)
        score = 0.3 + 0.5 * np.exp(-((distance / 60.0) ** 2)) + rng.normal(0.0, 0.08, distance.size)
        own = int(np.argmin(distance))
        order = np.argsort(-score)[:10]
        candidates.append(
            [
                {"tile_id": str(j), "score": float(score[j]), "lat": lat[j], "lon": lon[j]}
                | {"gsd_m": 0.5, "width": SIZE, "height": SIZE}
                for j in order
            ]
        )
        positions.append(geo.offset_to_latlon(LAT, LON, cam_east, cam_north))
        positive.append(score[own])
        negative.append(np.max(np.delete(score, own)))
    return candidates, positions, np.array(positive), np.array(negative)


def test_the_radius_fitted_on_validation_queries_covers_held_out_ones_on_a_grid_world() -> None:
    """The issue's check, on the real estimate -> fit -> measure path: calibrated and fitted on 800
    validation photos of a synthetic grid world, measured on 1500 others."""
    from gleam.evaluation.distance import query_errors
    from gleam.index.calibrate import calibrate_pairs

    val, val_at, positive, negative = _grid_world(800, seed=1)
    overall, by_modality = calibrate_pairs({"drone": (positive, negative)})
    meta = {"calibration": {**overall, "by_modality": by_modality}, "spread": None, "location": {"k": 10}}
    assert not overall["at_chance"]
    fitted = query_errors(val, val_at, "drone", meta)
    meta["location"] = fit_location({"drone": fitted.fitting_errors()}, DEFAULT_COVERAGE, k=10)

    test, test_at, _, _ = _grid_world(1500, seed=2)
    measured = query_errors(test, test_at, "drone", meta).report(DEFAULT_COVERAGE)
    for method in ("top1", "fused"):
        assert abs(measured.methods[method]["coverage"] - 100 * DEFAULT_COVERAGE) < 3.0, measured.methods
    # overlapping tiles pull the estimate towards the camera: fused beats the top tile's centre
    assert measured.methods["fused"]["median_m"] < measured.methods["top1"]["median_m"]
    assert measured.unknown == 0 and measured.measured == 1500


def test_exact_mode_cross_fits_the_radius_and_skips_photos_without_a_position() -> None:
    """Two modalities of one grid world; each half's calibration and radius measured on the other half."""
    from gleam.evaluation.distance import ModalityInputs, cross_fitted

    inputs = {}
    for n, modality in enumerate(("drone", "ground")):
        candidates, positions, positive, negative = _grid_world(300, seed=10 + n)
        positions[0] = (None, None)  # a photo without a position: skipped and counted
        inputs[modality] = ModalityInputs(candidates, positions, positive, negative)
    out = cross_fitted(inputs, spread=None, coverage=DEFAULT_COVERAGE)
    for modality, errors in out.items():
        found = errors.report(DEFAULT_COVERAGE)
        assert found.skipped == {"queries_without_coordinates": 1, "top_tile_without_coordinates": 0}
        assert found.measured == 299 and found.unknown == 0
        assert set(found.methods) == {"top1", "fused"}
        for method in ("top1", "fused"):
            assert abs(found.methods[method]["coverage"] - 68.0) < 8.0, (modality, found.methods)


def test_refined_errors_compare_with_fused_over_the_same_queries() -> None:
    """An oracle heatmap (its peak is the camera itself): where refinement applies, the refined error is
    ~0; elsewhere the refined estimate is the fused one; the refined radius is fitted on the first only."""
    from gleam.evaluation.distance import query_errors
    from gleam.index.calibrate import calibrate_pairs

    candidates, positions, positive, negative = _grid_world(200, seed=7)
    overall, by_modality = calibrate_pairs({"drone": (positive, negative)})
    meta = {"calibration": {**overall, "by_modality": by_modality}, "spread": None, "location": {"k": 10}}

    def oracle(i: int, top: dict) -> tuple[float, float]:
        return geo.latlon_to_offset(top["lat"], top["lon"], *positions[i])

    found = query_errors(candidates, positions, "drone", meta, oracle)
    peaked = found.peaked
    assert 0 < peaked.sum() <= 200
    assert np.allclose(found.errors["refined"][peaked], 0.0, atol=1e-3)
    assert np.array_equal(found.errors["refined"][~peaked], found.errors["fused"][~peaked])
    assert found.fitting_errors()["refined"].size == peaked.sum()
    report = found.report(None).methods["refined"]
    assert report["refined_pct"] == pytest.approx(100 * peaked.mean())
    assert report["median_m"] <= found.report(None).methods["fused"]["median_m"]
