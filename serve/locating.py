"""The location block of a /v1/localize answer: computed where the search happens, refined in the encoder.

`SatelliteIndex.search_many` estimates each row's position from its candidates and the meta.json of the
version it searched (`gleam.index.location.estimate_location`: calibration, quality and radius of one
version). When the row asks for sub-tile refinement and it can apply, the answer also carries what the
encoder needs to refine it (`refine_input`: the top tile's JPEG and ground geometry, and the meta pieces
the estimate reads), so the encoder, which holds the model, computes the heatmap of the query against
that tile and re-estimates (`apply_refinement`) on the same version, with no further index call on
either path (colocated or through the SatelliteIndex deployment).

Refinement costs one more forward of the query images and the top tile per request, outside the batch;
`wants_refinement` skips it wherever it could not change the answer (unknown or top-1 estimate, no
refined radius fitted, tile geometry unknown) and, for "auto", wherever the index's own validation
queries did not measure the refined radius smaller than the fused one.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from gleam.index.location import Location, estimate_location, peak_offset_m, radius_for

# what `estimate_location` reads from meta.json (evidence_facts: calibration, spread; the fitted radius)
META_KEYS = ("calibration", "spread", "location")
REFINE_KEY = "refine"  # the private block of an answer the encoder consumes and removes


def locate(candidates: list[dict[str, Any]], modality: str, meta: dict[str, Any]) -> Location:
    """The unrefined estimate of one answer, on the version whose `meta` gave the candidates."""
    return estimate_location(candidates, modality, meta)


def with_reason(location: Location, reason: str | None) -> Location:
    """`location` with `reason` added (after any reason it already has)."""
    if not reason:
        return location
    joined = f"{location.reason} {reason}" if location.reason else reason
    return dataclasses.replace(location, reason=joined)


def wants_refinement(
    location: Location, top: dict[str, Any] | None, meta: dict[str, Any], modality: str, refine: bool | str
) -> tuple[bool, str | None]:
    """(compute the heatmap for this answer?, why not, when it was asked for and cannot be done).

    Only a fused estimate is refined: an unknown or top-1 one says why already. "auto" refines where
    the index measured refinement closer (a smaller refined radius than the fused one for the modality,
    with the pooled fallback) and says nothing when it does not.
    """
    if refine is False or location.method != "fused" or top is None:
        return False, None
    fitted = meta.get("location")
    refined = radius_for(fitted, modality, "refined")
    if refined is None:
        reason = (
            "Not refined: this index has no fitted radius for refined estimates (no validation query "
            "was refined when it was built)."
        )
        return False, None if refine == "auto" else reason
    if not _geometry(top):
        reason = "Not refined: the top tile's ground size (gsd_m, width, height) is unknown."
        return False, None if refine == "auto" else reason
    if refine == "auto":
        fused = radius_for(fitted, modality, "fused")
        return (fused is not None and refined[0] < fused[0]), None
    return True, None


def refine_input(
    tile: dict[str, Any], image: bytes, meta: dict[str, Any], candidates: list[dict[str, Any]]
) -> dict[str, Any]:
    """What the encoder needs to refine an answer: the top tile's image and geometry, and the candidates
    and meta pieces the unrefined estimate was made from (so the re-estimate uses that version and as
    many candidates as the radius was fitted with, whatever k the request asked for)."""
    fitted = meta.get("location") or {}
    depth = int(fitted.get("k") or len(candidates))
    return {
        "tile_id": tile["tile_id"],
        "image": image,
        "gsd_m": float(tile["gsd_m"]),
        "width": int(tile["width"]),
        "height": int(tile["height"]),
        "candidates": candidates[:depth],
        "meta": {key: meta.get(key) for key in META_KEYS},
    }


def apply_refinement(modality: str, refine: dict[str, Any], grid: np.ndarray) -> Location:
    """The estimate again, moved to the heatmap's peak on the top tile (`grid`: match_heatmap's)."""
    offset = peak_offset_m(grid, refine["gsd_m"], refine["width"], refine["height"])
    return estimate_location(refine["candidates"], modality, refine["meta"], offset)


def _geometry(tile: dict[str, Any]) -> bool:
    gsd = tile.get("gsd_m")
    return (
        gsd is not None
        and math.isfinite(float(gsd))
        and float(gsd) > 0
        and bool(tile.get("width"))
        and bool(tile.get("height"))
    )
