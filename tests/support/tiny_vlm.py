# ruff: noqa: RUF001  (Chinese text uses full-width punctuation on purpose)
"""A tiny Qwen2.5-VL with random weights, built offline: the real architecture and processor, test-sized.

Nothing is downloaded: the tokenizer is a byte-level BPE trained on the spot on a few English and Chinese
sentences, with Qwen's special tokens; the image processor is Qwen2-VL's with small pixel limits; the
chat template is Qwen2-VL's. Saved with `save_pretrained` (safetensors), the folder loads through the
same `AutoProcessor` / `AutoModelForImageTextToText` code a real checkpoint does. Its answers are
garbage (random weights), which is what the "unparseable answer" tests need.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Qwen2-VL's chat template (the one shipped with Qwen/Qwen2.5-VL-*-Instruct), written out here.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "Do the query photo and the satellite tile show the same place? Answer with a JSON object.",
    '{"match": true, "confidence": 0.85, "reasoning": "The road layout and the roofs agree."}',
    '{"match": false, "confidence": 0.2, "reasoning": "The river bends the other way."}',
    "road layout, building footprints, roof colours, water, vegetation, relative positions",
    "drone oblique photo, street map, street-level panorama, ground photo, north-up satellite tile",
    "similarity threshold rank margin retrieval model evidence heatmap features agree",
    "查询照片和卫星图像是否显示同一个地点？请只回答一个JSON对象。",
    "道路布局、建筑轮廓、屋顶颜色、水体、植被和相对位置都一致，所以是同一个地点。",
    "相似度 阈值 排名 差距 检索模型 证据 热力图 特征 匹配 不匹配 是 否",
    "0123456789 .,:;!?()[]{}\"'-_/%",
]


def _texts() -> list[str]:
    """The training text: a few sentences plus GLEAM-X's own prompts, so prompts take few tokens."""
    from gleam.explain import prompts

    texts = list(_CORPUS)
    for name in ("SYSTEM_EN", "SYSTEM_ZH"):
        texts.append(getattr(prompts, name))
    for name in ("USER_EN", "USER_ZH", "EVIDENCE_EN", "EVIDENCE_ZH", "QUERY_ONE_EN", "QUERY_ONE_ZH"):
        texts.append(getattr(prompts, name).template)
    for name in ("MODALITY_EN", "MODALITY_ZH", "EVIDENCE_ITEMS_EN", "EVIDENCE_ITEMS_ZH"):
        texts.extend(getattr(prompts, name).values())
    return texts


def train_tokenizer(vocab_size: int = 2000):
    """A byte-level BPE `PreTrainedTokenizerFast` with Qwen's special tokens (ids 0..6)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_texts() * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
        chat_template=CHAT_TEMPLATE,
    )


def build_tiny_qwen25vl(folder: Path, seed: int = 0) -> Path:
    """Build, save and return `folder`: config.json, model.safetensors, tokenizer and processor files."""
    import torch
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    folder = Path(folder)
    tokenizer = train_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    hidden, heads = 64, 4
    head_dim = hidden // heads
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": heads,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1000000.0,
                "mrope_section": [head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16],
            },
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "out_hidden_size": hidden,
            "fullatt_block_indexes": [1],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    pixels = {"min_pixels": 56 * 56, "max_pixels": 112 * 112}
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**pixels),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**pixels),
        chat_template=CHAT_TEMPLATE,
    )
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    return folder


def teach_tiny_vlm(
    folder: Path,
    out: Path,
    lessons: list[tuple[list[dict], list[Any], str]],
    max_steps: int = 300,
    lr: float = 1e-2,
) -> Path:
    """Fine-tune a tiny model until greedy decoding gives each lesson's answer exactly; save it to `out`.

    A lesson is (chat messages, RGB PIL images, answer text), prompted exactly as
    `MultimodalLLM.generate` does (chat template with the generation prompt, then the answer and
    `<|im_end|>`). Training stops once every answer token is the arg-max under teacher forcing with
    a loss margin, which is what greedy decoding reproduces. A GLEAM-X fine-tune in miniature.
    """
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
    batches = []
    for messages, images, answer in lessons:
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompt_length = processor(text=[prompt], images=images, return_tensors="pt")["input_ids"].shape[1]
        inputs = processor(text=[prompt + answer + "<|im_end|>"], images=images, return_tensors="pt")
        labels = inputs["input_ids"].clone()
        labels[:, :prompt_length] = -100
        batches.append((dict(inputs), labels))
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add contention on a busy 2-core machine
    try:
        _fit(model, optimizer, batches, max_steps)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _fit(model: Any, optimizer: Any, batches: list[tuple[dict, Any]], max_steps: int) -> None:
    total = float("nan")
    for _ in range(max_steps):
        learned, total = True, 0.0
        for inputs, labels in batches:
            output = model(**inputs, labels=labels)
            output.loss.backward()
            total += output.loss.item()
            predicted, target = output.logits[0, :-1].argmax(-1), labels[0, 1:]
            known = target != -100
            learned = learned and bool((predicted[known] == target[known]).all())
        if learned and total < 0.05 * len(batches):
            break
        optimizer.step()
        optimizer.zero_grad()
    else:
        raise RuntimeError(
            f"the tiny model did not learn its answers in {max_steps} steps (loss {total:.3f})"
        )
