# ruff: noqa: RUF001  (Chinese text uses full-width punctuation on purpose)
"""Evidence from the GLEAM-C encoder alone: a calibrated similarity, a heatmap, and an answer built on them.

This is what GLEAM-X says when no multimodal LLM is configured, and what the MLLM is shown as the
retrieval model's opinion when one is.

- Calibration: the match threshold on cosine similarity that best separates positive pairs (a query
  and its own tile) from negative pairs, by balanced accuracy, so a rare class does not decide it.
- Heatmap: for each cell of the tile's feature map, the best cosine similarity to any cell of the
  query's feature map(s): where on the tile the two views have features in common. It is min/max
  rescaled per tile, so it shows *where* features agree most, not *whether* the views match.
- Answer: match = similarity >= threshold; confidence = the probability that this verdict is right,
  from the model fitted on the index's own calibration pairs (`gleam.explain.confidence`), and None for
  an index built before confidences were fitted (a curve fitted to nothing is not a probability);
  reasoning = a factual sentence citing the numbers; notes = what it fell back on or could not say (a
  modality answered with the pooled calibration, no fitted confidence, a rank beyond the searched depth).
- Unless the index says its scores mean nothing (`Evidence.quality`, from the index's meta.json via
  `gleam.index.calibrate.index_quality`): when its tile embeddings have collapsed or its calibration is
  at chance, there is no verdict (match and confidence None), and the reasoning says plainly that the
  encoder cannot tell places apart on this index, with the measured figures. A threshold calibrated on
  scores that are all ~1.000 would otherwise call every top-1 "the same place".
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gleam.explain.confidence import POOLED, ConfidenceModel
from gleam.explain.explanation import Explanation, as_image_list
from gleam.explain.prompts import normalize_language

if TYPE_CHECKING:
    from gleam.model.encoder import GleamEncoder
    from gleam.model.spec import EncoderSpec
    from gleam.model.transforms import ImageInput

CALIBRATION_METHOD = "balanced-accuracy"

# Colour ramp of the heatmap, from cold (no agreement) to hot: blue, cyan, green, yellow, red.
_RAMP_STOPS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_RAMP_RGB = np.array([[0, 0, 255], [0, 255, 255], [0, 255, 0], [255, 255, 0], [255, 0, 0]], dtype=np.float64)


# --- calibration -----------------------------------------------------------------------------------------


@dataclass
class Calibration:
    """A match threshold on cosine similarity and how well it separated the pairs it was fitted on."""

    threshold: float
    positives: int
    negatives: int
    method: str
    accuracy: float  # balanced accuracy at the threshold: (true-positive rate + true-negative rate) / 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        return cls(
            threshold=float(data["threshold"]),
            positives=int(data["positives"]),
            negatives=int(data["negatives"]),
            method=str(data["method"]),
            accuracy=float(data["accuracy"]),
        )


def calibrate(
    positive_scores: Sequence[float] | np.ndarray, negative_scores: Sequence[float] | np.ndarray
) -> Calibration:
    """The threshold maximising balanced accuracy (a score >= threshold means "match").

    Candidates are the midpoints between consecutive distinct scores (of both sets together), plus one
    below all scores and one above; ties go to the lowest threshold. O(n log n), vectorised.
    """
    pos = _scores(positive_scores, "positive")
    neg = _scores(negative_scores, "negative")
    unique = np.unique(np.concatenate([pos, neg]))
    candidates = np.concatenate([[unique[0] - 1e-6], (unique[:-1] + unique[1:]) / 2.0, [unique[-1] + 1e-6]])
    pos.sort()
    neg.sort()
    true_positive_rate = 1.0 - np.searchsorted(pos, candidates, side="left") / pos.size
    true_negative_rate = np.searchsorted(neg, candidates, side="left") / neg.size
    balanced = (true_positive_rate + true_negative_rate) / 2.0
    best = int(np.argmax(balanced))
    return Calibration(
        threshold=float(candidates[best]),
        positives=int(pos.size),
        negatives=int(neg.size),
        method=CALIBRATION_METHOD,
        accuracy=float(balanced[best]),
    )


def _scores(values: Sequence[float] | np.ndarray, side: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise ValueError(f"calibration needs at least one {side} score")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{side} scores contain NaN or infinite values")
    return array.copy()


# --- heatmap ---------------------------------------------------------------------------------------------


@dataclass
class HeatmapResult:
    """Global cosine similarity of query and tile, and the tile's (h', w') agreement grid in [0, 1]."""

    similarity: float
    grid: np.ndarray


def match_heatmap(
    encoder: GleamEncoder,
    spec: EncoderSpec,
    query_images: ImageInput | Sequence[ImageInput],
    modality: str,
    tile_image: ImageInput,
) -> HeatmapResult:
    """Where the tile's features agree with the query's, and the similarity of their embeddings.

    Several query images are a set of one place: their maps are pooled (a tile cell's heat is its best
    match in any of them) and their embeddings fused as the normalised mean of the unit embeddings.
    A grid with no spread (e.g. the query is the tile itself, every cell matches perfectly) is all zeros.
    """
    import torch
    import torch.nn.functional as F

    from gleam.explain.prompts import query_modality
    from gleam.model.transforms import eval_batch

    images = as_image_list(query_images)
    mod = query_modality(modality)
    parameter = next(encoder.parameters())
    device, dtype = parameter.device, parameter.dtype
    queries = eval_batch(images, mod, spec).to(device=device, dtype=dtype)
    tile = eval_batch([tile_image], "satellite", spec).to(device=device, dtype=dtype)
    with torch.inference_mode():
        query_map = F.normalize(encoder.forward_features_map(queries).float(), dim=1)  # (B, C, h, w)
        tile_map = F.normalize(encoder.forward_features_map(tile).float(), dim=1)[0]  # (C, H, W)
        query_embedding = F.normalize(encoder(queries).float().mean(dim=0), dim=0, eps=1e-6)
        tile_embedding = encoder(tile).float()[0]
        channels, height, width = tile_map.shape
        query_cells = query_map.permute(1, 0, 2, 3).reshape(channels, -1)  # (C, B*h*w)
        heat = (tile_map.reshape(channels, -1).T @ query_cells).amax(dim=1).reshape(height, width)
        similarity = float(torch.clamp(query_embedding @ tile_embedding, -1.0, 1.0))
    grid = heat.cpu().numpy().astype(np.float32)
    low, high = float(grid.min()), float(grid.max())
    grid = (grid - low) / (high - low) if high - low > 1e-4 else np.zeros_like(grid)
    return HeatmapResult(similarity=similarity, grid=np.clip(grid, 0.0, 1.0).astype(np.float32))


def colourize(grid: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) uint8 on the blue-cyan-green-yellow-red ramp."""
    values = np.clip(np.nan_to_num(np.asarray(grid, dtype=np.float64)), 0.0, 1.0)
    channels = [np.interp(values, _RAMP_STOPS, _RAMP_RGB[:, c]) for c in range(3)]
    return np.stack(channels, axis=-1).round().astype(np.uint8)


def heatmap_png(grid: np.ndarray, tile_image: ImageInput, alpha: float = 0.45) -> bytes:
    """The grid upsampled (bilinear) to the tile's size, coloured, blended over the tile at `alpha`: PNG."""
    from PIL import Image

    from gleam.model.transforms import decode

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    grid = np.asarray(grid, dtype=np.float32)
    if grid.ndim != 2 or grid.size == 0:
        raise ValueError(f"grid must be a non-empty 2-D array, got shape {grid.shape}")
    tile = decode(tile_image).convert("RGB")
    upsampled = Image.fromarray(grid, mode="F").resize(tile.size, Image.BILINEAR)
    colour = colourize(np.asarray(upsampled)).astype(np.float32)
    blended = (1.0 - alpha) * np.asarray(tile, dtype=np.float32) + alpha * colour
    buffer = io.BytesIO()
    Image.fromarray(np.clip(blended.round(), 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


# --- evidence and the answer built on it -----------------------------------------------------------------


@dataclass
class Evidence:
    """The retrieval model's view of one (query, tile) pair.

    `rank`: the tile's 1-based rank among the `depth` best candidates of the query (None beyond them).
    `margin`: the tile's similarity minus the best similarity among the other candidates (positive: it is
    the top one, by that much). `calibration_used`: the query modality, or POOLED when it is answered
    with the calibration over all modalities; `confidence_model`: that calibration's fitted confidence.
    """

    similarity: float
    threshold: float | None = None
    rank: int | None = None
    margin: float | None = None
    heatmap_png: bytes | None = None
    calibration: dict[str, Any] | None = None
    # what the index knows about its own scores: collapsed, at_chance (None: unknown), mean_cosine,
    # effective_rank, accuracy, queries, reliable, warning (gleam.index.calibrate.index_quality)
    quality: dict[str, Any] | None = None
    depth: int | None = None
    modality: str | None = None
    calibration_used: str | None = None
    confidence_model: dict[str, Any] | None = None

    @property
    def fitted(self) -> ConfidenceModel | None:
        """The confidence fitted at index build for the calibration used (None: none was fitted)."""
        if self.threshold is None or not self.confidence_model:
            return None
        return ConfidenceModel.from_dict(self.threshold, self.confidence_model)

    def notes(self, language: str) -> list[str]:
        """What an answer built on this evidence fell back on or cannot say, in `language` ("en"/"zh")."""
        text = _NOTES[normalize_language(language)]
        notes = []
        if self.calibration_used == POOLED and self.modality:
            notes.append(text["pooled"].format(modality=self.modality))
        if self.threshold is not None and not self.unreliable and self.fitted is None:
            notes.append(text["unfitted"])
        if self.rank is None and self.depth is not None:
            notes.append(text["beyond"].format(depth=self.depth))
        return notes

    @property
    def unreliable(self) -> bool:
        """The index recorded that its scores cannot tell places apart (unknown counts as fine)."""
        quality = self.quality or {}
        return bool(quality.get("collapsed") or quality.get("at_chance"))

    def scores(self) -> dict[str, Any]:
        """The numbers only (what a prompt quotes)."""
        return {
            "similarity": self.similarity,
            "threshold": self.threshold,
            "rank": self.rank,
            "margin": self.margin,
        }

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            **self.scores(),
            "depth": self.depth,
            "calibration": self.calibration,
            "calibration_used": self.calibration_used,
            "confidence_model": self.confidence_model,
            "quality": self.quality,
        }
        if self.heatmap_png is not None:
            out["heatmap_png"] = base64.b64encode(self.heatmap_png).decode("ascii")
        return out


_NOTES = {
    "en": {
        "pooled": "{modality} has no calibration of its own (too few validation queries): the threshold and "
        f"the confidence are those of {POOLED}.",
        "unfitted": "This index was built before confidences were fitted: its evidence has a calibrated "
        "threshold but no fitted confidence, so none is given (rebuild the index to fit one).",
        "beyond": "The tile is not among the {depth} best candidates searched: its rank is beyond {depth}, "
        "so rank and margin are unknown.",
    },
    "zh": {
        "pooled": "{modality} 模态没有自己的校准（验证查询太少）：阈值和置信度采用所有模态合并的校准。",
        "unfitted": "该索引构建于拟合置信度之前：其证据有校准阈值，但没有拟合的置信度，"
        "因此不给出置信度（重建索引即可拟合）。",
        "beyond": "该图块不在检索的前 {depth} 个候选中：排名在 {depth} 之后，因此排名和差距未知。",
    },
}


def evidence_answer(evidence: Evidence, language: str) -> Explanation:
    """The answer from the encoder's evidence alone (`reasoning_source="evidence"`), in `language`."""
    lang = normalize_language(language)
    fitted = evidence.fitted
    if evidence.threshold is None or evidence.unreliable or (fitted is not None and not fitted.informative):
        match, confidence = None, None
    else:
        match = evidence.similarity >= evidence.threshold
        confidence = fitted.confidence(evidence.similarity) if fitted is not None else None
    return Explanation(
        match=match,
        confidence=confidence,
        reasoning=_reasoning(evidence, match, lang),
        reasoning_source="evidence",
        parsed=True,
        raw=None,
        language=lang,
        evidence=evidence.to_json(),
        model=None,
        seconds=0.0,
        notes=evidence.notes(lang),
    )


def _reasoning(evidence: Evidence, match: bool | None, language: str) -> str:
    s, t = evidence.similarity, evidence.threshold
    if language == "zh":
        parts = [f"检索编码器（GLEAM-C）给出查询与该卫星图块的余弦相似度为 {s:.3f}"]
        if evidence.unreliable:
            parts[0] += _unreliable_zh(evidence.quality or {})
        elif t is None:
            parts[0] += "；尚未校准匹配阈值，因此无法据此判断是否为同一地点。"
        elif match is None:
            parts[0] += "，但在此索引的校准中，相似度越高并不意味着越可能是同一地点，因此不作判断。"
        elif match:
            parts[0] += f"，达到校准的匹配阈值 {t:.3f}，因此判断二者为同一地点。"
        else:
            parts[0] += f"，低于校准的匹配阈值 {t:.3f}，因此判断二者不是同一地点。"
        if evidence.rank is not None:
            rank = f"该图块在候选中排名第 {evidence.rank}"
            if evidence.margin is not None:
                m = evidence.margin
                rank += f"，领先下一个候选 {m:.3f}" if m >= 0 else f"，落后于排名第一的候选 {-m:.3f}"
            parts.append(rank + "。")
        elif evidence.depth is not None:
            parts.append(f"该图块不在检索的前 {evidence.depth} 个候选中。")
        if evidence.heatmap_png is not None:
            parts.append("热力图显示两种视角的特征在卫星图块上最一致的位置。")
        return "".join(parts)
    parts = [
        f"The retrieval encoder (GLEAM-C) gives a cosine similarity of {s:.3f} between the query and the tile"
    ]
    if evidence.unreliable:
        parts[0] += _unreliable_en(evidence.quality or {})
    elif t is None:
        parts[0] += "; no match threshold is calibrated, so it cannot say whether they show the same place."
    elif match is None:
        parts[0] += (
            ", but on this index's calibration a higher similarity is not more often the same place, "
            "so no verdict is given."
        )
    elif match:
        parts[0] += (
            f", at or above the calibrated match threshold of {t:.3f}, so they are judged the same place."
        )
    else:
        parts[0] += f", below the calibrated match threshold of {t:.3f}, so they are judged different places."
    if evidence.rank is not None:
        rank = f"The tile ranks {evidence.rank} among the candidates"
        if evidence.margin is not None:
            m = evidence.margin
            rank += f", {m:.3f} ahead of the next one" if m >= 0 else f", {-m:.3f} behind the top one"
        parts.append(rank + ".")
    elif evidence.depth is not None:
        parts.append(f"The tile is not among the {evidence.depth} best candidates searched.")
    if evidence.heatmap_png is not None:
        parts.append("The heatmap shows where on the tile the features of the two views agree most.")
    return " ".join(parts)


def _unreliable_en(quality: dict[str, Any]) -> str:
    reasons = []
    if quality.get("collapsed"):
        cosine, rank = _figure(quality.get("mean_cosine"), 4), _figure(quality.get("effective_rank"), 1)
        reasons.append(
            "its tile embeddings have collapsed onto nearly one vector "
            f"(mean pairwise cosine {cosine}, effective rank {rank})"
        )
    if quality.get("at_chance"):
        queries = f" on {quality['queries']} validation queries" if quality.get("queries") else ""
        reasons.append(
            "its calibrated match threshold tells right matches from wrong ones no better than chance "
            f"(balanced accuracy {_figure(quality.get('accuracy'), 2)}{queries})"
        )
    lead = (
        ", but the encoder cannot tell places apart on this index: "
        if quality.get("collapsed")
        else ", but on this index a similarity cannot confirm a match: "
    )
    return (
        lead
        + "; and ".join(reasons)
        + ". So this similarity says nothing about whether they show the same place, and no verdict is given."
    )


def _unreliable_zh(quality: dict[str, Any]) -> str:
    reasons = []
    if quality.get("collapsed"):
        cosine, rank = _figure(quality.get("mean_cosine"), 4), _figure(quality.get("effective_rank"), 1)
        reasons.append(f"其卫星图块嵌入已坍缩到几乎同一个向量（两两平均余弦相似度 {cosine}，有效秩 {rank}）")
    if quality.get("at_chance"):
        queries = f"，基于 {quality['queries']} 个验证查询" if quality.get("queries") else ""
        reasons.append(
            "其校准的匹配阈值区分正确与错误匹配的能力不比随机猜测更好"
            f"（平衡准确率 {_figure(quality.get('accuracy'), 2)}{queries}）"
        )
    lead = (
        "，但在此索引上该编码器无法区分不同地点："
        if quality.get("collapsed")
        else "，但在此索引上相似度无法确认是否匹配："
    )
    return lead + "；并且".join(reasons) + "。因此该相似度不能说明二者是否为同一地点，不作判断。"


def _figure(value: Any, digits: int) -> str:
    return f"{float(value):.{digits}f}" if isinstance(value, (int, float)) else "?"
