"""The teacher's side of the explanation set: prompts that state the label, answers checked into accepted
or a reject reason, the cache key and the store cache, and the job's config checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from gleam.config import ConfigError, load_config
from gleam.explain.dataset.answers import check_answer
from gleam.explain.dataset.cache import AnswerCache, cache_key
from gleam.explain.dataset.config import ExplainDataConfig
from gleam.explain.dataset.job import set_hash, teacher_environment
from gleam.explain.dataset.teacher_prompts import teacher_prompt
from gleam.explain.dataset.teachers import jpeg_data_url
from gleam.explain.explanation_set import ExplainRejectReason
from gleam.explain.prompts import MODALITY_EN, MODALITY_ZH

REPO = Path(__file__).resolve().parents[2]
BASE = [
    "name=s",
    "output=/tmp/explain",
    "corpus=/tmp/corpus",
    "index.name=idx",
    "queries_per_modality=4",
    "teacher.kind=openai",
    "teacher.base_url=http://127.0.0.1:9/v1",
    "teacher.model=m",
]


# --- prompts ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("match", [True, False])
def test_the_prompt_states_the_label_the_modality_and_the_language(match: bool) -> None:
    english = teacher_prompt("drone", "en", match)
    label = "true" if match else "false"
    assert f'{{"match": {label}, "reasoning":' in english.user and "written in English" in english.user
    assert MODALITY_EN["drone"] in english.user
    assert ("SAME place" in english.user) is match and ("DIFFERENT places" in english.user) is not match
    chinese = teacher_prompt("panorama", "zh-CN", match)
    assert (
        chinese.language == "zh" and "用中文书写" in chinese.user and MODALITY_ZH["panorama"] in chinese.user
    )
    assert f'{{"match": {label},' in chinese.user
    messages = english.chat_messages()
    assert [p["type"] for p in messages[1]["content"]] == ["image", "image", "text"]
    with pytest.raises(ValueError, match="satellite"):
        teacher_prompt("satellite", "en", match)


# --- answers ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "label", "language", "reason"),
    [
        ('{"match": true, "reasoning": "The roads agree."}', True, "en", None),
        ('```json\n{"match": "否", "reasoning": "河流方向不同。"}\n```', False, "zh", None),
        ("t3 qd ## ,, roofs", True, "en", ExplainRejectReason.UNPARSEABLE),
        ("", True, "en", ExplainRejectReason.UNPARSEABLE),
        ('{"match": false, "reasoning": "Different."}', True, "en", ExplainRejectReason.CONTRADICTS_LABEL),
        ('{"match": true, "reasoning": "   "}', True, "en", ExplainRejectReason.EMPTY_REASONING),
        ('{"match": true}', True, "en", ExplainRejectReason.EMPTY_REASONING),
        ('{"match": true, "reasoning": "The roads agree."}', True, "zh", ExplainRejectReason.WRONG_LANGUAGE),
        ('{"match": true, "reasoning": "道路布局一致。"}', True, "en", ExplainRejectReason.WRONG_LANGUAGE),
    ],
)
def test_answers_are_accepted_or_rejected_with_a_reason(
    text: str, label: bool, language: str, reason: ExplainRejectReason | None
) -> None:
    checked = check_answer(text, label, language)
    assert checked.reason is reason and checked.accepted is (reason is None)
    assert (checked.reasoning is not None) is (reason is None)
    if reason is not None:
        assert checked.detail  # says why, for the rejects file


# --- cache -----------------------------------------------------------------------------------------------


def test_the_cache_key_covers_pair_prompt_language_and_teacher() -> None:
    prompt = teacher_prompt("drone", "en", True).text
    key = cache_key("p1", prompt, "openai:gpt-4o")
    assert key == cache_key("p1", prompt, "openai:gpt-4o") and len(key) == 64
    others = {
        cache_key("p2", prompt, "openai:gpt-4o"),
        cache_key("p1", teacher_prompt("drone", "zh", True).text, "openai:gpt-4o"),
        cache_key("p1", teacher_prompt("drone", "en", False).text, "openai:gpt-4o"),
        cache_key("p1", prompt, "local:Qwen/Qwen2.5-VL-7B-Instruct"),
    }
    assert key not in others and len(others) == 4


def test_the_cache_keeps_answers_in_the_store_and_ignores_damaged_ones(tmp_path: Path) -> None:
    cache = AnswerCache(str(tmp_path / "set"))
    key = cache_key("p1", "prompt", "openai:m")
    assert cache.get(key) is None
    cache.put(key, "p1", "zh", "openai:m", "垃圾 garbage")  # garbage is cached too: it was paid for
    assert cache.get(key) == "垃圾 garbage"
    assert Path(cache.uri(key)).parent.name == key[:2]
    Path(cache.uri(key)).write_text("{not json")
    assert cache.get(key) is None  # damaged: asked again


def test_images_travel_as_downscaled_jpeg_data_urls() -> None:
    import base64
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((300, 600, 3), dtype=np.uint8)).save(buffer, format="PNG")
    url = jpeg_data_url(buffer.getvalue(), 100 * 100)
    assert url.startswith("data:image/jpeg;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert image.format == "JPEG" and image.width * image.height <= 100 * 100 and image.width > image.height


# --- config ----------------------------------------------------------------------------------------------


def test_the_example_config_loads() -> None:
    config = load_config(ExplainDataConfig, REPO / "jobs" / "configs" / "explain_data.yaml")
    assert config.teacher.kind == "openai" and config.teacher.api_key_env == "OPENAI_API_KEY"
    assert config.languages == ["en", "zh"] and config.set_uri.endswith("/explain/world-demo")


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("teacher.kind=anthropic", "teacher"),
        ("teacher.base_url=ftp://x", "teacher.openai.base_url"),
        ("teacher.api_key_env=not a name", "teacher.openai.api_key_env"),
        ("teacher.temprature=0.1", "teacher.openai.temprature"),
        ("languages=[en, fr]", "languages"),
        ("languages=[en, EN]", "languages"),
        ("modalities=[drone, satellite]", "modalities"),
        ("queries_per_modality={train: 3}", "queries_per_modality"),
        ("queries_per_modality=0", "queries_per_modality"),
        ("negatives_per_query=-1", "negatives_per_query"),
        ("index.nmae=x", "index.nmae"),
    ],
)
def test_config_errors_name_the_field(override: str, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(ExplainDataConfig, None, [*BASE, override])
    assert f"  {field}" in str(caught.value)


def test_runtime_settings_do_not_change_what_the_set_is() -> None:
    base = load_config(ExplainDataConfig, None, BASE)
    faster = load_config(
        ExplainDataConfig,
        None,
        [
            *BASE,
            "teacher.concurrency=64",
            "teacher.timeout_s=5",
            "teacher.base_url=http://other:1/v1",
            "batch_size=4",
        ],
    )
    assert set_hash(base, "v1") == set_hash(faster, "v1") != set_hash(base, "v2")
    other_teacher = load_config(ExplainDataConfig, None, [*BASE, "teacher.model=gpt-4o"])
    fewer = load_config(ExplainDataConfig, None, [*BASE, "queries_per_modality=3"])
    assert len({set_hash(base, "v1"), set_hash(other_teacher, "v1"), set_hash(fewer, "v1")}) == 3


def test_the_key_is_read_from_the_named_variable_and_must_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(ExplainDataConfig, None, [*BASE, "teacher.api_key_env=GLEAM_TEST_TEACHER_KEY"])
    monkeypatch.delenv("GLEAM_TEST_TEACHER_KEY", raising=False)
    with pytest.raises(ConfigError, match="GLEAM_TEST_TEACHER_KEY is not set"):
        teacher_environment(config.teacher)
    monkeypatch.setenv("GLEAM_TEST_TEACHER_KEY", "sk-test")
    assert teacher_environment(config.teacher) == {"GLEAM_TEST_TEACHER_KEY": "sk-test"}
    no_key = load_config(ExplainDataConfig, None, [*BASE, "teacher.api_key_env=null"])
    assert teacher_environment(no_key.teacher) == {}


# --- the endpoint teacher against a real HTTP server -----------------------------------------------------


@pytest.fixture(scope="module")
def endpoint():
    from tests.support.openai_server import TeacherServer

    server = TeacherServer("teacher-m", answer="label", api_key="sk-unit", timeout_sleep_s=1.0).start()
    yield server
    server.stop()


def endpoint_teacher(server, monkeypatch: pytest.MonkeyPatch, **fields: object):
    from gleam.explain.dataset.config import OpenAITeacher
    from gleam.explain.dataset.teachers import ChatEndpointTeacher

    monkeypatch.setenv("GLEAM_UNIT_TEACHER_KEY", str(fields.pop("key", "sk-unit")))
    settings = {
        "kind": "openai",
        "base_url": server.url,
        "model": "teacher-m",
        "api_key_env": "GLEAM_UNIT_TEACHER_KEY",
    }
    settings |= {"timeout_s": 0.4, "max_retries": 2, "backoff_s": 0.01, "max_image_pixels": 32 * 32} | fields
    return ChatEndpointTeacher(OpenAITeacher.model_validate(settings))


def picture_bytes(seed: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(
        buffer, "PNG"
    )
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fault", "times", "answered", "requests"),
    [
        ("429", 2, True, 3),
        ("500", 1, True, 2),
        ("429", 99, False, 3),
        ("500", 99, False, 3),
        ("timeout", 99, False, 3),
    ],
)
def test_transient_failures_are_retried_then_given_up(
    endpoint, monkeypatch: pytest.MonkeyPatch, fault: str, times: int, answered: bool, requests: int
) -> None:
    from gleam.explain.dataset.teachers import TeacherUnavailable
    from tests.support.openai_server import Fault, image_key

    teacher = endpoint_teacher(endpoint, monkeypatch)
    query = picture_bytes(hash((fault, times)) % 1000)
    key = image_key(jpeg_data_url(query, 32 * 32))
    endpoint.faults = {key: Fault(fault, times=times)}
    prompt = teacher_prompt("ground", "zh", False)
    if answered:
        text = teacher.ask(prompt, [query, picture_bytes(1)])
        assert check_answer(text, False, "zh").accepted
    else:
        with pytest.raises(TeacherUnavailable, match="no answer after 3 attempts"):
            teacher.ask(prompt, [query, picture_bytes(1)])
    assert endpoint.by_key[key] == teacher.attempts == requests


def test_a_wrong_key_or_model_stops_the_job(endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    from gleam.explain.dataset.teachers import TeacherRefused

    prompt = teacher_prompt("drone", "en", True)
    with pytest.raises(TeacherRefused, match=r"HTTP 401.*GLEAM_UNIT_TEACHER_KEY") as caught:
        endpoint_teacher(endpoint, monkeypatch, key="sk-wrong").ask(
            prompt, [picture_bytes(2), picture_bytes(3)]
        )
    assert "sk-wrong" not in str(caught.value)
    with pytest.raises(TeacherRefused, match="HTTP 404"):
        endpoint_teacher(endpoint, monkeypatch, model="gpt-unknown").ask(
            prompt, [picture_bytes(2), picture_bytes(3)]
        )
