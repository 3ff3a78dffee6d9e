"""One way to reach data wherever it lives: a plain path, `file://` or `s3://bucket/key`.

Every URI resolves to a pyarrow filesystem plus a path, so Ray Data, Parquet and our own small reads
share one code path. S3 goes through s3fs with endpoint, region and credentials from the environment
(`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, `AWS_REGION`), never from configs.

Writes of single objects are atomic (temp file + rename locally; S3 PUTs are atomic by nature), and a
result made of many files is published by writing a marker or pointer file last.
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow.fs as pafs

from gleam import runtime_env
from gleam.errors import StorageError
from gleam.uris import is_local, is_s3, normalize


class NotFoundError(StorageError):
    """The object does not exist (as opposed to a store that failed to answer)."""


@dataclass(frozen=True)
class FileEntry:
    uri: str
    size: int


def join(base: str | os.PathLike[str], *parts: str) -> str:
    """Join path parts onto a URI without ever producing `//` in an S3 key."""
    base = normalize(base)
    clean = [p.strip("/") for p in parts if p and p.strip("/")]
    if is_s3(base):
        return "/".join([base, *clean])
    return str(Path(base, *clean))


def parent(uri: str) -> str:
    uri = normalize(uri)
    if is_s3(uri):
        head = uri[len("s3://") :]
        return "s3://" + posixpath.dirname(head)
    return str(Path(uri).parent)


def basename(uri: str) -> str:
    return posixpath.basename(normalize(uri).rstrip("/")) if is_s3(uri) else Path(uri).name


def relative_to(uri: str, base: str) -> str:
    """The part of `uri` below `base`, with forward slashes."""
    uri, base = normalize(uri), normalize(base)
    if not (uri == base or uri.startswith(base.rstrip("/") + ("/" if is_s3(base) else os.sep))):
        raise StorageError(f"{uri} is not under {base}")
    return uri[len(base) :].lstrip("/").replace(os.sep, "/")


def s3_settings() -> tuple[str | None, str | None]:
    """(endpoint, region) from the environment; credentials stay with botocore's own lookup."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
    return endpoint, region


@lru_cache(maxsize=8)
def _s3fs(endpoint: str | None, region: str | None, key_id: str | None) -> Any:
    import s3fs  # imported lazily: local-only users never pay for botocore

    client_kwargs: dict[str, Any] = {}
    if region:
        client_kwargs["region_name"] = region
    # key_id is part of the cache key only, so rotated credentials get a fresh client.
    del key_id
    return s3fs.S3FileSystem(endpoint_url=endpoint, client_kwargs=client_kwargs, skip_instance_cache=True)


@lru_cache(maxsize=8)
def _s3_filesystem(endpoint: str | None, region: str | None, key_id: str | None) -> pafs.FileSystem:
    return pafs.PyFileSystem(pafs.FSSpecHandler(_s3fs(endpoint, region, key_id)))


def filesystem_for(uri: str) -> pafs.FileSystem:
    if is_s3(uri):
        endpoint, region = s3_settings()
        return _s3_filesystem(endpoint, region, os.environ.get("AWS_ACCESS_KEY_ID"))
    return pafs.LocalFileSystem()


def resolve(uri: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    """URI -> (pyarrow filesystem, path inside it). S3 paths are `bucket/key`."""
    uri = normalize(uri)
    if is_s3(uri):
        return filesystem_for(uri), uri[len("s3://") :]
    return filesystem_for(uri), uri


def _s3fs_from_env() -> Any:
    endpoint, region = s3_settings()
    return _s3fs(endpoint, region, os.environ.get("AWS_ACCESS_KEY_ID"))


def open_ranged(uri: str, block_size: int = 256 * 1024) -> BinaryIO:
    """A seekable binary reader that fetches only what is read: S3 in cached blocks of `block_size`.

    For random access into large objects (a window of a GeoTIFF): `resolve(uri)[0].open_input_file`
    reads ahead tens of MiB on S3, which would pull most of a big file for one small window.
    Raises FileNotFoundError for an absent object.
    """
    uri = normalize(uri)
    if is_s3(uri):
        path = uri[len("s3://") :]
        return _s3fs_from_env().open(path, "rb", block_size=block_size, cache_type="blockcache")
    return open(uri, "rb")  # the caller owns and closes it


def open_input(uri: str) -> BinaryIO:
    """A reader whose errors are the store's own, for callers that must tell a failing store from a bad
    object (gleam.storage_errors): FileNotFoundError only for an absent object, PermissionError for a
    denied one, the store's failure as raised. `resolve(uri)[0].open_input_stream` cannot be used for
    that on S3: pyarrow's fsspec wrapper asks `isfile` first and reports any failed lookup (a 503, a
    reset connection) as FileNotFoundError. On S3 a read fetches what it asks for, nothing ahead.
    """
    uri = normalize(uri)
    if is_s3(uri):
        return _s3fs_from_env().open(uri[len("s3://") :], "rb", cache_type="none")
    return open(uri, "rb")  # the caller owns and closes it


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_file(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type == pafs.FileType.File


def read_bytes(uri: str, attempts: int = 5) -> bytes:
    """The whole object. An S3 object replaced while being read (s3fs pins the ETag it saw first, so
    the read fails with 412 or FileExpired) is read again: small pointer files such as CURRENT and
    LEASE are rewritten in place while others poll them."""
    fs, path = resolve(uri)
    for attempt in range(attempts):
        try:
            with fs.open_input_stream(path) as stream:
                return stream.read()
        except FileNotFoundError as exc:
            raise NotFoundError(f"not found: {uri}") from exc
        except OSError as exc:
            # replaced mid-read: S3 answers 412, and s3fs raises FileExpired (EBUSY) on an ETag change
            text = str(exc)
            changed = exc.errno == errno.EBUSY or any(
                sign in text for sign in ("PreconditionFailed", "412", "no longer exists")
            )
            if not changed or attempt == attempts - 1:
                raise StorageError(f"cannot read {uri}: {exc}") from exc
            time.sleep(0.02 * (attempt + 1))
    raise AssertionError("unreachable")


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def read_json(uri: str) -> Any:
    return json.loads(read_text(uri))


def write_bytes(uri: str, data: bytes) -> str:
    """Write an object atomically: a reader sees the old content or the new one, never a part."""
    uri = normalize(uri)
    fs, path = resolve(uri)
    try:
        if is_s3(uri):
            with fs.open_output_stream(path) as out:  # one PUT on close: atomic on S3
                out.write(data)
            return uri
        fs.create_dir(posixpath.dirname(path) if os.sep == "/" else str(Path(path).parent), recursive=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with fs.open_output_stream(tmp) as out:
            out.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        raise StorageError(f"cannot write {uri}: {exc}") from exc
    return uri


def create_exclusive(uri: str, data: bytes) -> bool:
    """Write `uri` only if it does not exist; False when it does. Atomic: of two racing callers one wins.

    Locks (the index build lease) rest on this. Locally a complete temp file is hard-linked into place
    (link fails on an existing name); on S3 it is a conditional PUT (`If-None-Match: *`).
    """
    uri = normalize(uri)
    fs, path = resolve(uri)
    if is_s3(uri):
        s3 = fs.handler.fs  # type: ignore[attr-defined]  # the s3fs filesystem behind the pyarrow wrapper
        try:
            s3.pipe_file(path, data, mode="create")
        except FileExistsError:
            return False
        except OSError as exc:
            if "PreconditionFailed" in str(exc) or "412" in str(exc):
                return False
            raise StorageError(f"cannot write {uri}: {exc}") from exc
        return True
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        Path(tmp).write_bytes(data)
        os.link(tmp, path)
    except FileExistsError:
        return False
    except OSError as exc:
        raise StorageError(f"cannot write {uri}: {exc}") from exc
    finally:
        Path(tmp).unlink(missing_ok=True)
    return True


def upload_file(local_path: str | os.PathLike[str], uri: str, chunk: int = 1 << 24) -> str:
    """Copy a (possibly large) local file to `uri` without holding it in memory; atomic like write_bytes."""
    import shutil

    uri = normalize(uri)
    fs, path = resolve(uri)
    try:
        if is_s3(uri):
            with open(local_path, "rb") as source, fs.open_output_stream(path) as out:
                shutil.copyfileobj(source, out, chunk)
            return uri
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        shutil.copyfile(local_path, tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise StorageError(f"cannot write {uri}: {exc}") from exc
    return uri


def write_text(uri: str, text: str) -> str:
    return write_bytes(uri, text.encode("utf-8"))


def write_json(uri: str, payload: Any) -> str:
    return write_text(uri, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def list_files(uri: str) -> list[FileEntry]:
    """Every file below `uri` (recursive), sorted by URI; an absent prefix lists as empty."""
    uri = normalize(uri)
    fs, path = resolve(uri)
    selector = pafs.FileSelector(path, recursive=True, allow_not_found=True)
    try:
        infos = fs.get_file_info(selector)
    except OSError as exc:
        raise StorageError(f"cannot list {uri}: {exc}") from exc
    prefix = "s3://" if is_s3(uri) else ""
    entries = [
        FileEntry(prefix + info.path, info.size or 0) for info in infos if info.type == pafs.FileType.File
    ]
    return sorted(entries, key=lambda e: e.uri)


def list_dirs(uri: str) -> list[str]:
    """Names of the immediate sub-folders of `uri`, sorted."""
    uri = normalize(uri)
    fs, path = resolve(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))
    return sorted(posixpath.basename(i.path.rstrip("/")) for i in infos if i.type == pafs.FileType.Directory)


def makedirs(uri: str) -> None:
    fs, path = resolve(uri)
    if is_local(uri):
        fs.create_dir(path, recursive=True)


def delete(uri: str) -> None:
    """Remove a file or a whole folder; absent is fine (deleting is how a re-run starts clean)."""
    fs, path = resolve(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        fs.delete_file(path)
    elif info.type == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif is_s3(uri):  # S3 "folders" may exist only as a key prefix
        for entry in list_files(uri):
            fs.delete_file(resolve(entry.uri)[1])


def upload_tree(local_dir: str | os.PathLike[str], uri: str, threads: int = 16) -> int:
    """Copy a local folder to a store URI (used to stage raw data); returns the number of files."""
    from concurrent.futures import ThreadPoolExecutor

    local_dir = Path(local_dir)
    files = sorted(p for p in local_dir.rglob("*") if p.is_file())

    def upload(file: Path) -> None:
        write_bytes(join(uri, file.relative_to(local_dir).as_posix()), file.read_bytes())

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(upload, files))
    return len(files)


def gleam_home() -> Path:
    """Where the embedded defaults live (`.gleam/` in the working directory unless GLEAM_HOME says)."""
    return runtime_env.home()


def default_store() -> str:
    """The object store root: `GLEAM_STORE` (e.g. `s3://bucket/gleam`) or `.gleam/store`."""
    return normalize(os.environ.get("GLEAM_STORE") or str(gleam_home() / "store"))
