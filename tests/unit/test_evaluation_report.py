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
