"""SatelliteIndex: top-k over the published index, following CURRENT without dropping a request.

A new version is opened (checksum, encoder fingerprint, mmap, tile lookup) in a background thread while
the old one keeps answering; the swap is one attribute assignment, and a request holds a reference to
the version it started with, so none fails or mixes versions. A version built with another encoder is
refused and the replica keeps serving the one it has (and says so in `status`). CURRENT is polled every
`poll_seconds`; `reconfigure` (Serve `user_config`) can pin a version or change the period at run time.
Every answer carries the version's `quality` (`gleam.index.calibrate.index_quality`: collapsed tile
embeddings or a calibration at chance, from meta.json; unknown for indexes built before they were
recorded), so a client can see that an index's scores cannot tell places apart.

An explanation needs several facts from the index (the tile's image and coordinates, the calibration and
fitted confidence for the modality, the tile's rank): `context` (and `search(..., explain=modality)` for
the top candidate) returns all of them from one version in one call, with that version, so a request
cannot take its tile from one version and its calibration from the next.

`search_many` with the query modality of each row also gives each answer its `location` (serve.locating:
`gleam.index.location.estimate_location` on the candidates and the meta.json of the version searched),
and to a row that asks for sub-tile refinement, the top tile's image and geometry and that version's meta,
so the encoder refines on the same version without another call. Candidates carry their tile's ground
geometry (gsd_m, width, height; None where the index does not know it).

`check_health` asks the loaded index the question it answered right after its checksum was verified (a
fixed probe vector) and fails when the answer changed, the index is empty or its tile map is out of step,
so Serve replaces a replica whose index broke instead of routing requests to it.
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
RANK_DEPTH = 100  # how many candidates are searched for the rank of an explained tile
CANARY_K = 5


@dataclass(frozen=True)
class Canary:
    """A fixed question to the index and the answer it gave once verified: `check` asks it again."""

    probe: np.ndarray  # (1, dim) unit vector, the same for every version of a dimension
    tiles: tuple[str, ...]
    scores: np.ndarray

    @classmethod
    def record(cls, opened: Any) -> Canary:
        probe = np.random.default_rng(0).standard_normal((1, opened.dim)).astype(np.float32)
        probe /= np.linalg.norm(probe)
        scores, tiles = opened.search(probe, CANARY_K)
        found = tuple(t for t in tiles[0] if t is not None)
        if not found:
            raise RuntimeError(f"index {opened.name} {opened.version} is empty: a search finds no tile")
        return cls(probe, found, scores[0][: len(found)])

    def check(self, opened: Any) -> None:
        """Raise RuntimeError when the index is empty, out of step with its tiles, or answers differently."""
        where = f"index {opened.name} {opened.version}"
        total = int(opened.index.ntotal)
        if total == 0 or total != len(opened):
            raise RuntimeError(f"{where}: {total} vectors for {len(opened)} tiles")
        scores, tiles = opened.search(self.probe, CANARY_K)
        got = tuple(t for t in tiles[0] if t is not None)
        if got != self.tiles or not np.allclose(scores[0][: len(got)], self.scores, atol=1e-4):
            raise RuntimeError(
                f"{where} no longer gives the answer it gave when loaded: {list(got)} instead of "
                f"{list(self.tiles)}"
            )


@dataclass(frozen=True)
class _Loaded:
    opened: Any  # gleam.index.catalog.OpenedIndex
    tiles: Any  # gleam.index.tiles.TileImages
    loaded_at: float
    quality: dict[str, Any]  # gleam.index.calibrate.index_quality over all modalities
    canary: Canary


def _location_k(meta: dict[str, Any]) -> int:
    """How many candidates the version's location radius was fitted with (0: no radius fitted)."""
    fitted = meta.get("location") or {}
    return int(fitted.get("k") or 0)


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
        canary = Canary.record(opened)  # refuses an empty index
        return _Loaded(opened, TileImages(opened.meta["corpus"]), time.time(), quality, canary)

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

    def search(self, vector: np.ndarray, k: int, explain: str | None = None) -> dict[str, Any]:
        """Top-k; with `explain` (the query modality), also the top candidate's `context`, same version."""
        return self.search_many(np.atleast_2d(vector), [k], [explain])[0]

    def search_many(
        self,
        vectors: np.ndarray,
        ks: list[int],
        explains: list[str | None],
        modalities: list[str] | None = None,
        refines: list[bool | str] | None = None,
    ) -> list[dict[str, Any]]:
        """`search` for a batch of queries (B, dim), all from one version: one FAISS call per distinct k
        (an approximate index may answer a larger k differently, so no k is cut from another's).

        With `modalities` (each row's query modality) every answer has `location`, estimated from its
        candidates and this version's meta.json (serve.locating); a row whose `refines` entry asks for
        sub-tile refinement, where it can apply, also gets the private `refine` block the encoder turns
        into the refined location (the top tile's image and geometry, this version's meta pieces)."""
        active = self._active
        vectors = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        answers: list[dict[str, Any]] = [{} for _ in ks]
        # the location fuses as many candidates as its radius was fitted with (meta.location.k), so a
        # row whose k is smaller is searched that deep and answered with its first k: the depth depends
        # only on the row's own k and the version, never on the other rows of the batch
        fused_k = _location_k(active.opened.meta) if modalities is not None else 0
        depths = [max(k, fused_k) for k in ks]
        for depth in sorted(set(depths)):
            rows = [row for row, wanted in enumerate(depths) if wanted == depth]
            scores, tiles = active.opened.search(vectors[rows], depth)
            for at, row in enumerate(rows):
                ranked = self._candidates(active, scores[at], tiles[at])
                candidates = ranked[: ks[row]]
                found = {**self._label(active), "candidates": candidates}
                if explains[row] is not None and candidates:
                    found["context"] = self._context(
                        active, vectors[row : row + 1], explains[row], candidates[0]["tile_id"]
                    )
                if modalities is not None:
                    refine = refines[row] if refines is not None else False
                    found.update(self._location(active, ranked, modalities[row], refine))
                answers[row] = found
        return answers

    @staticmethod
    def _location(
        active: _Loaded, candidates: list[dict[str, Any]], modality: str, refine: bool | str
    ) -> dict[str, Any]:
        """`location` of one answer and, when refinement is wanted and can apply, the `refine` block."""
        from serve.locating import REFINE_KEY, locate, refine_input, wants_refinement, with_reason

        meta = active.opened.meta
        location = locate(candidates, modality, meta)
        top = candidates[0] if candidates else None
        wanted, why_not = wants_refinement(location, top, meta, modality, refine)
        image = active.tiles.get(top["tile_id"]) if wanted and top is not None else None
        if wanted and image is None:
            why_not = "Not refined: the top tile's image is not held by this index."
        out: dict[str, Any] = {"location": with_reason(location, why_not).to_dict()}
        if image is not None and top is not None:
            out[REFINE_KEY] = refine_input(top, image, meta, candidates)
        return out

    def context(self, vector: np.ndarray, modality: str, tile_id: str | None) -> dict[str, Any]:
        """What one explanation needs from one version: its label, `tile` (None when it is not held or
        not named) and `evidence` (calibration, fitted confidence, quality, and rank/margin/depth)."""
        return self._context(self._active, vector, modality, tile_id)

    def tile(self, tile_id: str) -> dict[str, Any] | None:
        """The tile's JPEG and coordinates, or None when this index does not hold it."""
        return self._tile(self._active, tile_id)

    @staticmethod
    def _tile(active: _Loaded, tile_id: str) -> dict[str, Any] | None:
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
        """Fails when the follower died or the loaded index no longer answers as it did when verified."""
        if not self._poller.is_alive():
            raise RuntimeError(f"index {self.name}: the thread following CURRENT has stopped")
        active = self._active
        active.canary.check(active.opened)

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

    @classmethod
    def _context(
        cls, active: _Loaded, vector: np.ndarray, modality: str, tile_id: str | None
    ) -> dict[str, Any]:
        from gleam.index.calibrate import evidence_facts

        evidence = evidence_facts(active.opened.meta, modality)
        evidence.update(rank=None, margin=None, depth=None)
        tile = cls._tile(active, tile_id) if tile_id is not None else None
        if tile is not None:
            evidence.update(cls._rank(active, vector, tile_id))
        return {**cls._label(active), "tile": tile, "evidence": evidence}

    @staticmethod
    def _rank(active: _Loaded, vector: np.ndarray, tile_id: str) -> dict[str, Any]:
        """Where `tile_id` ranks among the RANK_DEPTH best candidates (None beyond), and its margin."""
        depth = max(2, min(RANK_DEPTH, len(active.opened)))
        scores, tiles = active.opened.search(vector, depth)
        ranked = [(t, float(s)) for t, s in zip(tiles[0], scores[0], strict=True) if t is not None]
        ids = [t for t, _ in ranked]
        rank = ids.index(tile_id) + 1 if tile_id in ids else None
        margin = None
        if rank is not None:
            others = [s for t, s in ranked if t != tile_id]
            margin = ranked[rank - 1][1] - others[0] if others else None
        return {"rank": rank, "margin": margin, "depth": depth}

    @staticmethod
    def _candidates(active: _Loaded, scores: np.ndarray, tiles: np.ndarray) -> list[dict[str, Any]]:
        """tile_id, score, lat, lon and the tile's ground geometry (gsd_m, width, height; None where the
        index does not know them, as in one built before they were recorded)."""
        out = []
        for tile_id, score in zip(tiles, scores, strict=True):
            if tile_id is None:
                continue
            position = active.opened.position(tile_id)
            out.append({"tile_id": tile_id, "score": float(score), **active.opened.geometry(position)})
        return out
