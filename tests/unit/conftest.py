"""Fixtures shared by unit tests: tiny real image files, and a guard that listing reads no image."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image


@pytest.fixture
def write_image() -> Callable[..., Path]:
    """Write a tiny real image (format from the suffix) or, with `text`, a non-image file."""

    def write(path: Path, text: str | None = None, size: tuple[int, int] = (8, 8)) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        if text is not None:
            path.write_text(text)
        else:
            Image.new("RGB", size, (40, 120, 200)).save(path)
        return path

    return write


@pytest.fixture
def no_image_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything reads an image's bytes (listing must stay metadata-only)."""
    from gleam import storage

    real_read_bytes = storage.read_bytes

    def guarded(uri: str) -> bytes:
        if Path(str(uri)).suffix.lower() in {".jpg", ".jpeg", ".png"}:
            raise AssertionError(f"listing read image bytes: {uri}")
        return real_read_bytes(uri)

    monkeypatch.setattr(storage, "read_bytes", guarded)


@pytest.fixture(scope="session")
def tiny_vlm_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Qwen2.5-VL saved as a Hugging Face folder (built once per session, offline)."""
    from tests.support.tiny_vlm import build_tiny_qwen25vl

    return build_tiny_qwen25vl(tmp_path_factory.mktemp("tiny-vlm") / "model")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine threads contend."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
