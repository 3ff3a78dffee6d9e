"""A fine-tune's result as a new GLEAM-X registry version: a LoRA adapter on a recorded base, or merged.

An adapter version holds the peft files (adapter_config.json, adapter_model.safetensors), the processor
it was trained with, and `gleam-x.json`: the base model's reference (a folder, a cached Hugging Face
repo id, or a pinned registry version `models:/name/3`) and the fingerprint of the base folder it was
trained on. `gleam.explain.mllm` loads it by resolving that base offline, refusing a base with another
fingerprint, applying the adapter and merging it. A merged version is a plain model folder (as
`register_mllm` registers), with a `gleam-x.json` of kind `merged` for provenance. Registry tags say
which (`gleam.kind`: adapter | mllm) and name the base (`gleam.base_model`, `gleam.base_fingerprint`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gleam import registry
from gleam.explain.mllm import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    ARTIFACT_PATH,
    KIND_TAG,
    MANIFEST,
    MLLMConfig,
    ModelSource,
    apply_adapter,
    folder_fingerprint,
    model_files,
    model_type_of,
    register_mllm,
    resolve_base,
    resolve_source,
)

MANIFEST_FORMAT = 1
BASE_TAG = "gleam.base_model"
BASE_FINGERPRINT_TAG = "gleam.base_fingerprint"


def base_reference(source: ModelSource) -> str:
    """What an adapter records as its base: a registry version pinned (an alias may move), a folder's
    absolute path, or the Hugging Face repo id (found in the local cache where it is loaded)."""
    if source.kind == "registry":
        return str(registry.ModelURI(str(source.name), version=source.version))
    if source.kind == "folder":
        return str(source.path)
    return source.requested


def write_manifest(
    folder: Path, kind: str, base: ModelSource, base_fingerprint: str, extra: Mapping[str, Any]
) -> Path:
    """gleam-x.json: kind (adapter | merged), the base's reference and fingerprint, and `extra`."""
    manifest = {
        "format": MANIFEST_FORMAT,
        "kind": kind,
        "base": {
            "reference": base_reference(base),
            "requested": base.requested,
            "source": base.kind,
            "fingerprint": base_fingerprint,
            "model_type": model_type_of(base.path),
        },
        **extra,
    }
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    return path


def assemble_adapter(
    adapter_dir: Path,
    processor: Any,
    out: Path,
    base: ModelSource,
    base_fingerprint: str,
    extra: Mapping[str, Any],
) -> Path:
    """`out`: the adapter's safetensors files, the processor it was trained with, and gleam-x.json."""
    out.mkdir(parents=True, exist_ok=True)
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        shutil.copy2(adapter_dir / name, out / name)
    processor.save_pretrained(str(out))
    write_manifest(out, "adapter", base, base_fingerprint, extra)
    return out


def merge_adapter(adapter_folder: Path, out: Path) -> Path:
    """`out`: the base with the adapter merged into its weights (safetensors), the adapter's processor and
    a gleam-x.json of kind `merged` naming the base; a plain model folder that loads without peft."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    adapter = resolve_source(str(adapter_folder))
    base = resolve_base(adapter, MLLMConfig(model=str(adapter_folder)))
    model = AutoModelForImageTextToText.from_pretrained(
        base.source.path, dtype="auto", local_files_only=True, use_safetensors=True
    )
    merged = apply_adapter(model, adapter)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out), safe_serialization=True)
    AutoProcessor.from_pretrained(str(adapter_folder), local_files_only=True).save_pretrained(str(out))
    manifest = dict(adapter.manifest or {})
    extra = {k: v for k, v in manifest.items() if k not in ("format", "kind", "base")}
    write_manifest(out, "merged", base.source, base.fingerprint, extra)
    return out


def register_adapter(
    folder: str | Path, run_id: str, name: str = registry.GLEAM_X, alias: str | None = None
) -> tuple[int, str]:
    """Register an adapter folder (checked as loading checks it) as a new version; (version, fingerprint)."""
    source = resolve_source(str(Path(folder).resolve()))
    if not source.is_adapter:
        raise ValueError(f"{folder} is not an adapter folder (no {MANIFEST} of kind adapter)")
    files = model_files(source.path)
    fingerprint = folder_fingerprint(source.path, files)
    base = (source.manifest or {})["base"]
    version = registry.register_folder(
        source.path,
        files,
        run_id,
        name,
        artifact_path=ARTIFACT_PATH,
        fingerprint=fingerprint,
        tags={
            KIND_TAG: "adapter",
            BASE_TAG: str(base["reference"]),
            BASE_FINGERPRINT_TAG: str(base["fingerprint"]),
            "gleam.model_type": str(base.get("model_type", "unknown")),
        },
        description=f"GLEAM-X LoRA adapter on {base['reference']} (base sha256 {base['fingerprint']})",
        model_description="GLEAM-X: the explaining multimodal LLM",
        aliases=[alias] if alias else [],
    )
    return version.version, fingerprint


def register_merged(folder: str | Path, run_id: str, name: str, alias: str | None) -> tuple[int, str]:
    """Register a merged (or fully fine-tuned) model folder as `register_mllm` does, tagged with its base."""
    path = Path(folder).resolve()
    _, version = register_mllm(path, name=name, alias=alias, run=run_id)
    base = json.loads((path / MANIFEST).read_text())["base"]
    client = registry.client()
    for key, value in ((BASE_TAG, base["reference"]), (BASE_FINGERPRINT_TAG, base["fingerprint"])):
        client.set_model_version_tag(name, str(version), key, str(value))
    return version, folder_fingerprint(path)
