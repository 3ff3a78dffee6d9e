"""The pure pieces of a /v1/localize answer's location and fusion: when refinement runs and what it says
when it does not, the re-estimate from a heatmap, and the request fields that choose them."""

from __future__ import annotations

import typing
from typing import Any

import numpy as np
import pytest

from gleam.index.location import Location, estimate_location, peak_offset_m
from gleam.retrieval.fusion import FUSIONS
from serve.locating import apply_refinement, locate, refine_input, wants_refinement, with_reason
from serve.requests import APIError, localize_fields
from serve.settings import Fusion, ServeArgs

FUSED = Location(47.0, 8.0, 120.0, 0.68, "fused", fused=(47.0, 8.0))
TOP = {"tile_id": "t0", "score": 0.9, "lat": 47.0, "lon": 8.0, "gsd_m": 0.5, "width": 256, "height": 256}


def meta_with(refined: float | None, fused: float = 120.0) -> dict[str, Any]:
    """meta.json pieces: a reliable pooled calibration with an informative confidence, and radii."""
    calibration = {
        "threshold": 0.5,
        "accuracy": 0.95,
        "at_chance": False,
        "split": "val",
        "confidence": {"method": "platt-logistic", "slope": 20.0, "pairs": 100},
        "by_modality": {},
    }
    location = {
        "coverage": 0.68,
        "k": 10,
        "radius_m": {"top1": 200.0, "fused": fused, "refined": refined},
        "by_modality": {},
    }
    spread = {"mean_cosine": 0.2, "effective_rank": 12.0, "vectors": 100, "collapsed": False}
    return {"calibration": calibration, "location": location, "spread": spread}


def test_refinement_runs_only_where_it_can_change_the_answer() -> None:
    meta = meta_with(refined=60.0)
    assert wants_refinement(FUSED, TOP, meta, "drone", True) == (True, None)
    assert wants_refinement(FUSED, TOP, meta, "drone", False) == (False, None)
    # an unknown or top-1 estimate already says why it is coarse: no heatmap, nothing added
    for method in ("unknown", "top1"):
        other = Location(None, None, None, None, method, "why")
        assert wants_refinement(other, TOP, meta, "drone", True) == (False, None)
    # asked for, and impossible: the reason; on auto, silence
    no_size = {**TOP, "gsd_m": None}
    wanted, why = wants_refinement(FUSED, no_size, meta, "drone", True)
    assert not wanted and "gsd_m" in (why or "")
    assert wants_refinement(FUSED, no_size, meta, "drone", "auto") == (False, None)
    wanted, why = wants_refinement(FUSED, TOP, meta_with(refined=None), "drone", True)
    assert not wanted and "no fitted radius for refined" in (why or "")


def test_auto_refines_where_the_index_measured_refinement_closer() -> None:
    for refined, wanted in ((60.0, True), (150.0, False), (None, False)):
        meta = meta_with(refined=refined, fused=120.0)
        assert wants_refinement(FUSED, TOP, meta, "drone", "auto") == (wanted, None)


def test_a_reason_is_added_after_the_one_there() -> None:
    assert with_reason(FUSED, None) is FUSED
    assert with_reason(FUSED, "B.").reason == "B."
    assert with_reason(with_reason(FUSED, "A."), "B.").reason == "A. B."


def test_refinement_moves_the_estimate_to_the_heatmap_peak_on_the_same_meta() -> None:
    meta = meta_with(refined=60.0)
    candidates = [TOP, {**TOP, "tile_id": "t1", "score": 0.6, "lat": 47.0001}]
    plain = locate(candidates, "drone", meta)
    assert plain.method == "fused" and plain.radius_m == 120.0
    grid = np.zeros((8, 8), dtype=np.float32)
    grid[1, 6] = 1.0  # north-east of the centre
    # the candidates the radius was fitted with travel along (meta.location.k of them), whatever k was asked
    deep = candidates + [{**TOP, "tile_id": f"far{n}", "score": 0.1, "lat": 48.0} for n in range(12)]
    block = refine_input(TOP, b"jpeg", meta, deep)
    assert block["meta"] == {k: meta[k] for k in ("calibration", "spread", "location")}
    assert block["candidates"] == deep[:10] and block["image"] == b"jpeg"
    moved = apply_refinement("drone", block, grid)
    offset = peak_offset_m(grid, 0.5, 256, 256)
    assert offset[0] > 0 and offset[1] > 0
    assert moved == estimate_location(deep, "drone", meta, offset)
    assert moved.method == "refined" and moved.radius_m == 60.0 and moved.lat > 47.0 and moved.lon > 8.0
    assert moved.fused == plain.fused


def fields(**extra: Any) -> dict[str, Any]:
    return {"modality": "drone", **extra}


def test_fusion_and_refine_fields_default_to_the_service_settings_and_name_themselves_when_bad() -> None:
    query = localize_fields(fields(), [b"x"], 5, "agreement", "auto")
    assert (query.fusion, query.refine) == ("agreement", "auto")
    query = localize_fields(fields(fusion="MEAN", refine="true"), [b"x"], 5, "agreement", False)
    assert (query.fusion, query.refine) == ("mean", True)
    assert localize_fields(fields(refine=False), [b"x"], 5).refine is False
    for name, value in (("fusion", "median"), ("refine", "sometimes"), ("fusion", 3)):
        with pytest.raises(APIError) as raised:
            localize_fields(fields(**{name: value}), [b"x"], 5)
        assert raised.value.status == 422 and raised.value.field == name
        assert str(value) in raised.value.message


def test_the_service_offers_the_fusions_the_library_has() -> None:
    assert typing.get_args(Fusion) == FUSIONS
    args = ServeArgs()
    assert (args.fusion, args.refine) == ("agreement", False)
    assert ServeArgs(refine="auto").refine == "auto" and ServeArgs(refine=True).refine is True
    with pytest.raises(ValueError, match="fusion"):
        ServeArgs(fusion="median")
