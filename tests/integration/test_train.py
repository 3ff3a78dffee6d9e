"""GLEAM-C training on the session's real Ray cluster: 2 workers, checkpoints, registration, re-runs.

Elsewhere: phase 2 starting from phase 1's registered version is run by the demo (tests/e2e/test_demo.py);
a killed GLEAM-C job resubmitted resumes from its S3 checkpoint (tests/e2e/test_train_job.py); a worker
killed mid-run is restarted from the last checkpoint in the GLEAM-X fine-tune's test, on the same
machinery (Ray Train's FailureConfig, gleam.shard_stream positions, gleam.state_io trainer state).

The run here uses similarity batches (batching.mode similarity, mined every 3 steps), so it also proves
the planned path: two segments (random-composed, then from the lists mined with segment 0's checkpoint),
each worker fed exactly its planned rows, the lists stored with the run, and the same batches composed
again from what was stored (what a resumed driver does)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gleam import storage
from gleam.model import weights
from gleam.training.composition import compose_plan
from gleam.training.phases import TrainRunExistsError, run_dir, run_training
from gleam.training.plan import new_composer, segment_uri, train_pair_refs
from tests.support.training import train_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def corpus(prepared_world) -> str:
    return prepared_world(24)


def logged_steps(client, run_id: str, key: str = "loss") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_two_workers_train_checkpoint_register_and_rerun(
    corpus: str, tmp_path: Path, experiment_name: str, mlflow_client
) -> None:
    batching = {"mode": "similarity", "mine_every_steps": 3, "neighbours": 4, "candidates": 6}
    # the workers take the cluster's 2 CPUs whole: a segment's plan datasets must not need a CPU then
    scaling = {"workers": 2, "cpus_per_worker": 1}
    config = train_config(corpus, tmp_path / "train", experiment_name, batching=batching, scaling=scaling)
    result = run_training(config)

    assert result.steps == 6 and result.model_version is not None and not result.already_done
    assert logged_steps(mlflow_client, result.run_id) == [1, 2, 3, 4, 5, 6]
    run = mlflow_client.get_run(result.run_id)
    assert run.data.tags["gleam.phase"] == "phase1" and run.data.params["total_steps"] == "6"
    assert {"val.drone.R_at_1", "val.panorama.AP", "logit_scale", "lr", "grad_norm"} <= set(run.data.metrics)
    assert {"val.spread.mean_cosine", "val.spread.effective_rank"} <= set(run.data.metrics)
    # both workers wrote their data position into the same (merged) checkpoint
    checkpoint = Path(result.checkpoint)
    assert sorted(p.name for p in (checkpoint / "data").glob("rank-*.json")) == ["rank-0.json", "rank-1.json"]
    position = json.loads((checkpoint / "data" / "rank-1.json").read_text())
    assert position["world_size"] == 2 and position["step"] == 6
    assert position["segment"] == 1 and len(position["last_batch"]) == config.batch_size
    check_planned_segments(config, corpus, result.checkpoint)
    assert not list(checkpoint.rglob("*.pt")) and not list(checkpoint.rglob("*.pkl"))
    # the registered version is loadable by alias and is the checkpoint's encoder
    _, _, info = weights.load(f"models:/{config.registry.name}@phase1")
    assert info.model_version == result.model_version
    assert info.fingerprint == weights.read_metadata(result.encoder_uri)["fingerprint"]

    again = run_training(config)  # the same config again: done already, nothing new
    assert again.already_done and again.model_version == result.model_version
    versions = mlflow_client.search_model_versions(f"name='{config.registry.name}'")
    assert len(versions) == 1
    with pytest.raises(TrainRunExistsError, match="another config"):
        run_training(config.model_copy(update={"steps": 7}))


def check_planned_segments(config, corpus_uri: str, final_checkpoint: str) -> None:
    """Segment 1 was composed from lists mined with segment 0's checkpoint, the workers trained on exactly
    its plan, and composing again from the stored records gives the same batches."""
    from gleam.corpus.reader import open_corpus

    folder = run_dir(config)
    first, second = (storage.read_json(segment_uri(folder, k)) for k in (0, 1))
    assert (first["start"], first["stop"], second["start"], second["stop"]) == (0, 3, 3, 6)
    assert first["neighbours_from"] == "random" and first["neighbours"] is None
    assert second["neighbours_from"] == first["checkpoint"]  # mined with segment 0's encoder
    mined = second["neighbours"]
    assert mined and all(tile not in others and others for tile, others in mined.items())
    refs = train_pair_refs(open_corpus(corpus_uri), ["drone", "panorama"])
    replay = new_composer(config, refs, None)
    compose_plan(replay, 0, 3, 2)
    assert replay.state() == second["composer"]  # segment 0 composed again: the same state
    composer = new_composer(config, refs, mined)
    composer.restore(second["composer"])
    plan = compose_plan(composer, 3, 6, 2).to_pylist()
    for rank in (0, 1):  # each worker's last trained batch is its share of step 5 of the plan
        trained = json.loads((Path(final_checkpoint) / "data" / f"rank-{rank}.json").read_text())
        planned = sorted((r for r in plan if r["rank"] == rank and r["step"] == 5), key=lambda r: r["pos"])
        assert trained["last_batch"] == [r["query_id"] for r in planned]
    for step in (3, 4, 5):  # the global batch (slot j of rank r is slot 2j + r): anchor, then a neighbour
        rows = sorted((r for r in plan if r["step"] == step), key=lambda r: (r["pos"], r["rank"]))
        assert rows[1]["tile_id"] in mined[rows[0]["tile_id"]][:6], step
