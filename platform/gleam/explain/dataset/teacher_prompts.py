# ruff: noqa: RUF001  (Chinese text uses full-width punctuation on purpose)
"""What the teacher is asked: the pair's images, its modality and the ground truth, for a rationale.

The teacher is not asked to decide: it is TOLD whether the query and the tile show the same place (the
label comes from the corpus, and for non-matches the tile is a hard negative the encoder ranked high)
and asked to explain, with concrete visual cues, why that is so, as ONLY a JSON object
`{"match": <the label>, "reasoning": "..."}` with the reasoning in the requested language. An answer
that contradicts the label it was given is a reject (`gleam.explain.dataset.answers`), never data.

The modality descriptions are the student's (`gleam.explain.prompts`), so teacher and fine-tuned model
read the same words for the same view. Templates are module constants (`string.Template`); the rendered
text (system + user, in one language) is part of the cache key, so editing a template asks again.
"""

from __future__ import annotations

from dataclasses import dataclass
from string import Template

from gleam.explain.prompts import (
    MODALITY_EN,
    MODALITY_ZH,
    QUERY_ONE_EN,
    QUERY_ONE_ZH,
    normalize_language,
    query_modality,
)

TEACHER_SYSTEM_EN = (
    "You are an expert in cross-view geo-localization writing training data for GLEAM-X, a model that "
    "compares a query view of a place with a north-up satellite image and explains whether they show the "
    "same place. You are given the correct answer; your job is to explain it with concrete visual evidence "
    "that can be checked in the images."
)

TEACHER_USER_EN = Template(
    """$query_intro The last image is a north-up satellite tile (north at the top, east to the right).

Ground truth: $verdict

Explain why, citing concrete visual cues that can be seen in both images: road layout (junctions, \
curves, widths), building footprints, shapes and roof colours, water, vegetation and open ground, and \
their relative positions, allowing for the change of viewpoint (the query may be oblique, rotated, or \
seen from the ground). Do not question the ground truth and do not mention that you were told it.

Answer with ONLY a JSON object, with no text before or after it:
{"match": $label, "reasoning": "two to four sentences, written in English"}"""
)

VERDICT_EN = {
    True: "the query and the satellite tile show the SAME place.",
    False: "the query and the satellite tile show DIFFERENT places. The tile is a look-alike that a "
    "retrieval model ranked among the best candidates for this query.",
}

TEACHER_SYSTEM_ZH = (
    "你是一名跨视角地理定位专家，正在为 GLEAM-X 编写训练数据。GLEAM-X 将某个地点的查询视图与"
    "正北朝上的卫星图像进行比较，并解释它们是否为同一地点。你会得到正确答案；你的任务是用可以在图像中"
    "核实的具体视觉证据来解释它。"
)

TEACHER_USER_ZH = Template(
    """$query_intro最后一张图像是正北朝上的卫星图块（上为北，右为东）。

正确答案：$verdict

请解释原因，引用在两张图像中都能看到的具体视觉线索：道路布局（路口、弯道、宽度）、建筑轮廓、形状和屋顶颜色、\
水体、植被和空地，以及这些要素之间的相对位置，并考虑视角差异（查询图像可能是倾斜的、旋转的或从地面拍摄的）。\
不要质疑正确答案，也不要提及答案是别人告诉你的。

只回答一个 JSON 对象，前后不要有任何其他文字：
{"match": $label, "reasoning": "两到四句话，用中文书写"}"""
)

VERDICT_ZH = {
    True: "查询图像和卫星图块显示的是同一个地点。",
    False: "查询图像和卫星图块显示的是不同的地点。该图块是一个相似的地点，"
    "检索模型将它排在这个查询的最佳候选之中。",
}

_TEMPLATES = {
    "en": (TEACHER_SYSTEM_EN, TEACHER_USER_EN, VERDICT_EN, QUERY_ONE_EN, MODALITY_EN),
    "zh": (TEACHER_SYSTEM_ZH, TEACHER_USER_ZH, VERDICT_ZH, QUERY_ONE_ZH, MODALITY_ZH),
}


@dataclass(frozen=True)
class TeacherPrompt:
    """One request's words; the images (query first, tile last) travel beside it."""

    language: str
    system: str
    user: str

    @property
    def text(self) -> str:
        """The rendered prompt as one string: what the cache key covers."""
        return f"[{self.language}]\n{self.system}\n\n{self.user}"

    def chat_messages(self) -> list[dict]:
        """transformers' multimodal chat format: system, then the user's two images and text."""
        return [
            {"role": "system", "content": [{"type": "text", "text": self.system}]},
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": self.user}],
            },
        ]


def teacher_prompt(modality: str, language: str, match: bool) -> TeacherPrompt:
    """The prompt for one pair in one language; the label is stated as JSON (true/false)."""
    lang = normalize_language(language)
    system, user, verdicts, query_one, modalities = _TEMPLATES[lang]
    intro = query_one.substitute(description=modalities[query_modality(modality).value])
    text = user.substitute(
        query_intro=intro, verdict=verdicts[bool(match)], label="true" if match else "false"
    )
    return TeacherPrompt(lang, system, text)
