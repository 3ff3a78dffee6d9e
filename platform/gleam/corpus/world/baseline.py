"""The non-triviality check: how far colour histograms get at matching a world's queries to its tiles.

A corpus that colour statistics solved would teach a model nothing about geometry. The ranking is
scored by the platform's own metrics (`gleam.retrieval.metrics`), with their pessimistic tie rule, so
a baseline figure and an evaluation figure mean the same thing.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from gleam import storage
from gleam.corpus.world.layout import MANIFEST_FILE
from gleam.retrieval.metrics import retrieval_metrics

METRICS = ("intersection", "chi2")


@dataclass
class BaselineResult:
    modality: str
    queries: int
    gallery: int
    recall: dict[int, float] = field(default_factory=dict)  # fraction of queries, per k


def colour_histogram(img: np.ndarray, bins: int = 8) -> np.ndarray:
    """Normalised 3-D RGB histogram (bins^3 values) of a uint8 image."""
    q = (img.reshape(-1, 3).astype(np.int64) * bins) // 256
    flat = (q[:, 0] * bins + q[:, 1]) * bins + q[:, 2]
    hist = np.bincount(flat, minlength=bins**3).astype(np.float64)
    return hist / hist.sum()


def histogram_similarity(queries: np.ndarray, gallery: np.ndarray, metric: str) -> np.ndarray:
    """(queries x gallery) similarity: histogram intersection or negative chi-square distance."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    out = np.empty((len(queries), len(gallery)))
    for i, q in enumerate(queries):
        if metric == "intersection":
            out[i] = np.minimum(q[None], gallery).sum(axis=1)
        else:
            out[i] = -(((q[None] - gallery) ** 2) / (q[None] + gallery + 1e-12)).sum(axis=1)
    return out


def histogram_baseline(
    uri: str, metric: str = "intersection", bins: int = 8, ks: tuple[int, ...] = (1, 5)
) -> list[BaselineResult]:
    """Recall@k of matching each query to every satellite tile of a world corpus by colour histogram."""
    root = storage.normalize(uri)
    rows = list(csv.DictReader(io.StringIO(storage.read_text(storage.join(root, MANIFEST_FILE)))))

    def load(rel: str) -> np.ndarray:
        data = storage.read_bytes(storage.join(root, rel))
        return colour_histogram(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), bins)

    tiles = sorted({r["tile_uri"] for r in rows})
    tile_pos = {t: i for i, t in enumerate(tiles)}
    gallery = np.stack([load(t) for t in tiles])
    results = []
    for modality in dict.fromkeys(r["modality"] for r in rows if r["modality"]):
        picked = [r for r in rows if r["modality"] == modality]
        sims = histogram_similarity(np.stack([load(r["query_uri"]) for r in picked]), gallery, metric)
        truth = np.array([tile_pos[r["tile_uri"]] for r in picked])
        scores = retrieval_metrics(sims, truth, np.arange(len(tiles)), ks=ks)
        recall = {k: float(scores[f"R@{k}"]) / 100 for k in ks}
        results.append(BaselineResult(modality, len(picked), len(tiles), recall))
    return results
