"""The teacher's answers already paid for, in the store under `<set>/cache/`, one JSON object per answer.

Keyed by sha256 of (pair_id, the rendered prompt text with its language, the teacher's identity): the
same question to the same teacher about the same pair is never asked twice, while an edited template or
another teacher asks again. Every answer the teacher returned is kept, garbage included (it was paid
for and would be garbage again); a request that failed (timeout, 429, 5xx after the retries) left no
answer and is not cached, so the next run asks again. Each answer is written as soon as it arrives
(one atomic object), so a crash loses at most the requests in flight.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

from gleam import storage

CACHE_DIR = "cache"


def cache_key(pair_id: str, prompt_text: str, teacher: str) -> str:
    payload = json.dumps([pair_id, prompt_text, teacher], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class AnswerCache:
    """`<set>/cache/<key[:2]>/<key>.json`: {key, pair_id, language, teacher, text, created}."""

    def __init__(self, set_uri: str) -> None:
        self.root = storage.join(set_uri, CACHE_DIR)

    def uri(self, key: str) -> str:
        return storage.join(self.root, key[:2], f"{key}.json")

    def get(self, key: str) -> str | None:
        """The cached answer text, or None when this question was never answered."""
        try:
            record = storage.read_json(self.uri(key))
        except storage.NotFoundError:
            return None
        except ValueError:  # a damaged object (not JSON): ask again, and overwrite it
            return None
        if (
            not isinstance(record, dict)
            or record.get("key") != key
            or not isinstance(record.get("text"), str)
        ):
            return None  # not one of ours: ask again, and overwrite it
        return record["text"]

    def put(self, key: str, pair_id: str, language: str, teacher: str, text: str) -> None:
        record = {
            "key": key,
            "pair_id": pair_id,
            "language": language,
            "teacher": teacher,
            "text": text,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        storage.write_json(self.uri(key), record)
