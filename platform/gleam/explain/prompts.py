# ruff: noqa: RUF001  (Chinese text uses full-width punctuation on purpose)
"""GLEAM-X prompts in English and Chinese, as chat messages in transformers' multimodal chat format.

The user message carries the images as `{"type": "image"}` placeholders (the query view or views first,
the north-up satellite tile last) and a text that names concrete visual cues and asks for ONLY a JSON
object `{"match": ..., "confidence": ..., "reasoning": ...}`, so `parse.py` can read the answer. The
JSON keys stay English in both languages; only the reasoning is written in the requested language.

Templates are module constants (`string.Template`, so the JSON braces need no escaping); edit them here.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from string import Template
from typing import Any

from gleam.corpus.schema import Modality

LANGUAGES = ("en", "zh")
QUERY_MODALITIES = tuple(m.value for m in Modality.query_modalities())
MAX_QUERY_IMAGES = 8


class UnsupportedLanguageError(ValueError):
    """A language other than those in LANGUAGES was asked for."""

    def __init__(self, language: object) -> None:
        super().__init__(f"unsupported language {language!r}: supported languages are {', '.join(LANGUAGES)}")
        self.language = language


# --- English ---------------------------------------------------------------------------------------------

SYSTEM_EN = (
    "You are GLEAM-X, an expert in cross-view geo-localization. You compare a query view of a place "
    "(taken from the air, from the street or drawn as a map) with a north-up satellite image, decide "
    "whether they show the same place, and explain the decision with concrete visual evidence."
)

MODALITY_EN = {
    "drone": "an oblique aerial photo taken by a drone (UAV) flying around the place; it looks down at an "
    "angle, so building facades are visible, and it may be rotated relative to north",
    "streetmap": "a rendered street map (OpenStreetMap style), north-up like the satellite image; roads, "
    "building footprints, water and parks are drawn as flat coloured shapes with no photographic texture",
    "panorama": "a 360-degree street-level panorama in equirectangular projection; the horizontal axis "
    "covers every compass direction, the road the camera stood on runs across it, and the buildings and "
    "trees beside the road appear as seen from the street",
    "ground": "a photo taken at ground level by a person (not necessarily on a street), with a limited "
    "field of view and an unknown heading; it shows facades, trees and landmarks from the side",
}

QUERY_ONE_EN = Template("The first image is the query: $description.")
QUERY_MANY_EN = Template("The first $count images are queries of one place; each is $description.")

USER_EN = Template(
    """$query_intro The last image is a north-up satellite tile (north at the top, east to the right).

Do the query and the satellite tile show the same place? Compare concrete visual cues: the road layout \
(junctions, curves, widths), building footprints, shapes and roof colours, water, vegetation and open \
ground, and the relative positions of these features. Allow for the change of viewpoint: the query may \
be oblique, rotated, or seen from the ground.
$evidence
Answer with ONLY a JSON object, with no text before or after it:
{"match": true or false, "confidence": a number from 0 to 1 (how sure you are of your answer), \
"reasoning": "the visual cues that agree or disagree, written in English"}"""
)

EVIDENCE_EN = Template(
    "\nA retrieval model (the GLEAM-C encoder) has already compared the two images. You may weigh its "
    "opinion, but judge from the images: $items.\n"
)

EVIDENCE_ITEMS_EN = {
    "similarity": "cosine similarity {:.3f}",
    "threshold": "calibrated match threshold {:.3f} (a similarity at or above it usually means the same "
    "place)",
    "rank": "this tile ranks {} among the candidates for this query",
    "margin": "margin over the best other candidate {:+.3f}",
}

# --- Chinese ---------------------------------------------------------------------------------------------

SYSTEM_ZH = (
    "你是 GLEAM-X，一名跨视角地理定位专家。你将某个地点的查询视图（航拍、街景或地图）与正北朝上的卫星图像"
    "进行比较，判断它们是否为同一地点，并用具体的视觉证据解释你的判断。"
)

MODALITY_ZH = {
    "drone": "无人机环绕该地点倾斜拍摄的航拍照片，能看到建筑立面，朝向可能与正北不一致",
    "streetmap": "渲染的街道地图（OpenStreetMap 风格），与卫星图像一样正北朝上；道路、建筑轮廓、水体和公园"
    "以平面色块表示，没有照片纹理",
    "panorama": "等距柱状投影的 360 度街景全景图；水平方向覆盖所有方位，拍摄所在的道路横贯画面，道路两侧的"
    "建筑和树木以街道视角呈现",
    "ground": "行人在地面拍摄的照片（不一定在街道上），视野有限且朝向未知，从侧面展示建筑立面、树木和地标",
}

QUERY_ONE_ZH = Template("第一张图像是查询图像：$description。")
QUERY_MANY_ZH = Template("前 $count 张图像是同一地点的查询图像，每张都是$description。")

USER_ZH = Template(
    """$query_intro最后一张图像是正北朝上的卫星图块（上为北，右为东）。

查询图像和卫星图块是否显示同一个地点？请比较具体的视觉线索：道路布局（路口、弯道、宽度）、建筑轮廓、\
形状和屋顶颜色、水体、植被和空地，以及这些要素之间的相对位置。请考虑视角差异：查询图像可能是倾斜的、\
旋转的或从地面拍摄的。
$evidence
只回答一个 JSON 对象，前后不要有任何其他文字：
{"match": true 或 false, "confidence": 0 到 1 之间的数字（你对答案的把握）, \
"reasoning": "一致或不一致的视觉线索，用中文书写"}"""
)

EVIDENCE_ZH = Template(
    "\n检索模型（GLEAM-C 编码器）已经比较过这两张图像。你可以参考它的意见，"
    "但请根据图像本身作出判断：$items。\n"
)

EVIDENCE_ITEMS_ZH = {
    "similarity": "余弦相似度 {:.3f}",
    "threshold": "校准的匹配阈值 {:.3f}（相似度达到或高于该值通常表示同一地点）",
    "rank": "该卫星图块在本次查询的候选中排名第 {}",
    "margin": "与最佳其他候选的差距 {:+.3f}",
}

_TEMPLATES: dict[str, dict[str, Any]] = {
    "en": {
        "system": SYSTEM_EN,
        "modality": MODALITY_EN,
        "one": QUERY_ONE_EN,
        "many": QUERY_MANY_EN,
        "user": USER_EN,
        "evidence": EVIDENCE_EN,
        "items": EVIDENCE_ITEMS_EN,
        "separator": "; ",
    },
    "zh": {
        "system": SYSTEM_ZH,
        "modality": MODALITY_ZH,
        "one": QUERY_ONE_ZH,
        "many": QUERY_MANY_ZH,
        "user": USER_ZH,
        "evidence": EVIDENCE_ZH,
        "items": EVIDENCE_ITEMS_ZH,
        "separator": "；",
    },
}


# --- building messages -----------------------------------------------------------------------------------


def normalize_language(language: object) -> str:
    """'en', 'EN', 'en-US', 'zh_CN', 'zh-Hans' -> 'en' / 'zh'; anything else: UnsupportedLanguageError."""
    if not isinstance(language, str):
        raise UnsupportedLanguageError(language)
    primary = language.strip().lower().replace("_", "-").split("-")[0]
    if primary not in LANGUAGES:
        raise UnsupportedLanguageError(language)
    return primary


def query_modality(modality: Modality | str) -> Modality:
    """A query modality (never satellite: tiles are the reference), else ValueError naming the allowed."""
    allowed = ", ".join(QUERY_MODALITIES)
    try:
        parsed = modality if isinstance(modality, Modality) else Modality.parse(str(modality))
    except ValueError:
        raise ValueError(f"unknown modality {modality!r}: expected one of {allowed}") from None
    if parsed is Modality.SATELLITE:
        raise ValueError(f"satellite is the reference view, not a query modality: expected one of {allowed}")
    return parsed


def build_messages(
    modality: Modality | str,
    language: str,
    evidence: Mapping[str, Any] | None = None,
    query_count: int = 1,
) -> list[dict[str, Any]]:
    """System + user messages; the user content is `query_count` query images, the tile, then the text.

    `evidence` (keys similarity, threshold, rank, margin; others are ignored, None values skipped) is
    quoted as the retrieval model's opinion, which the MLLM may weigh.
    """
    lang = normalize_language(language)
    mod = query_modality(modality)
    if not isinstance(query_count, int) or not 1 <= query_count <= MAX_QUERY_IMAGES:
        raise ValueError(f"query_count must be 1..{MAX_QUERY_IMAGES}, got {query_count!r}")
    t = _TEMPLATES[lang]
    description = t["modality"][mod.value]
    if query_count == 1:
        intro = t["one"].substitute(description=description)
    else:
        intro = t["many"].substitute(count=query_count, description=description)
    items = evidence_items(evidence, lang)
    block = t["evidence"].substitute(items=t["separator"].join(items)) if items else ""
    text = t["user"].substitute(query_intro=intro, evidence=block)
    images: list[dict[str, Any]] = [{"type": "image"} for _ in range(query_count + 1)]
    return [
        {"role": "system", "content": [{"type": "text", "text": t["system"]}]},
        {"role": "user", "content": [*images, {"type": "text", "text": text}]},
    ]


def evidence_items(evidence: Mapping[str, Any] | None, language: str) -> list[str]:
    """The evidence as phrases of `language`, in a fixed order; bad values are a ValueError."""
    if not evidence:
        return []
    phrases = _TEMPLATES[normalize_language(language)]["items"]
    items = []
    for key in ("similarity", "threshold", "rank", "margin"):
        value = evidence.get(key)
        if value is None:
            continue
        if key == "rank":
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"evidence rank must be an integer >= 1, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"evidence {key} must be a finite number, got {value!r}")
        items.append(phrases[key].format(int(value) if key == "rank" else float(value)))
    return items
