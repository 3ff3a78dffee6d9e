"""GLEAM-X prompts: message structure, both languages, modalities, and the retrieval evidence."""

from __future__ import annotations

import numpy as np
import pytest

from gleam.corpus.schema import Modality
from gleam.explain.prompts import (
    LANGUAGES,
    MODALITY_EN,
    MODALITY_ZH,
    UnsupportedLanguageError,
    build_messages,
    normalize_language,
)


def user_text(messages: list[dict]) -> str:
    return messages[1]["content"][-1]["text"]


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("modality", ["drone", "streetmap", "panorama", "ground"])
def test_messages_follow_the_multimodal_chat_format(language: str, modality: str) -> None:
    messages = build_messages(modality, language)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"][0]["type"] == "text" and "GLEAM-X" in messages[0]["content"][0]["text"]
    content = messages[1]["content"]
    assert content[:2] == [{"type": "image"}, {"type": "image"}] and content[2]["type"] == "text"
    assert len(content) == 3
    text = user_text(messages)
    assert '"match"' in text and '"confidence"' in text and '"reasoning"' in text and "JSON" in text
    description = (MODALITY_EN if language == "en" else MODALITY_ZH)[modality]
    assert description in text
    assert "$" not in text  # every placeholder was filled


def test_english_prompt_names_concrete_cues_and_the_answer_language() -> None:
    text = user_text(build_messages("drone", "en"))
    for cue in (
        "road layout",
        "building footprints",
        "roof colours",
        "water",
        "vegetation",
        "relative positions",
    ):
        assert cue in text
    assert "north-up satellite tile" in text and "ONLY a JSON object" in text
    assert "written in English" in text


def test_chinese_prompt_is_in_chinese_and_asks_for_chinese_reasoning() -> None:
    messages = build_messages("panorama", "zh")
    text = user_text(messages)
    assert "道路布局" in text and "屋顶颜色" in text and "卫星图块" in text
    assert "用中文书写" in text and "JSON" in text
    assert "跨视角地理定位" in messages[0]["content"][0]["text"]


def test_several_query_images_come_first_then_the_tile() -> None:
    messages = build_messages("ground", "en", query_count=3)
    content = messages[1]["content"]
    assert [c["type"] for c in content] == ["image", "image", "image", "image", "text"]
    assert "The first 3 images are queries of one place" in user_text(messages)
    assert "前 2 张图像" in user_text(build_messages("ground", "zh", query_count=2))
    with pytest.raises(ValueError, match="query_count"):
        build_messages("ground", "en", query_count=0)


def test_evidence_is_quoted_as_the_retrieval_models_opinion() -> None:
    evidence = {
        "similarity": np.float32(0.7342),
        "threshold": 0.61,
        "rank": np.int64(1),
        "margin": 0.081,
        "heatmap_png": "ignored",
    }
    text = user_text(build_messages("drone", "en", evidence))
    assert "retrieval model" in text and "weigh" in text
    assert "cosine similarity 0.734" in text and "threshold 0.610" in text
    assert "ranks 1" in text and "+0.081" in text
    zh = user_text(build_messages("drone", "zh", evidence))
    assert "余弦相似度 0.734" in zh and "阈值 0.610" in zh and "排名第 1" in zh
    partial = user_text(build_messages("drone", "en", {"similarity": 0.5, "threshold": None, "rank": None}))
    assert "cosine similarity 0.500" in partial and "threshold" not in partial and "ranks" not in partial
    assert "retrieval model" not in user_text(build_messages("drone", "en", {}))
    with pytest.raises(ValueError, match="rank"):
        build_messages("drone", "en", {"rank": 0})
    with pytest.raises(ValueError, match="similarity"):
        build_messages("drone", "en", {"similarity": float("nan")})


def test_unsupported_language_names_it_and_the_supported_ones() -> None:
    with pytest.raises(UnsupportedLanguageError, match=r"'fr'.*en, zh") as caught:
        build_messages("drone", "fr")
    assert isinstance(caught.value, ValueError)
    with pytest.raises(UnsupportedLanguageError):
        normalize_language(None)
    assert normalize_language(" EN ") == "en" and normalize_language("zh-CN") == "zh"
    assert normalize_language("zh_Hans") == "zh" and normalize_language("en-US") == "en"


def test_modality_must_be_a_query_modality() -> None:
    with pytest.raises(
        ValueError, match=r"satellite is the reference view.*drone, streetmap, panorama, ground"
    ):
        build_messages("satellite", "en")
    with pytest.raises(ValueError, match=r"unknown modality 'aerial'.*drone"):
        build_messages("aerial", "en")
    assert build_messages(Modality.DRONE, "en") == build_messages(" Drone ", "en")
