"""The two kinds of teacher: an OpenAI-compatible chat endpoint, or a local transformers MLLM.

Both answer one `TeacherPrompt` about two images (query, then tile) with the raw text they produced.
A request that did not produce an answer after the retries raises `TeacherUnavailable` (the pair is
rejected for this run and asked again in the next); an endpoint that refuses the job itself (wrong
key, unknown model) raises `TeacherRefused`, which stops the job: every other request would fail too.

The endpoint gets the images as base64 JPEG data URLs, downscaled first (aspect kept) to
`max_image_pixels` with `gleam.explain.mllm.fit_image`, the rule the local model follows. Retries, with
exponential backoff and jitter (tenacity), cover timeouts, connection errors, 408/409/429 and 5xx; the
openai client's own retries are off so there is one policy, the configured one. The key is read from
the environment variable the config names and never logged.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from gleam.errors import RefusedError
from gleam.explain.dataset.config import LocalTeacher, OpenAITeacher
from gleam.explain.dataset.teacher_prompts import TeacherPrompt
from gleam.explain.mllm import fit_image

log = logging.getLogger(__name__)
RETRIED_STATUS = frozenset({408, 409, 429})
NO_KEY = "unused"  # what the client sends to an endpoint that needs no key (api_key_env: null)


class TeacherUnavailable(RuntimeError):
    """No answer after the retries (timeouts, 429, 5xx, connection errors): not cached, asked again later."""


class TeacherRefused(RefusedError, RuntimeError):
    """The endpoint refuses this job (authentication, permission, unknown model): no request can succeed."""


class Teacher(Protocol):
    identity: str

    def ask(self, prompt: TeacherPrompt, images: Sequence[bytes]) -> str: ...


def jpeg_data_url(image: bytes, max_pixels: int) -> str:
    """The image as a base64 JPEG data URL, downscaled to at most `max_pixels` pixels."""
    buffer = io.BytesIO()
    fit_image(image, max_pixels).save(buffer, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class ChatEndpointTeacher:
    """An OpenAI-compatible /chat/completions endpoint through the `openai` client; thread-safe."""

    def __init__(self, config: OpenAITeacher) -> None:
        import openai

        self.config = config
        self.identity = config.identity
        key = os.environ.get(config.api_key_env) if config.api_key_env else NO_KEY
        if not key:
            raise TeacherRefused(
                f"teacher.api_key_env names {config.api_key_env}, which is not set in this worker's "
                "environment"
            )
        self.client = openai.OpenAI(
            api_key=key, base_url=config.base_url, timeout=config.timeout_s, max_retries=0
        )
        self._lock = threading.Lock()
        self.attempts = 0

    def ask(self, prompt: TeacherPrompt, images: Sequence[bytes]) -> str:
        from tenacity import (
            RetryError,
            Retrying,
            retry_if_exception,
            stop_after_attempt,
            wait_exponential_jitter,
        )

        content: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": jpeg_data_url(image, self.config.max_image_pixels)}}
            for image in images
        ]
        content.append({"type": "text", "text": prompt.user})
        messages = [{"role": "system", "content": prompt.system}, {"role": "user", "content": content}]
        retrying = Retrying(
            retry=retry_if_exception(_transient),
            stop=stop_after_attempt(self.config.max_retries + 1),
            wait=wait_exponential_jitter(
                initial=self.config.backoff_s, max=self.config.max_backoff_s, jitter=self.config.backoff_s
            ),
            reraise=False,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._once(messages)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            raise TeacherUnavailable(
                f"no answer after {self.config.max_retries + 1} attempts: {_describe(last)}"
            ) from None
        raise AssertionError("unreachable")  # tenacity either returns, retries or raises

    def _once(self, messages: list[dict[str, Any]]) -> str:
        import openai

        with self._lock:
            self.attempts += 1
        try:
            response = self.client.chat.completions.create(
                model=self.config.model,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=self.config.max_tokens,
                temperature=self.config.temperature,
            )
        except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as exc:
            raise TeacherRefused(
                f"the teacher endpoint {self.config.base_url} refused model {self.config.model!r}: "
                f"{_describe(exc)}. Check teacher.base_url, teacher.model and the key in "
                f"${self.config.api_key_env}"
            ) from None
        except openai.APIStatusError as exc:
            if _transient(exc):
                raise
            raise TeacherUnavailable(f"the endpoint refused the request: {_describe(exc)}") from None
        if not response.choices:
            return ""
        return response.choices[0].message.content or ""


def _transient(exc: BaseException) -> bool:
    import openai

    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in RETRIED_STATUS or exc.status_code >= 500
    return False


def _describe(exc: BaseException | None) -> str:
    import openai

    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code} ({type(exc).__name__})"
    if isinstance(exc, openai.APITimeoutError):
        return "timed out"
    return type(exc).__name__ if exc is not None else "unknown error"


class LocalModelTeacher:
    """A transformers MLLM (gleam.explain.mllm.MultimodalLLM) asked with the teacher's prompt.

    The MultimodalLLM's own `generate` asks the student's question; the teacher's is another prompt, sent
    through `generate_messages`, the same template, image fitting and decoding.
    """

    def __init__(self, config: LocalTeacher) -> None:
        from gleam.explain.mllm import MultimodalLLM

        self.identity = config.identity
        self.llm = MultimodalLLM.load(config.mllm)
        self.attempts = 0

    def ask(self, prompt: TeacherPrompt, images: Sequence[bytes]) -> str:
        self.attempts += 1
        return self.llm.generate_messages(prompt.chat_messages(), list(images)).text


def make_teacher(config: OpenAITeacher | LocalTeacher) -> ChatEndpointTeacher | LocalModelTeacher:
    if isinstance(config, OpenAITeacher):
        return ChatEndpointTeacher(config)
    return LocalModelTeacher(config)
