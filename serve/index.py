"""SatelliteIndex: top-k over the published index, following CURRENT without dropping a request.

A new version is opened (checksum, encoder fingerprint, mmap, tile lookup) in a background thread while
the old one keeps answering; the swap is one attribute assignment, and a request holds a reference to
the version it started with, so none fails or mixes versions. A version built with another encoder is
refused and the replica keeps serving the one it has (and says so in `status`). CURRENT is polled every
`poll_seconds`; `reconfigure` (Serve `user_config`) can pin a version or change the period at run time.
Every answer carries the version's `quality` (`gleam.index.calibrate.index_quality`: collapsed tile
embeddings or a calibration at chance, from meta.json; unknown for indexes built before they were
recorded), so a client can see that an index's scores cannot tell places apart.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from ray import serve

log = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class _Loaded:
    opened: Any  # gleam.index.catalog.OpenedIndex
    tiles: Any  # gleam.index.tiles.TileImages
    loaded_at: float
    quality: dict[str, Any]  # gleam.index.calibrate.index_quality over all modalities


def _coordinate(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


@serve.deployment(
    name="SatelliteIndex",
    ray_actor_options={"num_cpus": 1},
    max_ongoing_requests=128,
    autoscaling_config={"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 32},
    health_check_period_s=10,
    health_check_timeout_s=30,
)
class SatelliteIndex:
    def __init__(
        self,
        store: str,
        name: str,
        fingerprint: str,
        version: str | None = None,
        poll_seconds: float = 10.0,
        locations: dict[str, str] | None = None,
    ) -> None:
        from gleam import runtime_env

        runtime_env.apply(locations)  # the builder's store and cache folder, whatever this replica's folder
        self.store, self.name, self.fingerprint = store, name, fingerprint
        self.pinned = version
        self.poll_seconds = poll_seconds
        self.refused: dict[str, str] = {}  # version -> why it is not served
        self.swaps = 0
        self._loading: str | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._active = self._open(version)  # fails the replica's start with the reason when unusable
        self._poller = threading.Thread(target=self._follow, name="index-follow", daemon=True)
        self._poller.start()

    # --- loading and swapping ----------------------------------------------------------------------------

    def _open(self, version: str | None) -> _Loaded:
        from gleam.index.calibrate import index_quality
        from gleam.index.catalog import open_index
        from gleam.index.tiles import TileImages

        opened = open_index(self.store, self.name, version, expect_fingerprint=self.fingerprint)
        quality = index_quality(opened.meta.get("spread"), opened.meta.get("calibration"))
        if quality["warning"]:
            log.warning("index %s %s: %s", self.name, opened.version, quality["warning"])
        return _Loaded(opened, TileImages(opened.meta["corpus"]), time.time(), quality)

    def _wanted(self) -> str | None:
        if self.pinned:
            return self.pinned
        from gleam.index.layout import IndexLocation

        return IndexLocation(self.store, self.name).current()

    def _follow(self) -> None:
        while not self._stop.is_set():
            if self.pinned or self.poll_seconds > 0:
                try:
                    self._maybe_swap()
                except Exception:  # never let the follower die: the next period tries again
                    log.exception("index %s: checking for a new version failed", self.name)
            period = self.poll_seconds if self.poll_seconds > 0 else 3600.0
            self._wake.wait(period)
            self._wake.clear()

    def _maybe_swap(self) -> None:
        wanted = self._wanted()
        if not wanted or wanted == self._active.opened.version or wanted in self.refused:
            return
        with self._lock:
            self._loading = wanted
        try:
            loaded = self._open(wanted)
        except Exception as exc:
            self.refused[wanted] = f"{type(exc).__name__}: {exc}"
            log.error("index %s: not serving version %s: %s", self.name, wanted, exc)
            return
        finally:
            with self._lock:
                self._loading = None
        previous = self._active.opened.version
        self._active = loaded  # the swap: requests already running keep their reference
        self.swaps += 1
        log.info("index %s: now serving %s (was %s)", self.name, wanted, previous)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """`{"version": "<v>" | null, "poll_seconds": s}`: pin or follow CURRENT; loads in the background."""
        self.pinned = user_config.get("version") or None
        if "poll_seconds" in user_config:
            self.poll_seconds = float(user_config["poll_seconds"])
        self._wake.set()

    # --- queries -------------------------------------------------------------------------------------------

    def search(self, vector: np.ndarray, k: int) -> dict[str, Any]:
        active = self._active
        scores, tiles = active.opened.search(vector, k)
        return {**self._label(active), "candidates": self._candidates(active, scores[0], tiles[0])}

    def rank_of(self, vector: np.ndarray, tile_id: str, depth: int = 100) -> dict[str, Any]:
        """Where `tile_id` ranks for this query, its score, and its margin over the best other tile."""
        active = self._active
        depth = max(2, min(depth, len(active.opened)))
        scores, tiles = active.opened.search(vector, depth)
        ranked = [(t, float(s)) for t, s in zip(tiles[0], scores[0], strict=True) if t is not None]
        ids = [t for t, _ in ranked]
        rank = ids.index(tile_id) + 1 if tile_id in ids else None
        margin = None
        if rank is not None:
            others = [s for t, s in ranked if t != tile_id]
            margin = ranked[rank - 1][1] - others[0] if others else None
        return {**self._label(active), "rank": rank, "depth": depth, "margin": margin}

    def tile(self, tile_id: str) -> dict[str, Any] | None:
        """The tile's JPEG and coordinates, or None when this index does not hold it."""
        active = self._active
        position = active.opened.position(tile_id)
        if position is None:
            return None
        image = active.tiles.get(tile_id)
        if image is None:
            return None
        return {
            "tile_id": tile_id,
            "image": image,
            "lat": _coordinate(active.opened.lat[position]),
            "lon": _coordinate(active.opened.lon[position]),
        }

    def status(self) -> dict[str, Any]:
        active = self._active
        with self._lock:
            loading = self._loading
        return {
            **self._label(active),
            "vectors": len(active.opened),
            "index_key": active.opened.meta.get("index_key"),
            "calibration": active.opened.meta.get("calibration"),
            "spread": active.opened.meta.get("spread"),
            "pinned": self.pinned,
            "loading": loading,
            "refused": dict(self.refused),
            "swaps": self.swaps,
        }

    def check_health(self) -> None:
        if self._active is None or not self._poller.is_alive():
            raise RuntimeError(f"index {self.name}: no version loaded or follower stopped")

    def __del__(self) -> None:
        self._stop.set()
        self._wake.set()

    @staticmethod
    def _label(active: _Loaded) -> dict[str, Any]:
        return {
            "index": active.opened.name,
            "version": active.opened.version,
            "encoder_fingerprint": active.opened.encoder_fingerprint,
            "quality": active.quality,
        }

    @staticmethod
    def _candidates(active: _Loaded, scores: np.ndarray, tiles: np.ndarray) -> list[dict[str, Any]]:
        out = []
        for tile_id, score in zip(tiles, scores, strict=True):
            if tile_id is None:
                continue
            position = active.opened.position(tile_id)
            out.append(
                {
                    "tile_id": tile_id,
                    "score": float(score),
                    "lat": _coordinate(active.opened.lat[position]),
                    "lon": _coordinate(active.opened.lon[position]),
                }
            )
        return out
