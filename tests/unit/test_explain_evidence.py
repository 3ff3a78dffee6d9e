"""GLEAM-X evidence without an MLLM: calibration, the feature-agreement heatmap, and the evidence answer."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from gleam.explain.confidence import POOLED, ConfidenceModel
from gleam.explain.evidence import (
    Calibration,
    Evidence,
    calibrate,
    colourize,
    evidence_answer,
    heatmap_png,
    match_heatmap,
)
from gleam.explain.prompts import UnsupportedLanguageError
from gleam.model import weights
from gleam.model.transforms import eval_batch
from tests.support.training import tiny_encoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- calibration -----------------------------------------------------------------------------------------


def brute_force_balanced_accuracy(pos: np.ndarray, neg: np.ndarray, threshold: float) -> float:
    return ((pos >= threshold).mean() + (neg < threshold).mean()) / 2


def test_separable_scores_give_a_threshold_between_the_sets() -> None:
    calibration = calibrate([0.8, 0.7, 0.9, 0.75], [0.2, 0.4, 0.1])
    assert 0.4 < calibration.threshold < 0.7 and calibration.accuracy == 1.0
    assert (calibration.positives, calibration.negatives) == (4, 3)
    assert calibration.method == "balanced-accuracy"


def test_overlapping_scores_match_a_brute_force_sweep() -> None:
    rng = np.random.default_rng(0)
    pos = rng.normal(0.6, 0.08, 300)
    neg = rng.normal(0.35, 0.08, 3000)  # 10x more negatives: balanced accuracy must not chase them
    calibration = calibrate(pos, neg)
    assert 0.42 < calibration.threshold < 0.53
    scores = np.unique(np.concatenate([pos, neg]))
    best = max(brute_force_balanced_accuracy(pos, neg, t) for t in (scores[:-1] + scores[1:]) / 2)
    assert calibration.accuracy == pytest.approx(best)
    assert calibration.accuracy == pytest.approx(
        brute_force_balanced_accuracy(pos, neg, calibration.threshold)
    )
    assert 0.9 < calibration.accuracy < 1.0


def test_indistinguishable_scores_give_chance_accuracy() -> None:
    calibration = calibrate([0.5, 0.5], [0.5])
    assert calibration.accuracy == pytest.approx(0.5)


def test_calibration_refuses_empty_or_non_finite_scores() -> None:
    with pytest.raises(ValueError, match="positive"):
        calibrate([], [0.1])
    with pytest.raises(ValueError, match="negative"):
        calibrate([0.9], np.array([]))
    with pytest.raises(ValueError, match="NaN"):
        calibrate([0.9, float("nan")], [0.1])


def test_calibration_round_trips_through_json() -> None:
    calibration = calibrate([0.9, 0.8], [0.1, 0.3])
    data = json.loads(json.dumps(calibration.to_dict()))
    assert Calibration.from_dict(data) == calibration


# --- heatmap ---------------------------------------------------------------------------------------------


def scene(seed: int, size: int = 128) -> Image.Image:
    """A synthetic top-down scene: coloured blocks (roofs), a road and a pond."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), (90, 130, 70))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = rng.integers(0, size - 20, 2)
        w, h = rng.integers(8, 24, 2)
        draw.rectangle(
            [int(x), int(y), int(x + w), int(y + h)], fill=tuple(int(c) for c in rng.integers(0, 255, 3))
        )
    y = int(rng.integers(10, size - 10))
    draw.line([(0, y), (size, y + int(rng.integers(-20, 20)))], fill=(60, 60, 60), width=6)
    cx, cy = rng.integers(20, size - 20, 2)
    draw.ellipse([int(cx) - 12, int(cy) - 9, int(cx) + 12, int(cy) + 9], fill=(40, 80, 160))
    return image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory):
    folder = tiny_encoder(Path(tmp_path_factory.mktemp("enc")) / "enc", seed=3, size=128)
    model, spec, _ = weights.load(folder)
    return model, spec


def embed(encoder, image: Image.Image, modality: str) -> torch.Tensor:
    model, spec = encoder
    with torch.inference_mode():
        return model(eval_batch([image], modality, spec))[0]


def test_heatmap_grid_has_the_tiles_feature_map_shape_and_range(encoder) -> None:
    model, spec = encoder
    tile, query = scene(1), scene(2)
    result = match_heatmap(model, spec, [png_bytes(query)], "drone", png_bytes(tile))
    with torch.inference_mode():
        expected_shape = tuple(model.forward_features_map(eval_batch([tile], "satellite", spec)).shape[-2:])
    assert result.grid.shape == expected_shape == (4, 4)
    assert result.grid.dtype == np.float32
    assert result.grid.min() == 0.0 and result.grid.max() == pytest.approx(1.0)  # min/max rescaled
    assert -1.0 <= result.similarity <= 1.0
    expected = float(embed(encoder, query, "drone") @ embed(encoder, tile, "satellite"))
    assert result.similarity == pytest.approx(expected, abs=1e-5)


def test_query_that_is_the_tile_matches_everywhere(encoder) -> None:
    """Same pixels, same size, same normalisation: every tile cell finds itself, so the embeddings agree
    and the grid has no spread (all cells are equally, perfectly matched: the grid is all zeros)."""
    model, spec = encoder
    tile = scene(4)
    result = match_heatmap(model, spec, tile, "drone", tile)
    assert result.similarity == pytest.approx(1.0, abs=1e-5)
    assert np.all(result.grid == 0.0)


def test_a_set_of_query_images_fuses(encoder) -> None:
    model, spec = encoder
    tile, a, b = scene(5), scene(6), scene(7)
    fused = match_heatmap(model, spec, [a, b], "ground", tile)
    mean = torch.nn.functional.normalize(embed(encoder, a, "ground") + embed(encoder, b, "ground"), dim=0)
    assert fused.similarity == pytest.approx(float(mean @ embed(encoder, tile, "satellite")), abs=1e-5)
    single = match_heatmap(model, spec, [a], "ground", tile)
    assert fused.grid.shape == single.grid.shape
    # the tile itself in the set: each tile cell's best match is perfect, whatever the other image holds
    assert np.all(match_heatmap(model, spec, [a, tile], "ground", tile).grid == 0.0)


def test_heatmap_refuses_bad_input(encoder) -> None:
    model, spec = encoder
    with pytest.raises(ValueError, match="at least one"):
        match_heatmap(model, spec, [], "drone", scene(1))
    with pytest.raises(ValueError, match="satellite is the reference"):
        match_heatmap(model, spec, [scene(1)], "satellite", scene(1))


def test_heatmap_png_is_the_tile_size_and_blends_the_ramp() -> None:
    tile = scene(8, size=100).crop((0, 0, 100, 80))
    grid = np.array([[0.0, 0.5], [1.0, 0.25]], dtype=np.float32)
    png = heatmap_png(grid, png_bytes(tile))
    decoded = Image.open(io.BytesIO(png))
    assert decoded.format == "PNG" and decoded.size == (100, 80) and decoded.mode == "RGB"
    plain = np.asarray(Image.open(io.BytesIO(heatmap_png(grid, tile, alpha=0.0))))
    assert np.array_equal(plain, np.asarray(tile))
    hot = np.asarray(Image.open(io.BytesIO(heatmap_png(np.ones((3, 3)), tile, alpha=1.0))))
    cold = np.asarray(Image.open(io.BytesIO(heatmap_png(np.zeros((3, 3)), tile, alpha=1.0))))
    assert np.all(hot == [255, 0, 0]) and np.all(cold == [0, 0, 255])
    with pytest.raises(ValueError, match="alpha"):
        heatmap_png(grid, tile, alpha=1.5)
    with pytest.raises(ValueError, match="2-D"):
        heatmap_png(np.zeros(4), tile)


def test_colour_ramp_runs_from_blue_to_red() -> None:
    colours = colourize(np.array([[0.0, 0.25, 0.5, 0.75, 1.0]]))[0]
    assert colours.tolist() == [[0, 0, 255], [0, 255, 255], [0, 255, 0], [255, 255, 0], [255, 0, 0]]


# --- evidence and its answer -----------------------------------------------------------------------------


def test_evidence_json_carries_the_heatmap_as_base64_only_when_present() -> None:
    evidence = Evidence(similarity=0.7, threshold=0.6, rank=2, margin=-0.05, heatmap_png=b"\x89PNG-bytes")
    data = json.loads(json.dumps(evidence.to_json()))
    assert base64.b64decode(data["heatmap_png"]) == b"\x89PNG-bytes"
    assert (data["similarity"], data["threshold"], data["rank"], data["margin"]) == (0.7, 0.6, 2, -0.05)
    assert "heatmap_png" not in Evidence(similarity=0.1).to_json()


FITTED = {"method": "platt-logistic", "slope": 20.0, "pairs": 256}


def test_evidence_answer_above_the_threshold() -> None:
    evidence = Evidence(
        similarity=0.734,
        threshold=0.684,
        rank=1,
        margin=0.081,
        heatmap_png=b"png",
        modality="drone",
        calibration_used="drone",
        confidence_model=FITTED,
    )
    answer = evidence_answer(evidence, "en")
    assert answer.match is True and answer.reasoning_source == "evidence" and answer.parsed
    assert answer.raw is None and answer.model is None and answer.language == "en"
    # the fitted probability of "same place" 0.05 above the threshold with slope 20: logistic(1)
    assert answer.confidence == pytest.approx(1 / (1 + np.exp(-1.0)))
    assert answer.notes == []  # its own calibration, a fitted confidence, a known rank: nothing to add
    for fragment in ("0.734", "0.684", "ranks 1", "0.081 ahead", "heatmap", "same place"):
        assert fragment in answer.reasoning
    assert answer.evidence == evidence.to_json()
    assert json.loads(json.dumps(answer.to_json()))["reasoning_source"] == "evidence"


def test_evidence_answer_below_the_threshold_in_chinese() -> None:
    evidence = Evidence(similarity=0.40, threshold=0.60, rank=7, margin=-0.2, confidence_model=FITTED)
    answer = evidence_answer(evidence, "zh")
    assert answer.match is False and answer.language == "zh"
    # confidence in "not the same place": 1 - P(same) = 1 - logistic(20 * -0.2) = logistic(4)
    assert answer.confidence == pytest.approx(1 / (1 + np.exp(-4.0)))
    assert "0.400" in answer.reasoning and "0.600" in answer.reasoning and "不是同一地点" in answer.reasoning
    assert "排名第 7" in answer.reasoning and "落后" in answer.reasoning
    assert "热力图" not in answer.reasoning  # no heatmap was computed: none is mentioned


def test_confidence_is_the_fitted_probability_and_grows_with_the_distance_to_the_threshold() -> None:
    def confidence(similarity: float, slope: float = 20.0) -> float | None:
        model = {**FITTED, "slope": slope}
        return evidence_answer(Evidence(similarity, 0.6, confidence_model=model), "en").confidence

    near, far = confidence(0.61), confidence(0.9)
    assert 0.5 < near < far < 1.0
    assert confidence(0.6) == 0.5
    assert confidence(0.9) == pytest.approx(ConfidenceModel(0.6, 20.0, 256).probability(0.9))
    # the same distance on an index whose pairs barely separate: barely more than a coin
    assert 0.5 < confidence(0.9, slope=0.2) < 0.52


def test_an_index_built_before_confidences_were_fitted_gives_a_verdict_without_a_confidence() -> None:
    """No fixed curve stands in for a fit that was never made: confidence None, and the answer says why."""
    for language, said in (("en", "before confidences were fitted"), ("zh", "拟合的置信度")):
        answer = evidence_answer(Evidence(similarity=0.734, threshold=0.684), language)
        assert answer.match is True and answer.confidence is None
        assert len(answer.notes) == 1 and said in answer.notes[0]


def test_a_calibration_where_similarity_does_not_rise_with_same_place_gives_no_verdict() -> None:
    for slope in (0.0, -3.0):
        evidence = Evidence(similarity=0.9, threshold=0.6, confidence_model={**FITTED, "slope": slope})
        answer = evidence_answer(evidence, "en")
        assert answer.match is None and answer.confidence is None
        assert "not more often the same place" in answer.reasoning and "judged" not in answer.reasoning
        assert "不作判断" in evidence_answer(evidence, "zh").reasoning


def test_a_modality_answered_with_the_pooled_calibration_says_so() -> None:
    evidence = Evidence(
        similarity=0.7,
        threshold=0.6,
        modality="ground",
        calibration_used=POOLED,
        confidence_model=FITTED,
    )
    answer = evidence_answer(evidence, "en")
    assert answer.match is True and answer.confidence is not None
    assert answer.evidence["calibration_used"] == POOLED
    assert answer.notes == [
        "ground has no calibration of its own (too few validation queries): the threshold and the "
        "confidence are those of all modalities pooled."
    ]
    assert "所有模态合并" in evidence_answer(evidence, "zh").notes[0]


def test_a_tile_beyond_the_searched_depth_is_said_to_be_so() -> None:
    evidence = Evidence(similarity=0.3, threshold=0.6, rank=None, depth=100, confidence_model=FITTED)
    answer = evidence_answer(evidence, "en")
    assert answer.evidence["rank"] is None and answer.evidence["depth"] == 100
    assert "not among the 100 best candidates" in answer.reasoning
    assert any("beyond 100" in note for note in answer.notes)
    zh = evidence_answer(evidence, "zh")
    assert "前 100 个候选" in zh.reasoning and any("100 之后" in note for note in zh.notes)
    # an uploaded tile is not searched for at all (depth None): no rank, nothing to say about it
    assert evidence_answer(Evidence(similarity=0.3, threshold=0.6, confidence_model=FITTED), "en").notes == []


def test_uncalibrated_evidence_gives_no_verdict() -> None:
    answer = evidence_answer(Evidence(similarity=0.8), "en")
    assert answer.match is None and answer.confidence is None
    assert "0.800" in answer.reasoning and "no match threshold" in answer.reasoning
    assert "尚未校准" in evidence_answer(Evidence(similarity=0.8), "zh").reasoning
    with pytest.raises(UnsupportedLanguageError):
        evidence_answer(Evidence(similarity=0.8), "de")


# --- an index whose encoder cannot tell places apart ------------------------------------------------------

COLLAPSED = {
    "collapsed": True,
    "at_chance": True,
    "mean_cosine": 0.99991,
    "effective_rank": 1.32,
    "accuracy": 0.5,
    "queries": 128,
    "reliable": False,
}


def test_collapsed_index_gives_no_verdict_and_says_why() -> None:
    """The reported case: every score 1.000, a threshold of 0.999, a wrong tile called "same place"."""
    evidence = Evidence(similarity=1.0, threshold=0.999, rank=1, margin=0.0, quality=COLLAPSED)
    answer = evidence_answer(evidence, "en")
    assert answer.match is None and answer.confidence is None
    assert answer.reasoning_source == "evidence" and answer.parsed
    text = answer.reasoning
    assert "cannot tell places apart on this index" in text
    for figure in ("1.000", "0.9999", "1.3", "0.50", "128 validation queries", "no verdict"):
        assert figure in text, figure
    assert "judged" not in text and "at or above" not in text  # no verdict, no calibrated claim
    assert answer.evidence["quality"] == COLLAPSED
    chinese = evidence_answer(evidence, "zh")
    assert chinese.match is None and chinese.confidence is None
    assert "无法区分不同地点" in chinese.reasoning and "坍缩" in chinese.reasoning
    assert "0.9999" in chinese.reasoning and "平衡准确率 0.50" in chinese.reasoning
    assert "判断二者为同一地点" not in chinese.reasoning


def test_calibration_at_chance_alone_gives_no_verdict() -> None:
    quality = {**COLLAPSED, "collapsed": False, "mean_cosine": 0.97, "effective_rank": 12.2}
    answer = evidence_answer(Evidence(similarity=0.93, threshold=0.84, rank=1, quality=quality), "en")
    assert answer.match is None and answer.confidence is None
    assert "no better than chance" in answer.reasoning and "collapsed" not in answer.reasoning
    assert "a similarity cannot confirm a match" in answer.reasoning  # not "cannot tell places apart":
    assert "cannot tell places apart" not in answer.reasoning  # the ranking itself may still beat chance
    zh = evidence_answer(Evidence(similarity=0.93, threshold=0.84, quality=quality), "zh").reasoning
    assert "随机" in zh and "坍缩" not in zh and "无法确认" in zh


def test_unknown_or_healthy_quality_keeps_the_calibrated_verdict() -> None:
    """Indexes built before spread was recorded: unknown is not collapsed."""
    unknown = {"collapsed": None, "at_chance": None, "reliable": True}
    healthy = {**COLLAPSED, "collapsed": False, "at_chance": False, "reliable": True}
    for quality in (None, unknown, healthy):
        evidence = Evidence(similarity=0.734, threshold=0.684, quality=quality, confidence_model=FITTED)
        answer = evidence_answer(evidence, "en")
        assert answer.match is True and answer.confidence is not None
        assert "same place" in answer.reasoning and "cannot tell" not in answer.reasoning
