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

Adapters (`gleam finetune-explainer`, `gleam.explain.adapters`): a folder (or registry version) holding
peft LoRA files and a `gleam-x.json` manifest of kind `adapter` that names the base model it was
trained on and that base folder's fingerprint. Loading one resolves the base the same three ways (or
from `MLLMConfig.base`), refuses a base whose fingerprint differs, applies the adapter and merges it
into the base's weights for inference speed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
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
MANIFEST = "gleam-x.json"  # what a fine-tune wrote: kind (adapter | merged), base reference and fingerprint
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
KIND_TAG = "gleam.kind"
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
    base: str | None = Field(
        None,
        min_length=1,
        description="for an adapter: where its base model is (folder, HF repo id or models:/...) instead of "
        "the reference it recorded; the base's fingerprint must still match",
    )


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
    manifest: dict[str, Any] | None = None  # gleam-x.json, when a fine-tune wrote one

    @property
    def is_adapter(self) -> bool:
        return (self.manifest or {}).get("kind") == "adapter"


@dataclass(frozen=True)
class AdapterBase:
    """The base model an adapter was applied to: where it was found, and its (verified) fingerprint."""

    reference: str  # what the adapter recorded
    source: ModelSource  # where it was found now (the recorded reference, or MLLMConfig.base)
    fingerprint: str

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "model": self.source.requested,
            "source": self.source.kind,
            "path": str(self.source.path),
            "name": self.source.name,
            "version": self.source.version,
            "fingerprint": self.fingerprint,
        }


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
    manifest = read_manifest(source.path)
    if manifest is not None:
        source = replace(source, manifest=manifest)
    if source.is_adapter:
        check_adapter_folder(source.path, manifest or {})
    else:
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


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's gleam-x.json (written by a fine-tune), or None when it has none."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MLLMError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise MLLMError(f"{path} must hold a JSON object")
    return manifest


def check_adapter_folder(path: Path, manifest: dict[str, Any]) -> Path:
    """A peft adapter with safetensors weights and a manifest naming its base and the base's fingerprint."""
    if not (path / ADAPTER_CONFIG).is_file():
        raise MLLMError(f"{path} says it is an adapter ({MANIFEST}) but has no {ADAPTER_CONFIG}")
    if not (path / ADAPTER_WEIGHTS).is_file():
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise MLLMError(
                f"{path} holds only pickle adapter weights ({', '.join(pickles)}): refused, pickle files "
                f"can run code when loaded; save the adapter with safe_serialization=True ({ADAPTER_WEIGHTS})"
            )
        raise MLLMError(f"{path} holds no {ADAPTER_WEIGHTS}")
    base = manifest.get("base")
    if not isinstance(base, dict) or not base.get("reference") or not base.get("fingerprint"):
        raise MLLMError(f"{path / MANIFEST} does not name its base model (base.reference, base.fingerprint)")
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
    model_type = model_type_of(folder)
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


def model_type_of(folder: Path) -> str:
    """config.json's model_type (`qwen2_5_vl`), or 'unknown'."""
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
        self,
        model: Any,
        processor: Any,
        config: MLLMConfig,
        source: ModelSource,
        fingerprint: str,
        base: AdapterBase | None = None,
    ) -> None:
        self.model = model
        self.processor = processor
        self.config = config
        self.source = source
        self.base = base
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
        base = resolve_base(source, config) if source.is_adapter else None
        weights = base.source.path if base is not None else source.path
        device = resolve_device(config.device)
        dtype = resolve_dtype(config.dtype, device)
        started = time.perf_counter()
        # an adapter carries the processor it was trained with (its pixel bounds); else the base's
        has_processor = any((source.path / name).is_file() for name in PROCESSOR_FILES)
        processor_path = source.path if has_processor else weights
        processor = AutoProcessor.from_pretrained(processor_path, local_files_only=True)
        model = AutoModelForImageTextToText.from_pretrained(
            weights, dtype=dtype, local_files_only=True, use_safetensors=True
        )
        if base is not None:
            model = apply_adapter(model, source)
        model = model.to(device).eval()
        log.info(
            "loaded %s from %s%s on %s (%s) in %.1fs",
            config.model,
            source.path,
            f" on base {base.source.path}" if base is not None else "",
            device,
            dtype,
            time.perf_counter() - started,
        )
        return cls(model, processor, config, source, fingerprint, base)

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
            "kind": "adapter" if self.base is not None else "model",
            "base": self.base.to_json() if self.base is not None else None,
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
        queries = as_image_list(query_images)
        messages = build_messages(
            query_modality(modality), normalize_language(language), evidence, query_count=len(queries)
        )
        return self.generate_messages(messages, [*queries, satellite])

    def generate_messages(self, messages: list[dict[str, Any]], images: Sequence[ImageInput]) -> Generation:
        """Any chat (`messages`, one image block per entry of `images`, in order) through the model's own
        template: the student's question (`generate`) and a teacher's prompt share the decoding."""
        import torch

        pictures = [self.prepare_image(image) for image in images]
        prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = self.processor(text=[prompt], images=pictures, return_tensors="pt")
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
        return fit_image(image, self.config.max_image_pixels)


def fit_image(image: ImageInput, max_pixels: int) -> Image.Image:
    """RGB, downscaled (aspect kept) to at most `max_pixels`: what the model sees, in serving and training."""
    from PIL import Image

    from gleam.model.transforms import decode

    pil = decode(image).convert("RGB")
    pixels = pil.width * pil.height
    if pixels > max_pixels:
        scale = (max_pixels / pixels) ** 0.5
        size = (max(28, int(pil.width * scale)), max(28, int(pil.height * scale)))
        pil = pil.resize(size, Image.BICUBIC)
    return pil


# --- adapters --------------------------------------------------------------------------------------------


def resolve_base(adapter: ModelSource, config: MLLMConfig) -> AdapterBase:
    """The adapter's base model, found offline (its recorded reference, or `config.base`) and verified:
    a base whose fingerprint differs from the one the adapter was trained on is refused."""
    recorded = adapter.manifest["base"] if adapter.manifest else {}
    reference, expected = str(recorded["reference"]), str(recorded["fingerprint"])
    where = config.base or reference
    try:
        found = resolve_source(where, config.cache_dir)
    except MLLMNotFoundError as exc:
        raise MLLMNotFoundError(
            f"the base model of adapter {adapter.requested} ({where}) is not on this machine: {exc}. Provide "
            "it, or set mllm.base to where it is"
        ) from None
    if found.is_adapter:
        raise MLLMError(f"the base of adapter {adapter.requested}, {where}, is itself an adapter")
    fingerprint = folder_fingerprint(found.path)
    if fingerprint != expected:
        raise MLLMError(
            f"adapter {adapter.requested} was trained on base {reference} with fingerprint {expected}, but "
            f"{where} at {found.path} has fingerprint {fingerprint}: not the same base model; set mllm.base "
            "to the base it was trained on"
        )
    trained = ((adapter.manifest or {}).get("processor") or {}).get("max_pixels")
    if isinstance(trained, int) and config.max_image_pixels < trained:
        log.warning(
            "adapter %s was trained on images of up to %d pixels; max_image_pixels %d shows it smaller ones",
            adapter.requested,
            trained,
            config.max_image_pixels,
        )
    return AdapterBase(reference, found, fingerprint)


def apply_adapter(model: Any, adapter: ModelSource) -> Any:
    """The base model with the peft adapter applied and merged into its weights (one matmul per layer
    at inference, as fast as the base); only the safetensors adapter file is read."""
    from peft import PeftModel

    # check_adapter_folder made sure adapter_model.safetensors is there: peft reads it, never a pickle
    peft_model = PeftModel.from_pretrained(model, str(adapter.path), is_trainable=False)
    return peft_model.merge_and_unload()
