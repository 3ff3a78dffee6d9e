"""The evaluation table and config: R@1%'s convention is named where it is not the platform's, and VIGOR's
hit rate gets a column only where a modality has one."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from rich.console import Console

from gleam.evaluation.config import EvaluateConfig
from gleam.evaluation.report import metrics_table
from gleam.evaluation.result import EvaluationResult

METRICS = {"R@1": 50.0, "R@5": 75.0, "R@10": 100.0, "R@1%": 62.5, "AP": 60.0, "queries": 8.0}


def _render(result: EvaluationResult) -> str:
    console = Console(width=200, record=True)
    console.print(metrics_table(result))
    return console.export_text()


def _result(**extra: object) -> EvaluationResult:
    return EvaluationResult({"drone": dict(METRICS)}, 150, {"drone": 8}, None, "test", "fp", **extra)


def test_the_table_marks_the_official_one_percent_convention() -> None:
    assert "R@1% (official)" in _render(_result(one_percent="official"))
    platform = _render(_result())
    assert "R@1%" in platform and "official" not in platform


def test_a_hit_rate_column_only_when_a_modality_has_one() -> None:
    both = {"drone": dict(METRICS), "panorama": dict(METRICS, hit_rate=87.5)}
    text = _render(EvaluationResult(both, 150, {"drone": 8, "panorama": 8}, None, "test", "fp"))
    panorama = next(line for line in text.splitlines() if "panorama" in line)
    drone = next(line for line in text.splitlines() if "drone" in line)
    assert "hit rate" in text and "87.50" in panorama and " - " in drone
    assert "hit rate" not in _render(_result())


def test_config_takes_the_two_conventions_and_refuses_others() -> None:
    base = {"corpus": "file:///tmp/c", "encoder": "file:///tmp/e"}
    assert EvaluateConfig(**base).one_percent == "platform"
    assert EvaluateConfig(**base, one_percent="official").one_percent == "official"
    with pytest.raises(ValidationError, match="one_percent"):
        EvaluateConfig(**base, one_percent="nearest")


def test_distance_errors_get_a_table_of_their_own_that_fits_80_columns() -> None:
    from gleam.evaluation.distance import figures
    from gleam.evaluation.result import DistanceErrors

    errors = [3.0, 12.0, 40.0, 75.0, 120.0, 480.0, 900.0, 2500.0]
    found = DistanceErrors(
        methods={"top1": figures(errors, radius=130.0), "fused": figures([e / 2 for e in errors])},
        skipped={"queries_without_coordinates": 2, "top_tile_without_coordinates": 0},
        unknown=3,
        measured=8,
        coverage_target=0.68,
    )
    result = _result(distances={"drone": found}, location_fit="index x v1, fitted at build on val queries")
    console = Console(width=80, record=True)
    console.print(metrics_table(result))
    text = console.export_text()
    assert "distance to each photo's own position" in text and "target 68 %" in text
    top1 = next(line for line in text.splitlines() if "top1" in line)
    # median 97.5, mean 516.25, within 25/50/100/500 m: 25, 37.5, 50, 75 %, radius 130, coverage 62.5 %
    assert top1.split()[2:] == ["97.5", "516.2", "25.0", "37.5", "50.0", "75.0", "130.0", "62.5"]
    fused = next(line for line in text.splitlines() if "fused" in line)
    assert fused.split()[-2:] == ["-", "-"]  # no radius fitted for it
    assert "drone: 8 measured, 2 without lat/lon, 3 served as unknown" in text
    assert "fitted at build on val" in text
    assert "distance to" not in _render(_result())  # no distances measured: no table
