"""prepare against a store that throttles, fails or drops connections (moto behind a faulting proxy).

A store failure is not bad input: reads it fails are retried, a store that does not recover fails the
job (exit 4, nothing published) and a re-run finishes the work; only the object's own problems (absent,
denied, not an image) are rejects. The client's own per-request retries are switched off
(AWS_MAX_ATTEMPTS=1), so every fault the proxy answers reaches the platform, and the platform's backoff
is shortened through the settings users have (GLEAM_READ_*).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from rasterio.transform import from_origin

from gleam import storage
from gleam.config import load_config
from gleam.corpus.config import ImageLimits, PrepareConfig
from gleam.corpus.images import ProcessedImage
from gleam.corpus.prepare import prepare
from gleam.corpus.raster_read import RasterReaders
from gleam.corpus.raster_uri import WindowRef
from gleam.corpus.reader import PARTS, open_corpus
from gleam.corpus.stages import read_limited
from gleam.errors import StorageError
from gleam.storage_errors import ReadFailure, RetryPolicy, classify
from tests.support import bad_images
from tests.support.console import own_output
from tests.support.corpora import RawCorpus
from tests.support.s3_faults import Fault, FaultProxy

pytestmark = pytest.mark.integration

TRANSIENT_FAULTS = [Fault.SLOW_DOWN, Fault.UNAVAILABLE, Fault.INTERNAL, Fault.RESET]
FAST = RetryPolicy(attempts=4, first_wait_s=0.02, max_wait_s=0.1, max_seconds=120)
FAST_ENV = {"GLEAM_READ_ATTEMPTS": "4", "GLEAM_READ_BACKOFF_S": "0.02", "GLEAM_READ_MAX_S": "120"}
SIZES = ["sizes.satellite=[64,64]", "sizes.drone=[48,48]"]


@pytest.fixture
def proxy(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """The proxy, and this process's S3 client pointed at it without retries of its own."""
    with FaultProxy(s3_server) as running:
        monkeypatch.setenv("AWS_ENDPOINT_URL", running.url)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        yield running


def key_of(uri: str) -> str:
    return uri[len("s3://") :]


# --- single reads, in this process ------------------------------------------------------------------


@pytest.mark.parametrize("fault", TRANSIENT_FAULTS, ids=lambda f: f.name)
def test_a_few_store_failures_are_retried(s3_bucket: str, proxy: FaultProxy, fault: Fault) -> None:
    data = bad_images.jpeg((64, 64), seed=1)
    uri = storage.write_bytes(f"{s3_bucket}/raw/a.jpg", data)
    proxy.fail(key_of(uri), fault, times=2)
    assert read_limited(uri, 1 << 20, FAST) == data
    assert proxy.faulted[key_of(uri)] == 2


@pytest.mark.parametrize("fault", TRANSIENT_FAULTS, ids=lambda f: f.name)
def test_a_store_that_stays_down_is_a_storage_error(s3_bucket: str, proxy: FaultProxy, fault: Fault) -> None:
    uri = storage.write_bytes(f"{s3_bucket}/raw/a.jpg", bad_images.jpeg((64, 64), seed=1))
    proxy.fail(key_of(uri), fault)
    with pytest.raises(StorageError, match=f"cannot read {uri}: the store kept failing") as caught:
        read_limited(uri, 1 << 20, FAST)
    assert classify(caught.value.__cause__) is ReadFailure.TRANSIENT  # as s3fs/botocore raised it


def test_the_objects_own_problems_are_rejects_and_not_retried(s3_bucket: str, proxy: FaultProxy) -> None:
    denied = storage.write_bytes(f"{s3_bucket}/raw/denied.jpg", bad_images.jpeg((64, 64), seed=2))
    text = storage.write_bytes(f"{s3_bucket}/raw/notes.jpg", bad_images.text_file())
    proxy.fail(key_of(denied), Fault.DENIED)

    rejected = read_limited(denied, 1 << 20, FAST)
    assert isinstance(rejected, ProcessedImage) and rejected.reason == "read_error"
    assert "PermissionError" in (rejected.detail or "")
    missing = read_limited(f"{s3_bucket}/raw/not_there.jpg", 1 << 20, FAST)
    assert isinstance(missing, ProcessedImage) and missing.reason == "missing_file"
    assert read_limited(text, 1 << 20, FAST) == bad_images.text_file()  # bytes: decoding rejects them
    assert proxy.requests[key_of(denied)] == proxy.requests[f"{key_of(s3_bucket)}/raw/not_there.jpg"] == 1


def write_big_raster(path: Path) -> None:
    """Uncompressed and tiled, ~1 MiB: a window at the far corner lies blocks past the header."""
    rng = np.random.default_rng(0)
    profile = dict(driver="GTiff", width=640, height=560, count=3, dtype="uint8", tiled=True)
    with rasterio.open(
        path, "w", crs="EPSG:32633", transform=from_origin(465_000.0, 5_250_000.0, 0.3, 0.3), **profile
    ) as out:
        out.write(rng.integers(0, 255, (3, 560, 640), dtype=np.uint8))


def test_raster_windows_retry_a_failing_store(s3_bucket: str, proxy: FaultProxy, tmp_path: Path) -> None:
    write_big_raster(tmp_path / "big.tif")
    tif = storage.upload_file(tmp_path / "big.tif", f"{s3_bucket}/ortho/big.tif")
    window = WindowRef(tif, 576, 496, 64, 64, (1, 2, 3)).uri
    limits = ImageLimits()
    with RasterReaders(FAST) as readers:
        expected = readers.read(window, limits)
    assert isinstance(expected, bytes)

    proxy.fail(key_of(tif), Fault.UNAVAILABLE, times=2)  # the open fails twice
    with RasterReaders(FAST) as readers:
        assert readers.read(window, limits) == expected
    proxy.fail(key_of(tif), Fault.RESET, times=2, from_byte=256 * 1024)  # then the window's blocks
    with RasterReaders(FAST) as readers:
        assert readers.read(window, limits) == expected
    assert proxy.faulted[key_of(tif)] == 4

    proxy.fail(key_of(tif), Fault.INTERNAL, from_byte=256 * 1024)
    with RasterReaders(FAST) as readers, pytest.raises(StorageError, match=f"cannot read {tif}"):
        readers.read(window, limits)
    proxy.fail(key_of(tif), Fault.DENIED)
    with RasterReaders(FAST) as readers:
        denied = readers.read(window, limits)
    assert isinstance(denied, ProcessedImage) and denied.reason == "read_error"
    proxy.clear()
    with RasterReaders(FAST) as readers:
        gone = readers.read(WindowRef(f"{s3_bucket}/ortho/gone.tif", 0, 0, 64, 64, (1, 2, 3)).uri, limits)
    assert isinstance(gone, ProcessedImage) and gone.reason == "missing_file"


# --- the whole job, through the command line ------------------------------------------------------


@pytest.fixture
def raw_corpus(s3_bucket: str, tmp_path: Path) -> tuple[str, dict[str, str]]:
    """4 tiles and 4 drone queries, one listed query not in the store, one that is not an image.

    Returns the manifest URI and {object key: sha256 of its bytes} of the images that must be kept.
    """
    corpus = RawCorpus(tmp_path / "raw")
    kept: dict[str, str] = {}
    for i in range(1, 5):
        tile, query = bad_images.jpeg((80, 80), seed=100 + i), bad_images.jpeg((64, 64), seed=i)
        corpus.file(f"sat/t{i}.jpg", tile)
        corpus.file(f"drone/q{i}.jpg", query)
        corpus.row(f"drone/q{i}.jpg", "drone", f"sat/t{i}.jpg", f"loc-{i}")
        kept[f"{key_of(s3_bucket)}/raw/sat/t{i}.jpg"] = hashlib.sha256(tile).hexdigest()
        kept[f"{key_of(s3_bucket)}/raw/drone/q{i}.jpg"] = hashlib.sha256(query).hexdigest()
    corpus.row("drone/not_there.jpg", "drone", "sat/t1.jpg", "loc-1")
    corpus.file("drone/notes.jpg", bad_images.text_file())
    corpus.row("drone/notes.jpg", "drone", "sat/t2.jpg", "loc-2")
    corpus.write_manifest()
    storage.upload_tree(corpus.root, f"{s3_bucket}/raw")
    return f"{s3_bucket}/raw/manifest.csv", kept


def settings(manifest: str, output: Path) -> list[str]:
    sets = ["name=faults", f"output={output}", "sources.0.kind=manifest", f"sources.0.uri={manifest}"]
    return [*sets, "batch_size=4", "rows_per_shard=4", "concurrency=2", "tracking.enabled=false", *SIZES]


def run_prepare(proxy: FaultProxy, manifest: str, output: Path) -> subprocess.CompletedProcess[str]:
    """`gleam prepare` in its own process, reading the store through the proxy: the Ray workers it
    starts take the proxy's endpoint from the environment (the session's cluster has moto's)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "AWS_ENDPOINT_URL_S3")}
    env.update(FAST_ENV, AWS_ENDPOINT_URL=proxy.url, AWS_MAX_ATTEMPTS="1")
    sets = settings(manifest, output)
    command = [sys.executable, "-m", "gleam_cli", "prepare", *(a for s in sets for a in ("--set", s))]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=400, check=False)


def check_complete(corpus_uri: str, kept: dict[str, str]) -> dict[str, str]:
    """Every image is in the corpus once with the hash of its bytes; returns {key: reject reason}."""
    corpus = open_corpus(corpus_uri)
    rows = {part: corpus.read(part).to_pylist() for part in PARTS}
    accepted = {key_of(r["source_uri"]): r["sha256"] for part in ("tiles", "queries") for r in rows[part]}
    assert accepted == kept
    seen = [r["source_uri"] for part in PARTS for r in rows[part]]
    assert len(seen) == len(set(seen)) == corpus.manifest["counts"]["listed"]  # no duplicates, no holes
    return {key_of(r["source_uri"]): r["reason"] for r in rows["rejects"]}


def test_prepare_rides_out_store_failures_and_keeps_bad_input_as_rejects(
    s3_server: str, raw_corpus: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    manifest, kept = raw_corpus
    with FaultProxy(s3_server) as proxy:
        for n, key in enumerate(sorted(kept)):
            proxy.fail(key, TRANSIENT_FAULTS[n % len(TRANSIENT_FAULTS)], times=2)
        result = run_prepare(proxy, manifest, tmp_path / "out")
        assert result.returncode == 0, result.stdout + result.stderr
        assert all(proxy.faulted[key] == 2 for key in kept)  # every image failed twice, then was read

    corpus_uri = str(tmp_path / "out" / "faults")
    rejects = check_complete(corpus_uri, kept)
    bucket = key_of(manifest).split("/")[0]
    assert rejects == {
        f"{bucket}/raw/drone/not_there.jpg": "missing_file",
        f"{bucket}/raw/drone/notes.jpg": "not_an_image",
    }
    assert "read_error" not in open_corpus(corpus_uri).manifest["counts"]["rejects"]


def test_an_outage_fails_the_job_unpublished_and_a_rerun_finishes_it(
    ray_cluster, s3_server: str, raw_corpus: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    manifest, kept = raw_corpus
    down = sorted(kept)[:2]
    output = tmp_path / "out"
    with FaultProxy(s3_server) as proxy:
        proxy.fail(down[0], Fault.SLOW_DOWN)
        proxy.fail(down[1], Fault.RESET)
        failed = run_prepare(proxy, manifest, output)
        assert failed.returncode == 4, failed.stdout + failed.stderr
        errors = [line for line in failed.stdout.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in own_output(failed.stdout), failed.stdout
        assert any(f"cannot read s3://{key}: the store kept failing (4 attempts" in errors[0] for key in down)
        assert "Nothing was published; run the same prepare again" in errors[0], failed.stdout + failed.stderr
        assert not (output / "faults" / "manifest.json").exists()
        assert not any((output / "faults" / part).exists() for part in PARTS)

    # the store is back: the same job again (here, on the session's cluster, straight to the store)
    rerun = prepare(load_config(PrepareConfig, None, settings(manifest, output)))
    assert not rerun.skipped
    assert rerun.manifest["counts"]["accepted"] == len(kept)
    assert set(check_complete(rerun.corpus_uri, kept).values()) == {"missing_file", "not_an_image"}
    assert not (output / "faults" / "_work").exists()
    corpus = open_corpus(rerun.corpus_uri)
    rows = sum(pq.read_metadata(f).num_rows for part in PARTS for f in corpus.files(part))
    assert rows == rerun.manifest["counts"]["listed"] == len(kept) + 2  # the failed run left nothing behind
