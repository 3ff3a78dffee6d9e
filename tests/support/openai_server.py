# ruff: noqa: RUF001  (Chinese text uses full-width punctuation on purpose)
"""A real OpenAI-compatible chat-completions server on 127.0.0.1, backed by a tiny Qwen2.5-VL, with faults.

`POST /v1/chat/completions` takes the request the `openai` client sends (system text, then a user message
of `image_url` data URLs and text), decodes the images and answers:

- `answer="model"`: with the tiny model (`tests.support.tiny_vlm`) through the same generation code as
  the local teacher; a random-weight model says garbage, a taught copy the JSON it was taught;
- `answer="label"`: a well-formed rationale for the label the prompt states, in the prompt's language
  (the stand-in for a capable teacher; see tests/integration/test_explain_data.py for why).

Faults are chosen per query image (`image_key` of the first image's data URL), for the first `times`
calls of that image: `timeout` (sleeps past the client's timeout, then answers), `429`, `500`, or
`garbage` (the random-weight model's own words). `calls` counts every request received, `answered` every
200 response; `by_key` counts requests per query image. A bearer key and the model name are checked
(401 / 404), as a real endpoint does.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.support.ports import free_port

LABEL_ANSWERS = {
    ("en", True): "The road layout, the building footprints and the roof colours agree in both views.",
    ("en", False): "The road layout differs: the tile shows no junction where the query has one.",
    ("zh", True): "两张图像中的道路布局、建筑轮廓和屋顶颜色都一致。",
    ("zh", False): "道路布局不同：查询图像中有路口，而卫星图块中没有。",
}


@dataclass
class Fault:
    kind: str  # "timeout" | "429" | "500" | "garbage"
    times: int = 1_000_000  # the first `times` calls of this query image get the fault


def image_key(data_url: str) -> str:
    """The key faults are chosen by: sha256 of the decoded image bytes of a data URL."""
    return hashlib.sha256(base64.b64decode(data_url.split(",", 1)[1])).hexdigest()


class TeacherServer:
    """Start with `start()`; `url` is the base URL (ending in /v1) to give the openai client."""

    def __init__(
        self,
        model: str,
        answer: str = "model",
        model_folder: Path | None = None,
        garbage_folder: Path | None = None,
        api_key: str | None = None,
        timeout_sleep_s: float = 3.0,
        max_new_tokens: int = 16,
    ) -> None:
        if answer not in ("model", "label"):
            raise ValueError(f"answer must be 'model' or 'label', got {answer!r}")
        self.model_name = model
        self.answer = answer
        self.api_key = api_key
        self.timeout_sleep_s = timeout_sleep_s
        self.port = free_port()
        self.faults: dict[str, Fault] = {}
        self.calls = 0
        self.answered = 0
        self.by_key: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._model = _local_model(model_folder, max_new_tokens) if model_folder else None
        self._garbage = _local_model(garbage_folder, max_new_tokens) if garbage_folder else None
        if answer == "model" and self._model is None:
            raise ValueError("answer='model' needs model_folder")
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reset_counts(self) -> None:
        with self._lock:
            self.calls, self.answered = 0, 0
            self.by_key.clear()

    def start(self) -> TeacherServer:
        import uvicorn

        config = uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="teacher-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the teacher server did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_sleep_s + 10)

    # --- the endpoint ---------------------------------------------------------------------------------

    def _app(self) -> Any:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        def completions(request: Request, body: dict[str, Any]) -> Any:
            with self._lock:
                self.calls += 1
            if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
                return JSONResponse(_error("invalid api key", "invalid_request_error"), status_code=401)
            if body.get("model") != self.model_name:
                return JSONResponse(_error(f"model {body.get('model')!r} not found", "not_found"), 404)
            system, text, images = _read_messages(body["messages"])
            key = image_key(images[0]) if images else ""
            with self._lock:
                self.by_key[key] += 1
                seen = self.by_key[key]
            fault = self.faults.get(key)
            kind = fault.kind if fault is not None and seen <= fault.times else None
            if kind == "429":
                return JSONResponse(_error("rate limited", "rate_limit_exceeded"), status_code=429)
            if kind == "500":
                return JSONResponse(_error("the server broke", "server_error"), status_code=500)
            if kind == "timeout":
                time.sleep(self.timeout_sleep_s)
            content = self._content(system, text, images, garbage=kind == "garbage")
            with self._lock:
                self.answered += 1
            return _completion(self.model_name, content)

        return app

    def _content(self, system: str, text: str, images: list[str], garbage: bool) -> str:
        if garbage or self.answer == "model":
            model = self._garbage if garbage else self._model
            if model is None:
                raise RuntimeError("a garbage fault needs garbage_folder (a random-weight model)")
            return _generate(model, system, text, images)
        match = '"match": true' in text
        language = "zh" if "用中文书写" in text else "en"
        reasoning = LABEL_ANSWERS[(language, match)]
        return f'{{"match": {"true" if match else "false"}, "reasoning": "{reasoning}"}}'


def _local_model(folder: Path, max_new_tokens: int) -> Any:
    from gleam.explain.dataset.config import LocalTeacher
    from gleam.explain.dataset.teachers import LocalModelTeacher
    from gleam.explain.mllm import MLLMConfig

    mllm = MLLMConfig(model=str(folder), device="cpu", max_new_tokens=max_new_tokens)
    return {"teacher": LocalModelTeacher(LocalTeacher(kind="local", mllm=mllm)), "lock": threading.Lock()}


def _generate(model: dict[str, Any], system: str, text: str, images: list[str]) -> str:
    from gleam.explain.dataset.teacher_prompts import TeacherPrompt

    pictures = [base64.b64decode(url.split(",", 1)[1]) for url in images]
    with model["lock"]:  # one generation at a time, as one GPU would
        return model["teacher"].ask(TeacherPrompt("", system, text), pictures)


def _read_messages(messages: list[dict[str, Any]]) -> tuple[str, str, list[str]]:
    system, texts, images = "", [], []
    for message in messages:
        content = message.get("content")
        if message.get("role") == "system":
            system = content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)
            continue
        for part in content if isinstance(content, list) else [{"type": "text", "text": content}]:
            if part.get("type") == "image_url":
                images.append(part["image_url"]["url"])
            elif part.get("type") == "text":
                texts.append(part["text"])
    return system, "\n".join(texts), images


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": code, "code": code}}


def _completion(model: str, content: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{hashlib.sha256(content.encode()).hexdigest()[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }
