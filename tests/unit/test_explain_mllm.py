"""GLEAM-X's MLLM path with a real (tiny, offline) Qwen2.5-VL: loading, generation, the Explainer's contract,
the registry round trip, and the refusals (model absent, pickle weights)."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from gleam.explain.evidence import Evidence
from gleam.explain.explainer import Explainer
from gleam.explain.mllm import (
    MLLMConfig,
    MLLMError,
    MLLMNotFoundError,
    MultimodalLLM,
    folder_fingerprint,
    model_files,
    register_mllm,
    resolve_dtype,
    resolve_model,
    resolve_source,
)
from gleam.explain.parse import parse_answer
from gleam.explain.prompts import UnsupportedLanguageError, build_messages
from tests.support.tiny_vlm import teach_tiny_vlm

EVIDENCE = Evidence(similarity=0.8, threshold=0.6, rank=1, margin=0.1)
ANSWER_EN = '{"match": true, "confidence": 0.9, "reasoning": "The road layout and the roofs agree."}'
ANSWER_ZH = '{"match": false, "confidence": 0.7, "reasoning": "河流的走向不同。"}'


def picture(seed: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def llm(tiny_vlm_folder: Path) -> MultimodalLLM:
    return MultimodalLLM.load(MLLMConfig(model=str(tiny_vlm_folder), max_new_tokens=24))


@pytest.fixture(scope="module")
def taught_folder(tiny_vlm_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model taught to answer two fixed questions with well-formed JSON (en and zh)."""
    images = [picture(1), picture(2)]
    evidence = EVIDENCE.scores()
    lessons = [
        (build_messages("drone", "en", evidence), images, ANSWER_EN),
        (build_messages("drone", "zh", evidence), images, ANSWER_ZH),
    ]
    return teach_tiny_vlm(tiny_vlm_folder, tmp_path_factory.mktemp("taught") / "model", lessons)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- loading and generating ------------------------------------------------------------------------------


def test_load_from_a_folder(llm: MultimodalLLM, tiny_vlm_folder: Path) -> None:
    info = llm.info
    assert info["source"] == "folder" and info["path"] == str(tiny_vlm_folder.resolve())
    assert info["model_type"] == "qwen2_5_vl" and info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["name"] is None and info["version"] is None
    assert llm.fingerprint == info["fingerprint"] == folder_fingerprint(tiny_vlm_folder)
    assert not llm.model.training


@pytest.mark.parametrize("language", ["en", "zh"])
def test_generate_decodes_only_new_tokens(llm: MultimodalLLM, language: str) -> None:
    generation = llm.generate([picture(1)], picture(2), "drone", language, EVIDENCE.scores())
    assert isinstance(generation.text, str) and "<|im_start|>" not in generation.text
    assert 1 <= generation.new_tokens <= 24 and generation.seconds > 0
    again = llm.generate([picture(1)], picture(2), "drone", language, EVIDENCE.scores())
    assert again.text == generation.text  # greedy decoding is deterministic


def test_prompt_renders_one_vision_block_per_image_and_keeps_chinese(llm: MultimodalLLM) -> None:
    messages = build_messages("panorama", "zh", query_count=2)
    prompt = llm.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt.count("<|vision_start|><|image_pad|><|vision_end|>") == 3
    assert "用中文书写" in prompt and prompt.endswith("<|im_start|>assistant\n")
    tokenizer = llm.processor.tokenizer
    assert tokenizer.decode(tokenizer(prompt)["input_ids"]) == prompt
    generation = llm.generate([picture(3), picture(4, (128, 64))], picture(5), "panorama", "zh")
    assert 1 <= generation.new_tokens <= 24


def test_large_images_are_downscaled_before_the_vision_tower(llm: MultimodalLLM) -> None:
    prepared = llm.prepare_image(picture(6, (1000, 500)))
    assert prepared.width * prepared.height <= llm.config.max_image_pixels
    assert prepared.width / prepared.height == pytest.approx(2.0, rel=0.02) and prepared.mode == "RGB"
    small = picture(7, (64, 64))
    assert llm.prepare_image(small).size == (64, 64)


# --- the Explainer's contract ----------------------------------------------------------------------------


def test_unparseable_model_text_is_flagged_never_replaced(llm: MultimodalLLM) -> None:
    explanation = Explainer(llm).explain(picture(1), picture(2), "drone", "en", EVIDENCE)  # one image
    said = llm.generate([picture(1)], picture(2), "drone", "en", EVIDENCE.scores()).text
    assert not parse_answer(said).parsed  # random weights say nothing parseable
    assert explanation.reasoning_source == "mllm" and explanation.parsed is False
    assert explanation.match is None and explanation.confidence is None and explanation.reasoning is None
    assert explanation.raw == said and explanation.error  # the model's own words, and why they were not read
    assert explanation.evidence == EVIDENCE.to_json()  # the evidence says "match": it is attached, not used
    assert explanation.model["fingerprint"] == llm.fingerprint and explanation.model["new_tokens"] >= 1
    assert explanation.to_json()["raw"] == said


def test_a_well_formed_model_answer_is_parsed(taught_folder: Path) -> None:
    taught = MultimodalLLM.load(MLLMConfig(model=str(taught_folder), max_new_tokens=64))
    explainer = Explainer(taught)
    english = explainer.explain([picture(1)], picture(2), "drone", "en", EVIDENCE)
    assert english.raw == ANSWER_EN
    assert english.parsed and english.reasoning_source == "mllm" and english.error is None
    assert (english.match, english.confidence) == (True, 0.9)
    assert english.reasoning == "The road layout and the roofs agree."
    chinese = explainer.explain([picture(1)], picture(2), "drone", "zh", EVIDENCE)
    assert chinese.raw == ANSWER_ZH and chinese.language == "zh"
    # the model's verdict is reported even where it disagrees with the evidence: nothing is overridden
    assert (chinese.match, chinese.confidence, chinese.reasoning) == (False, 0.7, "河流的走向不同。")


def test_without_a_model_the_answer_comes_from_the_evidence() -> None:
    explanation = Explainer(None).explain([picture(1)], picture(2), "streetmap", "zh-CN", EVIDENCE)
    assert explanation.reasoning_source == "evidence" and explanation.match is True
    assert explanation.language == "zh" and explanation.model is None and explanation.raw is None


def test_language_and_modality_are_checked_before_generating(llm: MultimodalLLM) -> None:
    with pytest.raises(UnsupportedLanguageError, match="'fr'"):
        Explainer(llm).explain([picture(1)], picture(2), "drone", "fr", EVIDENCE)
    with pytest.raises(ValueError, match="satellite"):
        Explainer(None).explain([picture(1)], picture(2), "satellite", "en", EVIDENCE)


# --- where models come from ------------------------------------------------------------------------------


@pytest.mark.integration  # a real MLflow registry (sqlite)
def test_registry_round_trip(tiny_vlm_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("GLEAM_HOME", str(tmp_path / "home"))
    source = tmp_path / "source"
    shutil.copytree(tiny_vlm_folder, source)
    (source / "training_args.bin").write_bytes(b"\x80\x04pickle")  # a fine-tune's pickle: never logged
    name = f"gleam-x-test-{uuid.uuid4().hex[:6]}"
    assert register_mllm(source, name=name, alias="champion") == (name, 1)
    assert register_mllm(source, name=name, alias="champion") == (name, 2)

    import mlflow

    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias(name, "champion")
    assert int(version.version) == 2 and version.tags["gleam.fingerprint"] == folder_fingerprint(source)
    logged = {Path(a.path).name for a in client.list_artifacts(version.run_id, "mllm")}
    assert logged == set(model_files(source)) and "training_args.bin" not in logged

    loaded = MultimodalLLM.load(MLLMConfig(model=f"models:/{name}@champion", max_new_tokens=4))
    cache = tmp_path / "home" / "cache" / "mllm"
    assert loaded.info["source"] == "registry" and (loaded.info["name"], loaded.info["version"]) == (name, 2)
    assert loaded.source.path == cache / f"{name}-v2" and loaded.fingerprint == folder_fingerprint(source)
    assert loaded.generate([picture(1)], picture(2), "drone", "en").new_tokens >= 1
    again = MultimodalLLM.load(MLLMConfig(model=f"models:/{name}/2"))  # reused, not downloaded again
    assert again.source.path == loaded.source.path
    assert sorted(p.name for p in cache.iterdir()) == [f"{name}-v2"]  # no half-written folder left

    (cache / f"{name}-v2" / "config.json").write_text("{}")  # a damaged local copy is refused
    with pytest.raises(MLLMError, match="corrupt"):
        MultimodalLLM.load(MLLMConfig(model=f"models:/{name}@champion"))
    with pytest.raises(MLLMNotFoundError, match="cannot resolve"):
        resolve_model(f"models:/{name}@nowhere")
    with pytest.raises(MLLMError, match="models:/<name>@<alias>"):
        resolve_model(f"models:/{name}")


def test_missing_repo_id_is_not_downloaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(
        MLLMNotFoundError, match=r"not in the local Hugging Face cache.*hf download"
    ) as caught:
        resolve_model("Qwen/Qwen2.5-VL-3B-Instruct")
    assert "models:/gleam-x@champion" in str(caught.value)
    with pytest.raises(MLLMNotFoundError):
        MultimodalLLM.load(MLLMConfig())  # the default model, absent from this cache
    with pytest.raises(MLLMNotFoundError, match="no model folder"):
        resolve_model(str(tmp_path / "absent"))


def test_repo_id_from_a_prepopulated_cache(
    tiny_vlm_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--gleam-test--tiny-vlm"
    shutil.copytree(tiny_vlm_folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    assert resolve_model("gleam-test/tiny-vlm") == repo / "snapshots" / commit


def test_pickle_weights_are_refused(tmp_path: Path, tiny_vlm_folder: Path) -> None:
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(tiny_vlm_folder / "config.json", folder / "config.json")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not loaded")
    with pytest.raises(MLLMError, match=r"only pickle weights \(pytorch_model.bin\): refused"):
        MultimodalLLM.load(MLLMConfig(model=str(folder)))
    with pytest.raises(MLLMError, match="pickle"):
        register_mllm(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MLLMError, match=r"config\.json is missing"):
        resolve_model(str(tmp_path / "empty"))


def test_config_is_validated() -> None:
    assert MLLMConfig().model == "Qwen/Qwen2.5-VL-3B-Instruct"
    for bad in ({"max_new_tokens": 0}, {"max_new_tokens": 5000}, {"dtype": "int8"}, {"temperature": -1}):
        with pytest.raises(ValidationError):
            MLLMConfig(**bad)
    with pytest.raises(ValidationError, match="extra"):
        MLLMConfig(modle="x")
    assert str(resolve_dtype("auto", "cpu")) == "torch.float32"
    assert str(resolve_dtype("bfloat16", "cpu")) == "torch.bfloat16"


@pytest.mark.integration  # a real MLflow registry (sqlite)
def test_gleam_mllm_register_command(
    tiny_vlm_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from gleam_cli.main import app

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    name = f"gleam-x-cli-{uuid.uuid4().hex[:6]}"
    result = CliRunner().invoke(
        app, ["mllm", "register", str(tiny_vlm_folder), "--name", name, "--alias", "staging"]
    )
    assert result.exit_code == 0, result.output
    assert f"models:/{name}@staging" in result.output
    import mlflow

    assert int(mlflow.MlflowClient().get_model_version_by_alias(name, "staging").version) == 1
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    refused = CliRunner().invoke(app, ["mllm", "register", str(empty), "--name", name])
    assert refused.exit_code == 3 and "config.json" in refused.output


# --- adapters (a GLEAM-X fine-tune on a recorded base) ---------------------------------------------------


def make_adapter(base: Path, out: Path, seed: int = 3) -> Path:
    """A LoRA adapter on `base` with non-zero weights (so applying it changes the model), saved as a
    fine-tune registers it: peft safetensors files, the processor, gleam-x.json naming the base."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from gleam.explain.adapters import write_manifest
    from gleam.explain.finetune.config import FinetuneConfig
    from gleam.explain.finetune.loop import lora_config

    model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32, local_files_only=True)
    config = FinetuneConfig(name="x", explanation_set="/s", steps=1, lora={"r": 4, "alpha": 8})
    peft_model = get_peft_model(model, lora_config(config))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    peft_model.save_pretrained(out)
    AutoProcessor.from_pretrained(base, local_files_only=True).save_pretrained(out)
    base_source = resolve_source(str(base))
    write_manifest(out, "adapter", base_source, folder_fingerprint(base), {"method": "lora"})
    return out


@pytest.fixture(scope="module")
def adapter_folder(tiny_vlm_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_adapter(tiny_vlm_folder, tmp_path_factory.mktemp("adapter") / "gleam-x-lora")


def test_an_adapter_loads_on_its_recorded_base_and_reports_both(
    adapter_folder: Path, tiny_vlm_folder: Path, llm: MultimodalLLM
) -> None:
    import torch

    loaded = MultimodalLLM.load(MLLMConfig(model=str(adapter_folder), max_new_tokens=8))
    info = loaded.info
    assert info["kind"] == "adapter" and info["fingerprint"] == folder_fingerprint(adapter_folder)
    assert info["base"]["reference"] == str(tiny_vlm_folder.resolve()) and info["base"]["source"] == "folder"
    assert info["base"]["fingerprint"] == folder_fingerprint(tiny_vlm_folder) == llm.fingerprint
    assert llm.info["kind"] == "model" and llm.info["base"] is None
    # merged into the base's own module tree: no peft wrapper left at inference
    assert type(loaded.model) is type(llm.model) and not any(
        "lora" in n for n, _ in loaded.model.named_parameters()
    )
    name = "model.language_model.layers.0.self_attn.q_proj.weight"
    merged, base = loaded.model.state_dict()[name], llm.model.state_dict()[name]
    assert not torch.allclose(merged, base)  # the adapter changed the language model ...
    vision = "model.visual.blocks.0.mlp.gate_proj.weight"
    assert torch.equal(
        loaded.model.state_dict()[vision], llm.model.state_dict()[vision]
    )  # ... not the vision
    assert loaded.generate([picture(1)], picture(2), "drone", "en", EVIDENCE.scores()).new_tokens >= 1


def test_an_adapter_on_another_base_is_refused_naming_both_fingerprints(
    adapter_folder: Path, tiny_vlm_folder: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other-base"
    shutil.copytree(tiny_vlm_folder, other)
    (other / "generation_config.json").write_text('{"max_new_tokens": 3}')  # one file differs
    expected, found = folder_fingerprint(tiny_vlm_folder), folder_fingerprint(other)
    with pytest.raises(MLLMError, match=rf"fingerprint {expected}, but .* has fingerprint {found}"):
        MultimodalLLM.load(MLLMConfig(model=str(adapter_folder), base=str(other)))
    same = tmp_path / "same-base"  # the same files elsewhere: accepted, and reported where they were found
    shutil.copytree(tiny_vlm_folder, same)
    loaded = MultimodalLLM.load(MLLMConfig(model=str(adapter_folder), base=str(same)))
    assert loaded.base is not None and loaded.base.source.path == same.resolve()
    with pytest.raises(MLLMNotFoundError, match=r"mllm\.base"):
        MultimodalLLM.load(MLLMConfig(model=str(adapter_folder), base=str(tmp_path / "absent")))


def test_adapter_folders_are_checked_like_model_folders(adapter_folder: Path, tmp_path: Path) -> None:
    pickled = tmp_path / "pickled"
    shutil.copytree(adapter_folder, pickled)
    (pickled / "adapter_model.safetensors").unlink()
    (pickled / "adapter_model.bin").write_bytes(b"\x80\x04not loaded")
    with pytest.raises(MLLMError, match=r"only pickle adapter weights \(adapter_model.bin\): refused"):
        resolve_model(str(pickled))
    nameless = tmp_path / "nameless"
    shutil.copytree(adapter_folder, nameless)
    (nameless / "gleam-x.json").write_text('{"kind": "adapter", "base": {"reference": "x"}}')
    with pytest.raises(MLLMError, match="does not name its base"):
        resolve_model(str(nameless))


def test_a_merged_adapter_is_a_plain_model_with_the_same_answers(
    adapter_folder: Path, tmp_path: Path
) -> None:
    from gleam.explain.adapters import merge_adapter

    merged_folder = merge_adapter(adapter_folder, tmp_path / "merged")
    assert not (merged_folder / "adapter_config.json").exists()
    merged = MultimodalLLM.load(MLLMConfig(model=str(merged_folder), max_new_tokens=12))
    adapted = MultimodalLLM.load(MLLMConfig(model=str(adapter_folder), max_new_tokens=12))
    assert merged.info["kind"] == "model" and merged.source.manifest["kind"] == "merged"
    assert merged.source.manifest["base"] == adapted.source.manifest["base"]  # provenance kept
    args = ([picture(1)], picture(2), "drone", "zh", EVIDENCE.scores())
    assert merged.generate(*args).text == adapted.generate(*args).text


@pytest.mark.integration  # a real MLflow registry (sqlite)
def test_adapter_registry_round_trip(
    adapter_folder: Path, tiny_vlm_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gleam import registry
    from gleam.explain.adapters import merge_adapter, register_adapter, register_merged

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("GLEAM_HOME", str(tmp_path / "home"))
    name = f"gleam-x-test-{uuid.uuid4().hex[:6]}"
    client = registry.client()  # on the tracking store just set
    run_id = client.create_run(client.create_experiment(name)).info.run_id
    version, fingerprint = register_adapter(adapter_folder, run_id, name, alias="challenger")
    registered = client.get_model_version_by_alias(name, "challenger")
    assert int(registered.version) == version == 1 and fingerprint == folder_fingerprint(adapter_folder)
    assert registered.tags["gleam.kind"] == "adapter" and registered.tags["gleam.fingerprint"] == fingerprint
    assert registered.tags["gleam.base_fingerprint"] == folder_fingerprint(tiny_vlm_folder)
    loaded = MultimodalLLM.load(MLLMConfig(model=f"models:/{name}@challenger", max_new_tokens=4))
    info = loaded.info
    assert (info["name"], info["version"], info["kind"]) == (name, 1, "adapter")
    assert info["fingerprint"] == fingerprint
    assert info["base"]["fingerprint"] == folder_fingerprint(tiny_vlm_folder)

    merged = merge_adapter(adapter_folder, tmp_path / "merged")  # registry.save: merged
    version, fingerprint = register_merged(merged, run_id, name, alias="merged")
    registered = client.get_model_version_by_alias(name, "merged")
    assert int(registered.version) == version == 2 and registered.tags["gleam.kind"] == "mllm"
    assert registered.tags["gleam.base_fingerprint"] == folder_fingerprint(tiny_vlm_folder)
    assert registered.tags["gleam.fingerprint"] == fingerprint == folder_fingerprint(merged)
    plain = MultimodalLLM.load(MLLMConfig(model=f"models:/{name}@merged", max_new_tokens=4))
    assert plain.info["kind"] == "model" and plain.info["version"] == 2
