"""The evaluation job: embed one split of a prepared corpus, search it exactly, report per-modality metrics.

Gallery = every satellite tile of the split (distractors included); queries = the split's queries of
each modality, labelled by the tile_id of their positive. Tiles go into a FAISS `IndexFlatIP` over unit
vectors (exact cosine search, the same kind of search the served index is validated against), and the
metrics are computed from that search: each chunk of queries is searched with k = gallery size, the
scores are scattered back into a dense (chunk x gallery) similarity block, and the block goes through
`retrieval_metrics` (University-1652 convention, pessimistic ties). Chunks keep memory bounded for
large galleries; their results are combined weighted by the number of queries each evaluated.

Images are streamed from Parquet in batches and only ids and vectors are kept, so a large test split
does not have to fit in memory as JPEG bytes; the few images of the retrieval grid are read back by id.
Embedding is a plain in-process loop: evaluation runs on one split, and the Ray Data actor pool of the
index job is not worth its start-up cost here.

With `index` set, the split's queries are searched through a published index instead (its gallery is
every tile it holds) and compared with exact search over the same vectors: see `through_index`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from gleam.config import EvaluateConfig
from gleam.corpus.reader import PreparedCorpus, open_corpus
from gleam.corpus.schema import Modality
from gleam.errors import RefusedError
from gleam.evaluation.grid import Candidate, GridRow, retrieval_grid
from gleam.model import weights
from gleam.model.encoder import GleamEncoder
from gleam.model.spec import EncoderSpec
from gleam.model.transforms import eval_batch
from gleam.retrieval.metrics import COUNT_NAMES, retrieval_metrics
from gleam.retrieval.spread import Spread, embedding_spread
from gleam.tracking import JobRun, job_run

log = logging.getLogger(__name__)

GRID_TOP_K = 5
# similarities per dense block handed to retrieval_metrics (float32: 64 MiB)
_SIMILARITY_BUDGET = 1 << 24
# MLflow metric names allow neither "@" nor "%": R@1 -> R_at_1, R@1% -> R_at_1pct
_MLFLOW_NAME = str.maketrans({"@": "_at_", "%": "pct"})
# vectors, k -> (scores (Q, k), tile ids (Q, k) object, None in empty slots), best first
SearchFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


class EmptySplitError(RefusedError, ValueError):
    """The requested split has no tiles, or no queries of a requested modality: nothing to evaluate."""


@dataclass(frozen=True)
class Embedded:
    """Ids, positive labels and unit vectors of one side of the search, sorted by id (deterministic)."""

    ids: list[str]
    labels: list[str]
    vectors: np.ndarray  # (N, D) float32, L2-normalised


@dataclass(frozen=True)
class IndexComparison:
    """The published index searched, and exact search over its own vectors at the same depth."""

    name: str
    version: str
    index_key: str
    search_params: dict[str, int]
    depth: int  # results per query on both sides
    exact: dict[str, dict[str, float]]
    gap: dict[str, dict[str, float]]  # index minus exact, in percentage points


@dataclass(frozen=True)
class EvaluationResult:
    """Per-modality metrics (percentages, University-1652 names: R@1, R@5, R@10, R@1%, AP).

    Through an index, `metrics` are the index's and `index` holds exact search and the gap.
    """

    metrics: dict[str, dict[str, float]]
    gallery_size: int
    query_counts: dict[str, int]
    run_id: str | None
    split: str
    encoder_fingerprint: str
    index: IndexComparison | None = field(default=None)
    spread: Spread | None = field(default=None)  # of the gallery's tile embeddings

    @property
    def chance_r1(self) -> float:
        """R@1 of a random ranking, the floor any trained encoder must clear."""
        return 100.0 / self.gallery_size


def mlflow_metric_name(modality: str, metric: str) -> str:
    """`drone`, `R@1` -> `drone.R_at_1` (MLflow rejects `@` and `%` in metric names)."""
    return f"{modality}.{metric.translate(_MLFLOW_NAME)}"


def evaluate(config: EvaluateConfig) -> EvaluationResult:
    """Run the evaluation described by `config` and log it as one MLflow run."""
    corpus = open_corpus(config.corpus)  # CorpusNotReady before any model is loaded
    modalities = _modalities(corpus, config)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    encoder, spec, info = weights.load(config.encoder, map_location=device)
    tags = {"gleam.encoder_fingerprint": info.fingerprint, "gleam.corpus": corpus.uri}
    if config.index is not None:
        from gleam.evaluation import through_index

        # another encoder's index is refused here, before a run is opened or anything is embedded
        opened = through_index.open_published(config, info.fingerprint)
        with job_run("evaluate", config, config.tracking, tags=tags | through_index.tags(opened)) as run:
            run.log_params({"encoder_uri": info.uri, "encoder_model_version": info.model_version})
            return through_index.evaluate_through(
                config, corpus, modalities, encoder, spec, info, opened, run
            )
    with job_run("evaluate", config, config.tracking, tags=tags) as run:
        run.log_params({"encoder_uri": info.uri, "encoder_model_version": info.model_version})
        gallery = _embed(
            corpus, "tiles", _split_filter(config.split), Modality.SATELLITE, encoder, spec, config.batch_size
        )
        if not gallery.ids:
            raise EmptySplitError(f"split {config.split!r} of {corpus.uri} has no tiles")
        index = _flat_index(gallery.vectors)
        spread = gallery_spread(gallery.vectors)
        run.log_metrics(
            {"gallery_size": len(gallery.ids), "chance.R_at_1": 100.0 / len(gallery.ids), **spread.metrics()}
        )
        metrics: dict[str, dict[str, float]] = {}
        counts: dict[str, int] = {}
        for modality in modalities:
            queries = split_queries(corpus, config.split, modality, encoder, spec, config.batch_size)
            metrics[modality.value] = search_metrics(index, queries, gallery.ids, config.ks)
            counts[modality.value] = len(queries.ids)
            _log_modality(run, modality.value, metrics[modality.value])
            if config.grid_queries and run.active:
                search = exact_search(index, gallery.ids)
                title = f"{modality.value} -> satellite: top {GRID_TOP_K} of {index.ntotal}"
                grid = _grid(corpus, search, index.ntotal, queries, config.grid_queries, title)
                run.log_image(grid, f"retrieval_grid/{modality.value}.png")
        run.log_dict(
            {
                "split": config.split,
                "gallery_size": len(gallery.ids),
                "metrics": metrics,
                "spread": spread.to_dict(),
            },
            "metrics.json",
        )
    return EvaluationResult(
        metrics, len(gallery.ids), counts, run.run_id, config.split, info.fingerprint, spread=spread
    )


def split_metrics(
    corpus: PreparedCorpus,
    encoder: GleamEncoder,
    spec: EncoderSpec,
    split: str,
    modalities: Sequence[Modality | str] | None = None,
    batch_size: int = 64,
    ks: Sequence[int] = (1, 5, 10),
) -> tuple[dict[str, dict[str, float]], int, Spread]:
    """(metrics per modality, gallery size, the gallery's spread) of an in-memory encoder: training's
    validation, no MLflow."""
    present = _queries_per_modality(corpus, split)
    wanted = [Modality(m) for m in (modalities or sorted(present)) if present.get(Modality(m).value)]
    gallery = _embed(corpus, "tiles", _split_filter(split), Modality.SATELLITE, encoder, spec, batch_size)
    if not gallery.ids or not wanted:
        raise EmptySplitError(f"split {split!r} of {corpus.uri} has no tiles or no queries to validate with")
    index = _flat_index(gallery.vectors)
    metrics = {}
    for modality in wanted:
        where = _split_filter(split) & (pc.field("modality") == modality.value)
        queries = _embed(corpus, "queries", where, modality, encoder, spec, batch_size)
        metrics[modality.value] = search_metrics(index, queries, gallery.ids, ks)
    return metrics, len(gallery.ids), gallery_spread(gallery.vectors)


def gallery_spread(vectors: np.ndarray) -> Spread:
    """The spread of a gallery's tile embeddings, with a warning when they have collapsed."""
    spread = embedding_spread(vectors)
    if spread.collapsed:
        log.warning(
            "%s: the encoder maps every tile to nearly the same vector and cannot tell places apart",
            spread.summary(),
        )
    return spread


def split_queries(
    corpus: PreparedCorpus,
    split: str,
    modality: Modality,
    encoder: GleamEncoder,
    spec: EncoderSpec,
    batch_size: int,
) -> Embedded:
    """The split's queries of one modality, embedded; none at all is an EmptySplitError."""
    where = _split_filter(split) & (pc.field("modality") == modality.value)
    queries = _embed(corpus, "queries", where, modality, encoder, spec, batch_size)
    if not queries.ids:
        raise EmptySplitError(f"split {split!r} of {corpus.uri} has no {modality.value} queries")
    return queries


# --- what to evaluate ---------------------------------------------------------------------------------


def _split_filter(split: str) -> pc.Expression:
    return pc.field("split") == split


def _modalities(corpus: PreparedCorpus, config: EvaluateConfig) -> list[Modality]:
    """The requested modalities, or every query modality the split holds; empty splits fail here, early."""
    present = _queries_per_modality(corpus, config.split)
    if not present:
        raise EmptySplitError(f"split {config.split!r} of {corpus.uri} has no queries")
    if config.modalities is None:
        return [Modality(m) for m in sorted(present)]
    missing = [m.value for m in config.modalities if not present.get(m.value)]
    if missing:
        held = ", ".join(f"{m}: {n}" for m, n in sorted(present.items()))
        raise EmptySplitError(
            f"split {config.split!r} of {corpus.uri} has no {', '.join(missing)} queries ({held})"
        )
    return list(config.modalities)


def _queries_per_modality(corpus: PreparedCorpus, split: str) -> dict[str, int]:
    """Query counts of the split by modality, from the Parquet files (the manifest could be older)."""
    table = corpus.read("queries", ["modality"], filter=_split_filter(split))
    if not table.num_rows:
        return {}
    counts = pc.value_counts(table["modality"]).to_pylist()
    return {row["values"]: int(row["counts"]) for row in counts}


# --- embedding ------------------------------------------------------------------------------------------


def _embed(
    corpus: PreparedCorpus,
    part: str,
    where: pc.Expression,
    modality: Modality,
    encoder: GleamEncoder,
    spec: EncoderSpec,
    batch_size: int,
) -> Embedded:
    """Stream one part's images through the encoder; keep ids, labels and vectors only."""
    id_column = "tile_id" if part == "tiles" else "query_id"
    ids: list[str] = []
    labels: list[str] = []
    chunks: list[np.ndarray] = []
    columns = list(dict.fromkeys([id_column, "tile_id", "image"]))
    for batch in _batches(corpus, part, columns, where, batch_size):
        ids.extend(batch.column(id_column).to_pylist())
        labels.extend(batch.column("tile_id").to_pylist())
        chunks.append(embed_images(encoder, spec, batch.column("image").to_pylist(), modality))
    if not ids:
        return Embedded([], [], np.zeros((0, encoder.embedding_dim), dtype=np.float32))
    order = np.argsort(np.asarray(ids, dtype=object), kind="stable")
    vectors = np.concatenate(chunks)[order]
    return Embedded([ids[i] for i in order], [labels[i] for i in order], vectors)


def _batches(
    corpus: PreparedCorpus, part: str, columns: list[str], where: pc.Expression, batch_size: int
) -> Iterator[pa.RecordBatch]:
    for batch in corpus.dataset(part).to_batches(columns=columns, filter=where, batch_size=batch_size):
        if batch.num_rows:
            yield batch


@torch.no_grad()
def embed_images(
    encoder: GleamEncoder, spec: EncoderSpec, images: Sequence[bytes], modality: Modality
) -> np.ndarray:
    """JPEG bytes of one modality -> unit float32 vectors, with the eval transform every stage shares."""
    device = next(encoder.parameters()).device
    batch = eval_batch(images, modality, spec).to(device)
    vectors = encoder.encode(batch, modality).float().cpu().numpy()
    return _normalized(vectors)


def _normalized(vectors: np.ndarray) -> np.ndarray:
    """Unit rows in float32 (the encoder normalises already; a flat IP index must not depend on it)."""
    out = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)


# --- search and metrics ----------------------------------------------------------------------------------


def _flat_index(vectors: np.ndarray):  # -> faiss.IndexFlatIP
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return index


def exact_search(index, gallery_ids: Sequence[str]) -> SearchFn:
    """A flat index as a SearchFn: FAISS positions turned into the gallery's ids."""
    ids = np.asarray(list(gallery_ids), dtype=object)

    def search(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, positions = index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
        found = positions >= 0
        tiles = np.full(positions.shape, None, dtype=object)
        tiles[found] = ids[positions[found]]
        return np.where(found, scores, -np.inf).astype(np.float32), tiles

    return search


def similarity_block(index, vectors: np.ndarray) -> np.ndarray:
    """Exact FAISS search with k = gallery size, scattered back to a dense (queries x gallery) matrix."""
    scores, ids = index.search(np.ascontiguousarray(vectors, dtype=np.float32), index.ntotal)
    dense = np.empty_like(scores)
    np.put_along_axis(dense, ids, scores, axis=1)
    return dense


def search_metrics(
    index, queries: Embedded, gallery_ids: Sequence[str], ks: Sequence[int]
) -> dict[str, float]:
    """retrieval_metrics over chunks of queries, combined exactly (weighted by evaluated queries)."""
    chunk = max(1, _SIMILARITY_BUDGET // max(index.ntotal, 1))
    parts = []
    for start in range(0, len(queries.ids), chunk):
        sim = similarity_block(index, queries.vectors[start : start + chunk])
        parts.append(retrieval_metrics(sim, queries.labels[start : start + chunk], list(gallery_ids), ks))
    return combine(parts)


def combine(parts: Sequence[dict[str, float | int]]) -> dict[str, float]:
    """Average percentages over chunks by how many queries each evaluated; counts are summed."""
    counts = [name for name in COUNT_NAMES if name in parts[0]]
    evaluated = sum(int(p["queries"]) for p in parts)
    combined: dict[str, float] = {}
    for name in (n for n in parts[0] if n not in counts):
        total = sum(float(p[name]) * int(p["queries"]) for p in parts if p["queries"])
        combined[name] = total / evaluated if evaluated else math.nan
    for name in counts:
        combined[name] = float(sum(int(p[name]) for p in parts))
    return combined


def _log_modality(run: JobRun, modality: str, metrics: dict[str, float], prefix: str = "") -> None:
    run.log_metrics(
        {prefix + mlflow_metric_name(modality, k): v for k, v in metrics.items() if not math.isnan(v)}
    )
    log.info("%s%s: %s", prefix, modality, ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))


# --- the retrieval grid ----------------------------------------------------------------------------------


def _grid(corpus: PreparedCorpus, search: SearchFn, depth: int, queries: Embedded, n: int, title: str):
    """The first `n` queries (by id) with their top tiles; rank of the positive within `depth` results.

    Tiles the corpus does not hold (an index built from another corpus) are left out of the rows.
    """
    n = min(n, len(queries.ids))
    scores, ranked = search(queries.vectors[:n], depth)
    wanted_tiles = sorted({t for t in ranked[:, :GRID_TOP_K].reshape(-1).tolist() if t is not None})
    tile_images = _images(corpus, "tiles", "tile_id", wanted_tiles)
    query_images = _images(corpus, "queries", "query_id", queries.ids[:n])
    rows = []
    for i in range(n):
        positive = queries.labels[i]
        listed = ranked[i].tolist()
        rank = listed.index(positive) + 1 if positive in listed else None
        candidates = [
            Candidate(tile_images[t], t, float(s), t == positive)
            for t, s in zip(listed[:GRID_TOP_K], scores[i, :GRID_TOP_K], strict=True)
            if t in tile_images
        ]
        rows.append(GridRow(query_images[queries.ids[i]], queries.ids[i], candidates, rank))
    return retrieval_grid(rows, title=title)


def _images(corpus: PreparedCorpus, part: str, id_column: str, ids: Sequence[str]) -> dict[str, bytes]:
    table = corpus.read(part, [id_column, "image"], filter=pc.field(id_column).isin(list(ids)))
    return dict(zip(table.column(id_column).to_pylist(), table.column("image").to_pylist(), strict=True))
