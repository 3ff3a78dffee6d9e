"""Run autofaiss's `build_index` once, inside its own virtual environment, and report its own timings.

autofaiss pins numpy<2 and pandas<3, which the platform's environment cannot hold, so
`benchmarks/index_build.py` runs this file with `.venv-autofaiss/bin/python` (made by `make bench-venv`).
It imports neither gleam nor anything outside autofaiss's own dependencies. autofaiss logs each stage
through its `Timeit` context manager (`>>> Finished "<stage>" in <s> secs`); those lines are captured,
so training and adding can be compared with the platform's `train_and_add` without autofaiss's
search-parameter tuning, metrics and index write, which it runs inside the same call.

    .venv-autofaiss/bin/python benchmarks/autofaiss_build.py --embeddings DIR --key HNSW32,Flat \\
        --index-path knn.index --result result.json
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import resource
import time
import traceback
from pathlib import Path

_FINISHED = re.compile(r'>>> Finished "(?P<stage>.*)" in (?P<seconds>[0-9.]+) secs')


class StageTimes(logging.Handler):
    """Keeps the seconds of every finished autofaiss `Timeit` stage, by its message."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.stages: list[tuple[str, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = _FINISHED.search(record.getMessage())
        if match:
            self.stages.append((match["stage"], float(match["seconds"])))

    def total(self, *prefixes: str) -> float:
        return sum(s for stage, s in self.stages if stage.startswith(prefixes))


def split_stages(times: StageTimes) -> dict[str, float]:
    """Train and add alone: autofaiss's "Adding" stage also tunes, measures and writes the index."""
    adding = times.total("-> Adding the vectors to the index")
    after_add = times.total("Computing best hyperparameters", "Compute fast metrics", "Saving the index")
    return {
        "train": times.total(
            "-> Instanciate the index", "-> Extract training vectors", "-> Training the index"
        ),
        "add": max(adding - after_add, 0.0),
        "tune": times.total("Computing best hyperparameters"),
        "metrics": times.total("Compute fast metrics"),
        "write": times.total("Saving the index"),
        "pipeline": times.total("Launching the whole pipeline"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embeddings", required=True, help="folder of .npy files (float32 rows)")
    parser.add_argument("--key", required=True, help="index key, passed to autofaiss as index_key")
    parser.add_argument("--index-path", required=True)
    parser.add_argument("--result", required=True, help="JSON file this writes")
    parser.add_argument("--threads", type=int, default=None, help="nb_cores (OpenMP threads)")
    parser.add_argument("--max-index-memory", default="8G")
    parser.add_argument("--memory-available", default="16G")
    args = parser.parse_args()

    times = StageTimes()
    logging.getLogger("autofaiss").addHandler(times)
    result: dict[str, object] = {"key": args.key}
    started = time.perf_counter()
    try:
        import autofaiss
        import faiss
        from autofaiss import build_index

        result["versions"] = {"autofaiss": _version("autofaiss", autofaiss), "faiss": faiss.__version__}
        index, infos = build_index(
            embeddings=args.embeddings,
            index_path=args.index_path,
            index_infos_path=str(Path(args.result).with_suffix(".infos.json")),
            index_key=args.key,
            metric_type="ip",
            max_index_memory_usage=args.max_index_memory,
            current_memory_available=args.memory_available,
            nb_cores=args.threads,
            make_direct_map=False,
            should_be_memory_mappable=False,
            save_on_disk=True,
        )
        if index is None:
            result["error"] = "build_index returned no index (see its log: memory estimate or key refused)"
        result["infos"] = infos or {}
    except Exception as exc:  # reported to the benchmark, which prints why autofaiss has no figures
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc(limit=8)
    result["wall_seconds"] = time.perf_counter() - started
    result["seconds"] = split_stages(times)
    result["stages"] = times.stages
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(args.result).write_text(json.dumps(result, indent=2, default=str))


def _version(name: str, module: object) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return str(getattr(module, "__version__", "unknown"))


if __name__ == "__main__":
    main()
