"""Fine-tuning samples on the tiny Qwen2.5-VL processor: the serving prompt, the JSON answer, the loss mask
(exact, token by token), padding, and optimiser state without pickle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gleam.explain.finetune.config import FinetuneConfig
from gleam.explain.finetune.loop import build_optimizer, load_processor
from gleam.explain.finetune.samples import (
    IGNORE,
    answer_text,
    chat,
    collate,
    encode,
    margins,
    sample_rows,
    threshold_for,
)
from gleam.explain.finetune.state import load_trainer_state, save_trainer_state
from gleam.explain.parse import parse_answer
from gleam.explain.prompts import build_messages
from tests.support.explanation_sets import REASONS

CONFIG = FinetuneConfig(name="x", explanation_set="/s", steps=4, min_pixels=3136, max_pixels=4096)
CALIBRATION = {
    "threshold": 0.5,
    "by_modality": {"drone": {"threshold": 0.7}, "ground": {"threshold": 0.9, "fallback": "pooled"}},
}


def picture(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8))


def row(query: str, tile: str, rank: int, similarity: float, match: bool, modality: str = "drone") -> dict:
    en, zh = REASONS[match]
    return {
        "pair_id": f"{query}-{tile}",
        "query_id": query,
        "tile_id": tile,
        "modality": modality,
        "match": match,
        "rank": rank,
        "similarity": similarity,
        "reasoning_en": en,
        "reasoning_zh": zh,
    }


@pytest.fixture(scope="module")
def processor(tiny_vlm_folder: Path):
    return load_processor(tiny_vlm_folder, CONFIG)


def test_each_row_gives_one_sample_per_language_with_the_label_and_that_languages_rationale() -> None:
    rows = [row("q1", "t1", 1, 0.8, True), row("q1", "t2", 2, 0.6, False), row("q2", "t9", 1, 0.4, False)]
    rows[2]["reasoning_zh"] = "  "  # no Chinese rationale: counted, never filled in
    samples, skipped = sample_rows(rows, ["en", "zh"], CALIBRATION)
    assert [s["sample_id"] for s in samples] == ["q1-t1:en", "q1-t1:zh", "q1-t2:en", "q1-t2:zh", "q2-t9:en"]
    assert skipped == {"en": 0, "zh": 1}
    for sample in samples:
        source = next(r for r in rows if r["pair_id"] == sample["pair_id"])
        parsed = parse_answer(sample["answer"])  # what serving will read back from the model
        assert parsed.parsed and parsed.match is source["match"] and parsed.confidence is None
        assert parsed.reasoning == source[f"reasoning_{sample['language']}"]
    assert (
        samples[1]["answer"] == '{"match": true, "reasoning": "道路布局和屋顶颜色一致。"}'
    )  # not \u-escaped
    evidence = [json.loads(s["evidence"]) for s in samples]
    assert evidence[0] == {"similarity": 0.8, "threshold": 0.7, "rank": 1, "margin": pytest.approx(0.2)}
    assert evidence[2]["margin"] == pytest.approx(-0.2) and evidence[2]["rank"] == 2
    assert evidence[4]["margin"] is None  # q2's rank-2 candidate is not in the set: unknown, not guessed
    plain, _ = sample_rows(rows, ["zh"], CALIBRATION, share_evidence=False)
    assert [s["evidence"] for s in plain] == [None, None] and all(s["language"] == "zh" for s in plain)


def test_the_threshold_is_the_one_the_served_index_answers_the_modality_with() -> None:
    assert threshold_for(CALIBRATION, "drone") == 0.7  # its own calibration
    assert threshold_for(CALIBRATION, "ground") == 0.5  # too few to fit: the pooled one
    assert threshold_for(CALIBRATION, "panorama") == 0.5  # none of its own
    assert threshold_for(None, "drone") is None and threshold_for({}, "drone") is None


def test_margins_follow_serving_best_other_candidate() -> None:
    rows = [row("q", "a", 1, 0.9, False), row("q", "b", 2, 0.7, True), row("q", "c", 5, 0.2, False)]
    assert margins(rows) == {
        "q-a": pytest.approx(0.2),
        "q-b": pytest.approx(-0.2),
        "q-c": pytest.approx(-0.7),
    }
    assert margins([row("q", "b", 2, 0.7, True)]) == {"q-b": None}


@pytest.mark.parametrize(("language", "match"), [("en", True), ("zh", False)])
def test_the_loss_mask_keeps_exactly_the_answer_and_the_closing_end_of_turn(
    processor, language, match
) -> None:
    evidence = {"similarity": 0.8, "threshold": 0.7, "rank": 1, "margin": 0.2}
    answer = answer_text(match, REASONS[match][0 if language == "en" else 1])
    images = [picture(1), picture(2)]
    encoded = encode(processor, chat("drone", language, evidence, answer), images)
    ids, labels = encoded["input_ids"][0], encoded["labels"][0]
    assert labels.shape == ids.shape and encoded["labels"].shape == encoded["input_ids"].shape

    # the prompt is token for token what the served Explainer sends (MultimodalLLM.generate)
    served = processor.apply_chat_template(
        build_messages("drone", language, evidence), add_generation_prompt=True, tokenize=False
    )
    prompt_ids = processor(text=[served], images=images, return_tensors="pt")["input_ids"][0]
    start = len(prompt_ids)
    assert ids[:start].tolist() == prompt_ids.tolist()

    tokenizer = processor.tokenizer
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    kept = (labels != IGNORE).nonzero().flatten().tolist()
    assert kept == list(range(start, start + len(answer_ids) + 1))  # the answer, then <|im_end|>
    assert labels[kept].tolist() == [*answer_ids, end] and ids[kept].tolist() == [*answer_ids, end]
    assert (labels[:start] == IGNORE).all() and (labels[kept[-1] + 1 :] == IGNORE).all()
    assert len(ids) == kept[-1] + 2  # the template's newline after <|im_end|> is not taught
    assert tokenizer.decode(ids[kept]) == answer + "<|im_end|>"


def test_collate_pads_per_token_tensors_and_concatenates_images(processor) -> None:
    long = encode(processor, chat("drone", "en", None, answer_text(True, "x")), [picture(1), picture(2)])
    short = encode(
        processor, chat("streetmap", "zh", None, answer_text(False, "否")), [picture(3), picture(4)]
    )
    pad = processor.tokenizer.pad_token_id
    batch = collate([long, short], pad)
    n_long, n_short = long["input_ids"].shape[1], short["input_ids"].shape[1]
    assert batch["input_ids"].shape == (2, max(n_long, n_short)) and n_long != n_short
    i = 1 if n_short < n_long else 0  # the shorter one is right-padded
    n = min(n_long, n_short)
    assert (batch["input_ids"][i, n:] == pad).all() and (batch["labels"][i, n:] == IGNORE).all()
    assert (batch["attention_mask"][i, n:] == 0).all() and (batch["attention_mask"][i, :n] == 1).all()
    assert batch["pixel_values"].shape[0] == long["pixel_values"].shape[0] + short["pixel_values"].shape[0]
    assert batch["image_grid_thw"].shape == (4, 3)
    assert (batch["labels"] != IGNORE).sum() == (long["labels"] != IGNORE).sum() + (
        short["labels"] != IGNORE
    ).sum()


def test_processor_bounds_come_from_the_config(processor) -> None:
    encoded = processor(
        text=["<|vision_start|><|image_pad|><|vision_end|>"], images=[picture(1).resize((512, 512))]
    )
    grid = encoded["image_grid_thw"][0].tolist()
    assert grid[1] * grid[2] * 14 * 14 <= CONFIG.max_pixels  # a 512 x 512 image is cut down to the bound


def test_optimiser_and_scheduler_state_round_trip_without_pickle(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    optimizer, scheduler = build_optimizer(model, CONFIG, total_steps=10)
    for _ in range(3):
        model(torch.randn(2, 4)).sum().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    save_trainer_state(tmp_path, "trainer", optimizer, scheduler, step=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trainer.json", "trainer.safetensors"]
    fresh, fresh_scheduler = build_optimizer(model, CONFIG, total_steps=10)
    assert load_trainer_state(tmp_path, "trainer", fresh, fresh_scheduler) == 3
    assert fresh_scheduler.get_last_lr() == scheduler.get_last_lr()
    restored, original = fresh.state_dict(), optimizer.state_dict()
    assert restored["param_groups"] == original["param_groups"]
    for index, values in original["state"].items():
        for key, value in values.items():
            assert torch.equal(restored["state"][index][key], value)
    # the next step is the same from either
    model(torch.ones(1, 4)).sum().backward()
    fresh_scheduler.step()
    scheduler.step()
    assert fresh_scheduler.get_last_lr() == scheduler.get_last_lr()
