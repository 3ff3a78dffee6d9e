"""`encoder.pretrained: hub`: timm's weights for the backbone, fetched from the Hugging Face Hub by the train
driver, once per job and before any worker starts, and written to the store for the workers to load.

Why the driver: workers of a cluster often cannot reach the internet, N workers downloading the same
hundreds of MB is N times the traffic and the rate limits, and a Hub that refuses must stop the job with
one clear line (exit 3) before Ray Train starts, not as a traceback from every worker.

Where: `<store>/pretrained/<backbone>/<sha256>.safetensors`, content-addressed in the platform store
(GLEAM_STORE), with `<sha256>.json` beside it saying where it came from. Not under the run folder, because
(1) the name is the content: the file a config or an MLflow run names never changes under it, and anyone
can check it; (2) every run and phase of the same backbone shares one copy (convnext_base is ~350 MB),
written once; (3) the store is where every worker already reads the corpus from.

The user's config keeps `hub` (so its fingerprint, and the resume of the same job, do not depend on what
the Hub served); only the config handed to the workers names the stored file.

huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE once, at import; both are read here at call time
instead (and handed to it as `endpoint=` / `local_files_only=`), so a job's environment applies even when
the library was imported before it was set.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gleam import storage
from gleam.model.encoder import (
    PretrainedWeightsError,
    check_pretrained,
    hf_cache_dir,
    hub_source,
    read_state_dict,
)
from gleam.model.spec import HF_CACHE, HUB, EncoderSpec

log = logging.getLogger(__name__)

PRETRAINED_DIR = "pretrained"
TAG_PREFIX = "gleam.pretrained."
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_TRUE = {"1", "on", "yes", "true"}


class HubWeightsUnavailableError(PretrainedWeightsError):
    """The Hub cannot give the weights now (offline, unreachable, refused); exit 3, one line."""


@dataclass(frozen=True)
class HubWeights:
    """Timm's Hub weights of one backbone, stored as safetensors, and where they came from."""

    backbone: str
    repo_id: str
    filename: str
    revision: str  # as asked ("main" unless timm pins one)
    commit: str | None  # the commit the Hub resolved it to, when known
    endpoint: str
    sha256: str  # of the stored safetensors file
    size: int
    uri: str

    def tags(self) -> dict[str, str]:
        """MLflow tags of the train run (tags, not params: MLflow never lets a param change, and a job
        re-submitted after the Hub's file changed would record other values)."""
        return {TAG_PREFIX + k: str(v) for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class StagedPretrained:
    """The encoder spec the workers get, and what to record about its pretrained weights in MLflow."""

    spec: EncoderSpec | None
    tags: dict[str, str] = field(default_factory=dict)


def stage_pretrained(spec: EncoderSpec | None, store: str | None = None) -> StagedPretrained:
    """Settle `spec.pretrained` on the driver, before any worker starts.

    `hub`: fetched and stored (see the module docstring), and the returned spec names the stored file.
    Anything else is only checked (a missing file is one clear line here, not a crash in every worker).
    """
    if spec is None or spec.pretrained is None:
        return StagedPretrained(spec)
    if spec.pretrained != HUB:
        check_pretrained(spec.backbone, spec.pretrained)
        return StagedPretrained(spec)
    weights = fetch_hub_weights(spec.backbone, store)
    return StagedPretrained(spec.model_copy(update={"pretrained": weights.uri}), weights.tags())


def fetch_hub_weights(backbone: str, store: str | None = None) -> HubWeights:
    """Download timm's weights of `backbone` (via the Hugging Face cache) and store them as safetensors."""
    source = hub_source(backbone)
    revision = source.revision or "main"
    endpoint = hub_endpoint()
    downloaded, filename = _download(backbone, source.repo_id, revision, source.filenames, endpoint)
    root = storage.join(store or storage.default_store(), PRETRAINED_DIR, _folder(backbone))
    with _as_safetensors(downloaded) as local:
        with open(local, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        uri = storage.join(root, f"{digest}.safetensors")
        if not storage.is_file(uri):  # content-addressed: present means identical
            storage.upload_file(local, uri)
        size = local.stat().st_size
    # the cache's documented layout: <repo folder>/snapshots/<commit>/<filename>
    commit = downloaded.parent.name if _COMMIT.match(downloaded.parent.name) else None
    weights = HubWeights(backbone, source.repo_id, filename, revision, commit, endpoint, digest, size, uri)
    record = storage.join(root, f"{digest}.json")
    if not storage.is_file(record):
        storage.write_json(record, asdict(weights))
    log.info("pretrained %s: %s/%s (%s) stored at %s", backbone, source.repo_id, filename, commit, uri)
    return weights


def hub_endpoint() -> str:
    """HF_ENDPOINT now (a mirror, or a local server in tests), else the library's own default."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE now, or as the library read it at import."""
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE or constants.is_offline_mode()


def _download(
    backbone: str, repo_id: str, revision: str, filenames: tuple[str, ...], endpoint: str
) -> tuple[Path, str]:
    """The first of `filenames` the repo has, in the local Hugging Face cache (downloaded if need be)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RemoteEntryNotFoundError

    offline = hub_offline()
    unreachable: Exception | None = None

    def cannot_fetch(reason: str) -> HubWeightsUnavailableError:
        return HubWeightsUnavailableError(
            f"cannot fetch the pretrained weights of {backbone} from the Hugging Face Hub ({repo_id} at "
            f"{endpoint}): {reason}; provide them another way: set encoder.pretrained to a weights file or "
            f"folder (local or s3://), or to {HF_CACHE!r} with the weights in the local Hugging Face cache"
        )

    for filename in filenames:
        try:
            with _quiet_retries():
                path = hf_hub_download(
                    repo_id,
                    filename,
                    revision=revision,
                    cache_dir=hf_cache_dir(),
                    endpoint=endpoint,
                    local_files_only=offline or unreachable is not None,
                )
            return Path(path), filename
        except RemoteEntryNotFoundError:
            continue  # the repo has no such file: try the next name
        except LocalEntryNotFoundError as exc:  # offline or unreachable, and not in the cache
            # another name may be cached; once the Hub was unreachable, only the cache is asked (each
            # name would otherwise wait through the library's five retries again)
            unreachable = unreachable or exc
            continue
        except (OSError, HfHubHTTPError, *_transport_errors()) as exc:
            # refused (no such repo, gated, unauthorised, server error) or a network error surfaced raw
            raise cannot_fetch(_reason(exc)) from None
    if unreachable is not None:
        raise cannot_fetch(
            "offline (HF_HUB_OFFLINE is set)" if offline else _reason(unreachable.__cause__ or unreachable)
        )
    raise cannot_fetch(f"the repo has none of {', '.join(filenames)} at {revision}")


def _transport_errors() -> tuple[type[Exception], ...]:
    """The HTTP error base of the client huggingface_hub uses (httpx in 1.x, httpx2 in 2.x): its network
    errors can surface unwrapped, and neither client is a dependency of ours."""
    import importlib

    found: list[type[Exception]] = []
    for client in ("httpx2", "httpx"):
        try:
            found.append(importlib.import_module(client).HTTPError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


@contextmanager
def _quiet_retries() -> Iterator[None]:
    """huggingface_hub logs every retry of an unreachable Hub as a warning (twice: its own handler and the
    root's); the job's answer is the one line of the error, so they are kept off the console."""
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_logger.setLevel(level)


def _reason(exc: BaseException) -> str:
    """The first line of an error, short: the CLI prints exactly one line."""
    text = " ".join(str(exc).split("\n", 1)[0].split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:200]}"


@contextmanager
def _as_safetensors(path: Path) -> Iterator[Path]:
    """`path` itself when it is safetensors, else a temporary safetensors copy of its tensors (read with
    weights_only, never unpickled): the store holds one safe format that workers load without pickle."""
    if path.suffix == ".safetensors":
        yield path
        return
    from safetensors.torch import save_file

    state = {k: v.detach().clone().contiguous() for k, v in read_state_dict(path).items()}  # no shared memory
    with tempfile.TemporaryDirectory(prefix="gleam-hub-") as tmp:
        converted = Path(tmp, "model.safetensors")
        save_file(state, str(converted))
        yield converted


def _folder(backbone: str) -> str:
    """A store folder name for a backbone (timm names are already safe; `hf-hub:org/name` is not)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", backbone).strip("._") or "backbone"
