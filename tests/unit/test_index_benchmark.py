"""The pieces of benchmarks/index_build.py that its figures rest on, at toy sizes (no autofaiss, no Ray).

The benchmark itself takes an hour; these checks keep its synthetic vectors, key translation and
autofaiss log parsing honest between runs.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import autofaiss_build  # noqa: E402
import index_build  # noqa: E402


def test_synthetic_vectors_are_seeded_unit_rows_written_in_chunks(tmp_path: Path) -> None:
    synthetic = index_build.Synthetic(clusters=16, rank=8, chunk=1000)
    path = synthetic.write(tmp_path / "a" / "embeddings.npy", 2500, 32)
    again = synthetic.write(tmp_path / "b" / "embeddings.npy", 2500, 32)
    vectors = np.load(path, mmap_mode="r")
    assert vectors.shape == (2500, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(vectors, np.load(again))
    queries = synthetic.queries(50, 32)
    # clustered: a fresh query is far closer to its nearest vector than to a random one
    sims = queries @ np.asarray(vectors).T
    assert sims.max(axis=1).mean() > sims.mean() + 0.3
    assert not np.isin(queries[:, 0], vectors[:, 0]).any()  # queries are not rows of the set


def test_plans_and_autofaiss_keys() -> None:
    assert index_build.plan_for("flat", 100_000, 512).key == "Flat"
    assert index_build.plan_for("hnsw", 100_000, 512).key == "HNSW32,Flat"
    assert index_build.plan_for("ivf", 100_000, 512).key == "IVF1024,Flat"
    key = index_build.plan_for("ivfpq", 100_000, 512).key
    assert key == "OPQ64,IVF1024,PQ64"
    assert index_build.autofaiss_key(key, 512) == "OPQ64_512,IVF1024,PQ64"
    assert index_build.autofaiss_key("HNSW32,Flat", 512) == "HNSW32,Flat"
    assert index_build.parse_params("nprobe=64,ht=2048") == {"nprobe": 64, "ht": 2048}
    with pytest.raises(ValueError, match="unknown kind"):
        index_build.plan_for("lsh", 10, 8)


def test_measure_gives_exact_search_full_recall() -> None:
    import faiss

    synthetic = index_build.Synthetic(clusters=8, rank=4)
    centres, subspace = synthetic.basis(16)
    vectors = synthetic.draw(np.random.default_rng(0), 2000, centres, subspace)
    measure = index_build.Measure(vectors, synthetic.queries(20, 16), min_seconds=0.0)
    index = faiss.IndexFlatIP(16)
    index.add(vectors)
    recall, qps = measure.search(index, {})
    assert recall == 1.0 and qps > 0


def test_autofaiss_stage_times_split_train_add_from_its_tuning_and_write() -> None:
    times = autofaiss_build.StageTimes()
    logger = logging.getLogger("autofaiss.test")
    logger.addHandler(times)
    logger.setLevel(logging.INFO)
    for stage, seconds in [
        ("-> Extract training vectors", 1.0),
        ("-> Training the index with 1000 vectors of dim 8", 4.0),
        ("Computing best hyperparameters for index /x/knn.index", 2.0),
        ("Compute fast metrics", 1.5),
        ("Saving the index on local disk", 0.5),
        ("-> Adding the vectors to the index", 10.0),
        ("Launching the whole pipeline", 16.0),
    ]:
        logger.info('\t>>> Finished "%s" in %.4f secs', stage, seconds)
    split = autofaiss_build.split_stages(times)
    assert split["train"] == 5.0 and split["add"] == 6.0 and split["tune"] == 2.0
    assert split["pipeline"] == 16.0


def test_the_worker_reports_the_build_checks_recall_next_to_fresh_queries(tmp_path: Path) -> None:
    """The worker runs the build job's check; the table sets it beside the fresh-query recall."""
    import json

    import faiss

    synthetic = index_build.Synthetic(clusters=32, rank=8, chunk=1000)
    path = synthetic.write(tmp_path / "embeddings.npy", 4000, 32)
    plan = index_build.plan_for("hnsw", 4000, 32)
    spec = {"vectors": str(path), "plan": index_build.asdict(plan), "threads": 1}
    spec |= {"index_path": str(tmp_path / "index.faiss"), "result": str(tmp_path / "result.json")}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    index_build.build_worker(str(tmp_path / "spec.json"))
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["recall_queries"] == 400 and "efSearch" in result["search_params"]
    measure = index_build.Measure(np.load(path), synthetic.queries(400, 32), min_seconds=0.0)
    fresh, _ = measure.search(faiss.read_index(spec["index_path"]), result["search_params"])
    build = index_build.Build("gleam", plan.key, params=result["search_params"])
    build.recall, build.build_recall = fresh, result["recall"]
    config = index_build.Config(4000, 32, "hnsw", builds=[build])
    [row] = index_build.agreement_rows([config])
    assert row[5] == f"{result['recall']:.3f}" and row[6] == f"{fresh:.3f}"
    assert abs(result["recall"] - fresh) <= 0.02  # 400 queries each: twice the benchmark's 0.01
