"""Explanation-set rows -> chat samples, tokenised with the loss on the answer only, and pad-collated.

Train = serve: a sample's prompt is exactly what the serving `Explainer` sends for the same pair
(`gleam.explain.prompts.build_messages`, the query image then the tile, in the sample's language) and,
because serving quotes the retrieval model's evidence by default (`Explainer(share_evidence=True)`),
the prompt quotes the row's own evidence too: its similarity and rank, the threshold of the index's
calibration the set's manifest recorded (the one the served index answers that modality with), and
the margin to the best other candidate when the set holds the query's top candidates. The answer is
`{"match": <label>, "reasoning": <that language's rationale>}`: no confidence, because the set has
none to teach (a model trained on it answers `confidence: null`; nothing is invented).

Labels are -100 everywhere except the answer's tokens and the end-of-turn token that closes it, so
the loss teaches what to say and when to stop, never the prompt.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gleam.explain.explanation_set import LANGUAGE_COLUMNS
from gleam.explain.prompts import build_messages

IGNORE = -100
END_OF_TURN = "<|im_end|>"  # Qwen's chat templates close every turn with it
POOLED = "pooled"


def answer_text(match: bool, reasoning: str) -> str:
    """The assistant's answer: JSON the serving parser reads (keys English, reasoning in the language)."""
    return json.dumps({"match": bool(match), "reasoning": reasoning.strip()}, ensure_ascii=False)


def threshold_for(calibration: Mapping[str, Any] | None, modality: str) -> float | None:
    """The threshold the served index answers `modality` with: its own calibration, unless it has none or
    was too small to fit (`fallback`), else the pooled one (gleam.index.calibrate.calibration_for)."""
    if not calibration:
        return None
    own = (calibration.get("by_modality") or {}).get(modality)
    chosen = own if own and not own.get("fallback") else calibration
    value = chosen.get("threshold")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def margins(rows: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """pair_id -> similarity minus the best OTHER candidate of the same query, as serving computes it;
    None where the set does not hold the candidates that decide it (rank 1, and rank 2 for rank 1)."""
    by_query: dict[str, dict[int, float]] = {}
    for row in rows:
        by_query.setdefault(row["query_id"], {})[int(row["rank"])] = float(row["similarity"])
    out: dict[str, float | None] = {}
    for row in rows:
        ranks = by_query[row["query_id"]]
        best_other = ranks.get(2) if int(row["rank"]) == 1 else ranks.get(1)
        out[row["pair_id"]] = None if best_other is None else float(row["similarity"]) - best_other
    return out


def sample_rows(
    rows: Sequence[Mapping[str, Any]],
    languages: Iterable[str],
    calibration: Mapping[str, Any] | None,
    share_evidence: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """One sample per (row, language) with a rationale in that language; and per-language counts of rows
    skipped for lack of one (counted, never filled in)."""
    wanted = list(languages)
    margin = margins(rows) if share_evidence else {}
    samples, skipped = [], dict.fromkeys(wanted, 0)
    for row in rows:
        evidence = None
        if share_evidence:
            evidence = {
                "similarity": float(row["similarity"]),
                "threshold": threshold_for(calibration, row["modality"]),
                "rank": int(row["rank"]),
                "margin": margin.get(row["pair_id"]),
            }
        for language in wanted:
            reasoning = row.get(LANGUAGE_COLUMNS[language])
            if not isinstance(reasoning, str) or not reasoning.strip():
                skipped[language] += 1
                continue
            samples.append(
                {
                    "sample_id": f"{row['pair_id']}:{language}",
                    "pair_id": row["pair_id"],
                    "query_id": row["query_id"],
                    "tile_id": row["tile_id"],
                    "modality": row["modality"],
                    "language": language,
                    "answer": answer_text(row["match"], reasoning),
                    "evidence": json.dumps(evidence) if evidence is not None else None,
                }
            )
    return samples, skipped


def chat(modality: str, language: str, evidence: Mapping[str, Any] | None, answer: str) -> list[dict]:
    """The serving prompt (one query image, the tile) followed by the assistant's answer."""
    messages = build_messages(modality, language, evidence, query_count=1)
    return [*messages, {"role": "assistant", "content": [{"type": "text", "text": answer}]}]


def encode(processor: Any, messages: list[dict], images: Sequence[Any]) -> dict[str, Any]:
    """Tokenise a conversation whose last turn is the assistant's, with its images; `labels` keeps the
    answer's tokens and the end-of-turn token after it, and is -100 everywhere else.

    The answer's tokens are found from the end: the text after the generation prompt (answer, end of
    turn, whatever the template appends) is tokenised alone and must be exactly the tail of the full
    tokenisation, so a tokeniser that merged across the boundary is an error, not a silently shifted mask.
    """
    prompt = processor.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
    full = processor.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        raise ValueError("the chat template renders the prompt differently with and without the answer")
    tokenizer = processor.tokenizer
    tail = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
    inputs = processor(text=[full], images=list(images), return_tensors="pt")
    ids = inputs["input_ids"][0]
    if len(tail) >= len(ids) or ids[len(ids) - len(tail) :].tolist() != list(tail):
        raise ValueError("the answer's tokens are not the tail of the conversation's tokens")
    end_ids = {tokenizer.convert_tokens_to_ids(END_OF_TURN), tokenizer.eos_token_id}
    end_ids -= {None, tokenizer.unk_token_id}
    closing = next((i for i, token in enumerate(tail) if token in end_ids), None)
    if closing is None:
        raise ValueError(f"the chat template does not close the answer with {END_OF_TURN} or the eos token")
    labels = ids.clone().fill_(IGNORE)
    start = len(ids) - len(tail)
    labels[start : start + closing + 1] = ids[start : start + closing + 1]
    return {**dict(inputs), "labels": labels.unsqueeze(0)}


def collate(samples: Sequence[Mapping[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """Right-pad the per-token tensors (ids with the pad token, labels with -100, masks with 0) and
    concatenate the per-image ones (pixel_values, image_grid_thw)."""
    import torch

    lengths = [int(s["input_ids"].shape[1]) for s in samples]
    longest = max(lengths)
    pad_values = {"input_ids": pad_token_id, "labels": IGNORE}
    batch: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if (
            values[0].dim() == 2
            and values[0].shape[0] == 1
            and key not in ("image_grid_thw",)
            and all(v.shape[1] == n for v, n in zip(values, lengths, strict=True))
        ):
            fill = pad_values.get(key, 0)
            batch[key] = torch.cat(
                [torch.nn.functional.pad(v, (0, longest - v.shape[1]), value=fill) for v in values]
            )
        else:
            batch[key] = torch.cat(values)
    return batch
