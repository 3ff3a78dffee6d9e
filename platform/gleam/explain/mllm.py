"""GLEAM-X's multimodal LLM through transformers: found offline, loaded from safetensors, asked under a lock.

Where a model comes from (never the network):

- a local folder of Hugging Face files (config.json, *.safetensors, tokenizer and processor files);
- a Hugging Face repo id (`Qwen/Qwen2.5-VL-3B-Instruct`), looked up in the local HF cache only
  (`local_files_only=True`); absent -> MLLMNotFoundError saying how to provide it;
- the MLflow registry (through `gleam.registry`), `models:/gleam-x@champion` or `models:/gleam-x/3`: the
  version's artifacts are a plain folder of HF files, downloaded once to
  `$GLEAM_HOME/cache/mllm/<name>-v<version>` and reused.

Safety ("no pickle from storage"): a folder must hold safetensors weights; `*.bin`/`*.pt` pickles are
never loaded (`use_safetensors=True`) nor registered. A model's fingerprint is the sha256 of its files'
sha256s, recorded on the registry version and checked against the local copy at every load.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from gleam import registry
from gleam.config import StrictModel, TrackingConfig
from gleam.errors import RefusedError
from gleam.explain.explanation import as_image_list
from gleam.explain.prompts import build_messages, normalize_language, query_modality

if TYPE_CHECKING:
    from PIL import Image

    from gleam.model.transforms import ImageInput

log = logging.getLogger(__name__)

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"
DEFAULT_REGISTRY_NAME = registry.GLEAM_X
ARTIFACT_PATH = "mllm"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_HOW_TO_PROVIDE = (
    "nothing is downloaded. Provide the model as (1) a local folder of Hugging Face files "
    "(config.json + *.safetensors), (2) a pre-populated Hugging Face cache (on a machine with network run "
    "`hf download {repo}`, then copy the cache and set HF_HUB_CACHE or HF_HOME), or (3) a registered model: "
    "gleam.explain.mllm.register_mllm(folder) once, then model=models:/gleam-x@champion"
)


class MLLMError(RefusedError, RuntimeError):
    """A model folder or registry entry that cannot be used; the message says which and why."""


class MLLMNotFoundError(MLLMError):
    """The model is not on this machine (folder, HF cache) nor in the registry; nothing is downloaded."""


class MLLMConfig(StrictModel):
    """Which multimodal LLM to load and how to run it."""

    model: str = Field(
        DEFAULT_MODEL,
        min_length=1,
        description="a local folder, a Hugging Face repo id (local cache only), or models:/gleam-x@alias",
    )
    device: str = Field("auto", min_length=1, description="auto: cuda when available, else cpu")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="auto: bfloat16 on CUDA with bf16 support, float16 on other CUDA, float32 on CPU"
    )
    max_new_tokens: int = Field(256, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0: greedy decoding")
    max_image_pixels: int = Field(
        448 * 448, ge=56 * 56, description="images are downscaled to at most this many pixels"
    )
    cache_dir: str | None = Field(None, description="registry downloads; default $GLEAM_HOME/cache/mllm")


@dataclass(frozen=True)
class ModelSource:
    """Where a model was found: the local folder, and the registry version when it came from there."""

    requested: str
    kind: Literal["folder", "hf-cache", "registry"]
    path: Path
    name: str | None = None
    version: int | None = None
    run_id: str | None = None
    expected_fingerprint: str | None = None


@dataclass(frozen=True)
class Generation:
    """The model's decoded answer (new tokens only), the wall time of generate, and how many tokens."""

    text: str
    seconds: float
    new_tokens: int


# --- finding a model -------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    from gleam import storage

    return storage.gleam_home() / "cache" / "mllm"


def resolve_model(model: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The local folder of `model` (a folder, a cached HF repo id, or models:/...), checked to be usable."""
    return resolve_source(model, cache_dir).path


def resolve_source(model: str, cache_dir: str | os.PathLike[str] | None = None) -> ModelSource:
    """Like resolve_model, with where it came from (registry name/version, expected fingerprint)."""
    if registry.is_registry_uri(model):
        source = _from_registry(model, Path(cache_dir) if cache_dir else default_cache_dir())
    else:
        path = Path(model).expanduser()
        if path.is_dir():
            source = ModelSource(model, "folder", path.resolve())
        elif path.is_absolute() or model.startswith((".", "~")) or path.exists() or not _REPO_ID.match(model):
            raise MLLMNotFoundError(
                f"no model folder at {path}; " + _HOW_TO_PROVIDE.format(repo=DEFAULT_MODEL)
            )
        else:
            source = ModelSource(model, "hf-cache", _from_hf_cache(model))
    check_model_folder(source.path)
    return source


def _from_hf_cache(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    from gleam.model.encoder import hf_cache_dir

    cache = hf_cache_dir()
    try:
        return Path(snapshot_download(repo_id, cache_dir=cache, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError) as exc:
        raise MLLMNotFoundError(
            f"model {repo_id!r} is not a local folder and not in the local Hugging Face cache {cache} "
            f"({type(exc).__name__}); " + _HOW_TO_PROVIDE.format(repo=repo_id)
        ) from None


def _from_registry(uri: str, cache_dir: Path) -> ModelSource:
    """Resolve the alias to one version, then download that version once into the cache and reuse it."""
    try:
        found = registry.resolve(uri)
        target = registry.download_cached(found, cache_dir)
    except registry.ModelNotFoundError as exc:
        raise MLLMNotFoundError(f"{exc}; " + _HOW_TO_PROVIDE.format(repo=DEFAULT_MODEL)) from None
    except registry.RegistryError as exc:
        raise MLLMError(str(exc)) from None
    return ModelSource(uri, "registry", target, found.name, found.version, found.run_id, found.fingerprint)


def check_model_folder(path: Path) -> Path:
    """A transformers model folder with safetensors weights; pickle-only weights are refused."""
    if not path.is_dir():
        raise MLLMNotFoundError(f"no model folder at {path}")
    if not (path / "config.json").is_file():
        raise MLLMError(f"{path} is not a transformers model folder: config.json is missing")
    if not any(path.glob("*.safetensors")):
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise MLLMError(
                f"{path} holds only pickle weights ({', '.join(pickles)}): refused, pickle files can run "
                "code when loaded. Convert them to safetensors (model.save_pretrained(folder, "
                "safe_serialization=True) on a trusted machine) and use that folder"
            )
        raise MLLMError(f"{path} holds no *.safetensors weights")
    return path


def model_files(folder: Path) -> list[str]:
    """Relative paths of the files that make the model: no hidden files, no pickles; sorted."""
    files = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        if path.suffix in PICKLE_SUFFIXES:
            continue
        files.append(relative.as_posix())
    return files


def folder_fingerprint(folder: Path, files: Sequence[str] | None = None) -> str:
    """sha256 over `<relative path> <sha256 of the file>` lines of the model's files (streamed)."""
    summary = hashlib.sha256()
    for relative in files if files is not None else model_files(folder):
        digest = hashlib.sha256()
        with open(folder / relative, "rb") as handle:
            for block in iter(lambda: handle.read(8 << 20), b""):
                digest.update(block)
        summary.update(f"{relative} {digest.hexdigest()}\n".encode())
    return summary.hexdigest()


# --- the registry ----------------------------------------------------------------------------------------


def register_mllm(
    folder: str | os.PathLike[str],
    name: str = DEFAULT_REGISTRY_NAME,
    alias: str | None = "champion",
    run: Any = None,
    tracking: TrackingConfig | None = None,
) -> tuple[str, int]:
    """Log a model folder's files as run artifacts under `mllm/` and register them; returns (name, version).

    `run`: a `gleam.tracking.JobRun`, an MLflow run or a run id; None opens a run of job `register-mllm`
    (experiment `gleam-x` unless `tracking` says). Pickle files are never logged. The version is tagged
    with the fingerprint that loads check, and `alias` (if any) is moved to it.
    """
    from gleam import tracking as gleam_tracking

    path = check_model_folder(Path(folder).expanduser().resolve())
    if run is None:
        config = tracking or TrackingConfig(experiment="gleam-x")
        with gleam_tracking.job_run("register-mllm", tracking=config) as opened:
            if opened.run_id is None:
                raise MLLMError("register_mllm needs MLflow tracking: it is disabled in this process")
            return name, _register(path, opened.run_id, name, alias)
    run_id = registry.run_id_of(run)
    if run_id is None:
        raise MLLMError("register_mllm got a run that does not log (another rank, or tracking disabled)")
    return name, _register(path, run_id, name, alias)


def _register(folder: Path, run_id: str, name: str, alias: str | None) -> int:
    files = model_files(folder)
    fingerprint = folder_fingerprint(folder, files)
    model_type = _model_type(folder)
    version = registry.register_folder(
        folder,
        files,
        run_id,
        name,
        artifact_path=ARTIFACT_PATH,
        fingerprint=fingerprint,
        tags={"gleam.kind": "mllm", "gleam.model_type": model_type},
        description=f"GLEAM-X multimodal LLM ({model_type}), {len(files)} files, sha256 {fingerprint}",
        model_description="GLEAM-X: the explaining multimodal LLM",
        aliases=[alias] if alias else [],
    )
    return version.version


def _model_type(folder: Path) -> str:
    import json

    try:
        return str(json.loads((folder / "config.json").read_text()).get("model_type", "unknown"))
    except (OSError, ValueError):
        return "unknown"


# --- the model -------------------------------------------------------------------------------------------


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(torch.device(device))  # a bad name is a clear RuntimeError here, before loading


def resolve_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


class MultimodalLLM:
    """A loaded GLEAM-X model and its processor; `generate` is safe to call from several threads."""

    def __init__(
        self, model: Any, processor: Any, config: MLLMConfig, source: ModelSource, fingerprint: str
    ) -> None:
        self.model = model
        self.processor = processor
        self.config = config
        self.source = source
        self._fingerprint = fingerprint
        self._lock = threading.Lock()

    @classmethod
    def load(cls, config: MLLMConfig) -> MultimodalLLM:
        """Resolve (offline), verify the files, then load the processor and model from safetensors."""
        from transformers import AutoModelForImageTextToText, AutoProcessor

        source = resolve_source(config.model, config.cache_dir)
        fingerprint = folder_fingerprint(source.path)
        if source.expected_fingerprint and source.expected_fingerprint != fingerprint:
            raise MLLMError(
                f"{source.path} (from {source.requested}) has fingerprint {fingerprint}, the registry "
                f"says {source.expected_fingerprint}: the local copy is corrupt; delete the folder to "
                "download it again"
            )
        device = resolve_device(config.device)
        dtype = resolve_dtype(config.dtype, device)
        started = time.perf_counter()
        processor = AutoProcessor.from_pretrained(source.path, local_files_only=True)
        model = AutoModelForImageTextToText.from_pretrained(
            source.path, dtype=dtype, local_files_only=True, use_safetensors=True
        )
        model = model.to(device).eval()
        log.info(
            "loaded %s from %s on %s (%s) in %.1fs",
            config.model,
            source.path,
            device,
            dtype,
            time.perf_counter() - started,
        )
        return cls(model, processor, config, source, fingerprint)

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def info(self) -> dict[str, Any]:
        """What a response says about the model that answered."""
        return {
            "model": self.source.requested,
            "source": self.source.kind,
            "path": str(self.source.path),
            "name": self.source.name,
            "version": self.source.version,
            "run_id": self.source.run_id,
            "fingerprint": self._fingerprint,
            "model_type": getattr(self.model.config, "model_type", None),
            "device": str(self.model.device),
            "dtype": str(self.model.dtype).removeprefix("torch."),
        }

    def generate(
        self,
        query_images: ImageInput | Sequence[ImageInput],
        satellite: ImageInput,
        modality: str,
        language: str,
        evidence: dict[str, Any] | None = None,
    ) -> Generation:
        """Ask whether the query image(s) and the tile show the same place; the decoded new text."""
        import torch

        queries = as_image_list(query_images)
        messages = build_messages(
            query_modality(modality), normalize_language(language), evidence, query_count=len(queries)
        )
        images = [self.prepare_image(image) for image in [*queries, satellite]]
        prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = self.processor(text=[prompt], images=images, return_tensors="pt")
        inputs = inputs.to(device=self.model.device, dtype=self.model.dtype)
        kwargs: dict[str, Any] = {"max_new_tokens": self.config.max_new_tokens, "do_sample": False}
        if self.config.temperature > 0:
            kwargs.update(do_sample=True, temperature=self.config.temperature)
        tokenizer = self.processor.tokenizer
        if getattr(self.model.generation_config, "pad_token_id", None) is None:
            pad = tokenizer.pad_token_id
            kwargs["pad_token_id"] = pad if pad is not None else tokenizer.eos_token_id
        prompt_length = inputs["input_ids"].shape[1]
        with self._lock, torch.inference_mode():
            started = time.perf_counter()
            output = self.model.generate(**inputs, **kwargs)
            seconds = time.perf_counter() - started
        new = output[0, prompt_length:]
        text = tokenizer.decode(new, skip_special_tokens=True)
        return Generation(text=text, seconds=seconds, new_tokens=int(new.numel()))

    def prepare_image(self, image: ImageInput) -> Image.Image:
        """RGB, downscaled (aspect kept) to at most `max_image_pixels` so the vision tower stays cheap."""
        from PIL import Image

        from gleam.model.transforms import decode

        pil = decode(image).convert("RGB")
        pixels = pil.width * pil.height
        if pixels > self.config.max_image_pixels:
            scale = (self.config.max_image_pixels / pixels) ** 0.5
            size = (max(28, int(pil.width * scale)), max(28, int(pil.height * scale)))
            pil = pil.resize(size, Image.BICUBIC)
        return pil
