"""QueryEncoder: the GLEAM-C encoder behind `@serve.batch`, so concurrent requests share forward passes,
and, for `/v1/localize`, the search of the batch's vectors, so a request makes one hop from the ingress.

A request is the prepared JPEGs of one place in one modality; the batch groups every request's images
by modality (one forward per modality) and answers each request with its own fused unit vector
(`gleam.retrieval.fusion.fuse_set`, chosen per request): "mean", the normalised mean of its images'
embeddings (the centroid on the sphere, which keeps a set's inner products comparable to single
images'), or "agreement", each photo weighted by its agreement with the rest of the set, so an odd
photo out counts less. A set's answer reports the fusion and the per-photo weights.

Images become vectors through `gleam.model.embedding.embed_images` under its precision policy ("auto":
bf16/fp16 autocast on GPU, fp32 on CPU), the same path the index build embedded the tiles with, so a
query's similarity to a tile means here what it meant when the index and its calibration were built.
Images arrive as the ingress prepared them: (H, W, 3) uint8 arrays at the encoder's input size (ready
input: `load_resized` only copies them), or JPEG bytes.

`localize` embeds a batch and searches it in one step: with `search` args the replica holds its own
`SatelliteIndex` (the same class, following CURRENT the same way, one FAISS call per batch, no hop);
with only the `index` handle it sends the batch's vectors to the SatelliteIndex deployment in one call.
Every answer carries `timings_ms` (queue wait, forward, search, batch size), so the ingress can tell
where a request's time went.

Each localize answer has a `location` (serve.locating), estimated where the search happened from that
version's meta.json. A request asking for sub-tile refinement gets, where it can apply, the top tile
with its answer; the replica then computes the evidence heatmap of the query against it and moves the
estimate to the heatmap's peak (`refine` in `timings_ms`): one more pass of query and tile, only for
those requests, after their batch was answered and in a thread, so it delays no other request's answer.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from serve.index import SatelliteIndex
from serve.locating import REFINE_KEY, apply_refinement
from serve.settings import BatchSettings, Refine

ImageData = bytes | np.ndarray  # JPEG bytes, or a prepared (H, W, 3) uint8 array at the input size
EmbedRequest = tuple[str, list[ImageData]]  # (modality, images of one place)
FusedRequest = tuple[str, list[ImageData], str]  # (modality, images of one place, fusion)
# (modality, images of one place, k, explain modality or None, fusion, refine, perf_counter when it
# reached the replica)
LocalizeRequest = tuple[str, list[ImageData], int, str | None, str, Refine, float]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def fuse(vectors: np.ndarray, method: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors (n, d) of one place -> (fused unit vector (d,), per-photo weights (n,))."""
    from gleam.retrieval.fusion import fuse_set

    return fuse_set(vectors, method)


def _in_ray_worker() -> bool:
    """True in a Serve replica; asking Ray's runtime context elsewhere would start a local Ray instance."""
    import ray

    return ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE


@serve.deployment(
    name="QueryEncoder",
    ray_actor_options={"num_cpus": 1},
    max_ongoing_requests=64,
    autoscaling_config={"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 16},
    health_check_period_s=10,
    health_check_timeout_s=30,
)
class QueryEncoder:
    def __init__(
        self,
        encoder_uri: str,
        fingerprint: str,
        batching: BatchSettings | dict[str, Any],
        locations: dict[str, str] | None = None,
        search: dict[str, Any] | None = None,
        index: DeploymentHandle | None = None,
    ) -> None:
        """`search`: SatelliteIndex's arguments (store, name, fingerprint, version, poll_seconds) to search
        in this replica; else `index`, the SatelliteIndex deployment's handle, searches each batch."""
        import ray
        import torch

        from gleam import runtime_env
        from gleam.model import weights
        from gleam.model.embedding import resolve_precision

        runtime_env.apply(locations)  # the builder's registry, whatever this replica's folder

        if _in_ray_worker():  # a replica: threads for its CPU share; constructed in-process: torch's default
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
            torch.set_num_threads(max(1, round(cpus)))
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.encoder, self.spec, self.info = weights.load(
            encoder_uri, map_location=self.device, expect_fingerprint=fingerprint
        )
        self.precision = resolve_precision("auto", self.device.type)
        self.index = index
        self.local_index = (
            SatelliteIndex.func_or_class(**search, locations=locations) if search is not None else None
        )
        self.reconfigure({"batching": BatchSettings.model_validate(batching).model_dump()})

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """`user_config.batching` retunes batching without restarting the replica; `user_config.index`
        (`{"version", "poll_seconds"}`, as SatelliteIndex takes it) pins the replica's own index."""
        batching = BatchSettings.model_validate(user_config.get("batching") or {})
        for batched in (self.embed, self._localize_batch):
            batched.set_max_batch_size(batching.max_batch_size)
            batched.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)
        if self.local_index is not None and "index" in user_config:
            self.local_index.reconfigure(user_config["index"])

    def describe(self) -> dict[str, Any]:
        """What the ingress needs to validate uploads and label answers."""
        from gleam.corpus.schema import Modality

        return {
            "uri": self.info.uri,
            "fingerprint": self.info.fingerprint,
            "dim": self.info.embedding_dim,
            "model_name": self.info.model_name,
            "model_version": self.info.model_version,
            "backbone": self.spec.backbone,
            "sizes": {m.value: list(self.spec.size(m)) for m in Modality},
        }

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def embed(self, requests: list[EmbedRequest]) -> list[np.ndarray]:
        # the mean: /v1/explain's evidence (match_heatmap) fuses a set by its mean too
        return [vector for vector, _ in self._vectors([(m, images, "mean") for m, images in requests])]

    async def localize(
        self,
        modality: str,
        images: list[ImageData],
        k: int,
        explain: str | None = None,
        fusion: str = "mean",
        refine: Refine = False,
    ) -> dict:
        """SatelliteIndex.search's answer for one place's images, with its `location`, the `fusion`
        (method and per-photo weights) of a set, and `timings_ms` of this replica."""
        arrived = time.perf_counter()
        found = await self._localize_batch((modality, images, k, explain, fusion, refine, arrived))
        block = found.pop(REFINE_KEY, None)
        if block is not None:
            # after the batch, in a thread: the batch's other requests are answered meanwhile, and the
            # next batch's forward is not held up behind this request's extra pass
            refining = time.perf_counter()
            found["location"] = await asyncio.to_thread(self._refined, modality, images, block)
            found["timings_ms"]["refine"] = _ms(time.perf_counter() - refining)
        found["timings_ms"]["encoder"] = _ms(time.perf_counter() - arrived)
        return found

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def _localize_batch(self, requests: list[LocalizeRequest]) -> list[dict[str, Any]]:
        started = time.perf_counter()
        # on the event loop, on purpose: while a forward runs, arriving requests wait in the batch queue,
        # so with no batch wait the next batch is what queued meanwhile (Serve forms a batch as soon as
        # its loop is free, even while the previous one still runs, so a forward in a thread would leave
        # every batch at one request)
        fused = self._vectors([(modality, images, fusion) for modality, images, _, _, fusion, *_ in requests])
        vectors = np.stack([vector for vector, _ in fused])
        embedded = time.perf_counter()
        ks = [request[2] for request in requests]
        explains = [request[3] for request in requests]
        modalities = [request[0] for request in requests]
        refines = [request[5] for request in requests]
        if self.local_index is not None:
            answers = self.local_index.search_many(vectors, ks, explains, modalities, refines)
        else:
            if self.index is None:
                raise RuntimeError("QueryEncoder was given neither search arguments nor an index handle")
            answers = await self.index.search_many.remote(vectors, ks, explains, modalities, refines)
        searched = time.perf_counter()
        for request, answer, (_, weights) in zip(requests, answers, fused, strict=True):
            answer["timings_ms"] = {
                "queue": _ms(started - request[6]),
                "forward": _ms(embedded - started),
                "search": _ms(searched - embedded),
                "batch": len(requests),
            }
            if len(request[1]) > 1:  # a set: how it was fused, and each photo's say in it
                answer["fusion"] = {"method": request[4], "weights": [float(w) for w in weights]}
        return answers  # with the `refine` block of a request that asked, for `localize` to refine

    def _refined(self, modality: str, images: list[ImageData], refine: dict[str, Any]) -> dict[str, Any]:
        """The answer's location moved to the heatmap's peak of its images on the top tile."""
        from gleam.explain.evidence import match_heatmap

        grid = match_heatmap(self.encoder, self.spec, images, modality, refine["image"]).grid
        return apply_refinement(modality, refine, grid).to_dict()

    def _vectors(self, requests: list[FusedRequest]) -> list[tuple[np.ndarray, np.ndarray]]:
        """One forward per modality over every request's images -> each request's fused unit vector and
        its photos' weights, by the request's fusion."""
        by_modality: dict[str, list[tuple[int, ImageData]]] = defaultdict(list)
        for number, (modality, images, _) in enumerate(requests):
            by_modality[modality].extend((number, image) for image in images)
        per_request: dict[int, list[np.ndarray]] = defaultdict(list)
        for modality, items in by_modality.items():
            vectors = self._forward(modality, [image for _, image in items])
            for (number, _), vector in zip(items, vectors, strict=True):
                per_request[number].append(vector)
        return [fuse(np.stack(per_request[number]), requests[number][2]) for number in range(len(requests))]

    def _forward(self, modality: str, images: list[ImageData]) -> np.ndarray:
        from gleam.model.embedding import embed_images

        return embed_images(self.encoder, self.spec, images, modality, self.precision)

    def evidence(self, query_images: list[bytes], modality: str, tile_image: bytes, heatmap: bool) -> dict:
        """Similarity of the (fused) query to the tile, and where their feature maps agree."""
        from gleam.explain.evidence import heatmap_png, match_heatmap

        result = match_heatmap(self.encoder, self.spec, query_images, modality, tile_image)
        png = heatmap_png(result.grid, tile_image) if heatmap else None
        return {"similarity": float(result.similarity), "heatmap_png": png}

    def check_health(self) -> None:
        """A faulted GPU or a broken own index raises here, so Serve replaces the replica."""
        if self.local_index is not None:
            self.local_index.check_health()
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
