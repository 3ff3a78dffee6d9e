"""GLEAM-X fine-tuning end to end on the session's real Ray cluster, one scenario on one tiny world:

LoRA on 2 Ray Train workers over a tiny explanation set overfits (the answer loss falls), a worker
SIGKILLed mid-run resumes from the latest checkpoint, the adapter is registered as a gleam-x version
with an alias, the same config again is "already done", and the registered adapter loads on its base in
the Serve Explainer and answers /v1/explain over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from gleam.corpus.reader import open_corpus
from gleam.explain.explanation_set import open_explanation_set
from gleam.explain.finetune.config import FinetuneConfig
from gleam.explain.finetune.job import FinetuneResult, run_finetune
from gleam.explain.mllm import folder_fingerprint
from gleam.index.job import build_index
from serve.run import load_config, start
from tests.support.explanation_sets import pairs_from_corpus, write_explanation_set
from tests.support.serving import ServedWorld, free_port, index_config, serve_args
from tests.support.tiny_vlm import build_tiny_qwen25vl
from tests.support.training import committed_checkpoint, tiny_encoder

pytestmark = pytest.mark.integration

STEPS, EVERY = 16, 4


@dataclass(frozen=True)
class World:
    served: ServedWorld  # corpus, encoder folder, published index: what the Serve application needs
    explanation_set: str
    base: Path  # the tiny Qwen2.5-VL the adapter is trained on


@pytest.fixture(scope="module")
def world(prepared_world, tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("finetune-world")
    corpus = prepared_world(8)
    served = ServedWorld(
        corpus=corpus, store=str(root / "store"), encoder=tiny_encoder(root / "encoder"), model_name="-"
    )
    build_index(index_config(served, "calibration.split=null", "tracking.enabled=false"))
    rows = pairs_from_corpus(corpus, modalities=["drone"])  # each query: its tile and one other
    explanation_set = write_explanation_set(root / "set", corpus, rows)
    return World(served, explanation_set, tiny_base(root / "base"))


def tiny_base(folder: Path, head_scale: float = 16.0) -> Path:
    """The tiny Qwen2.5-VL with an output layer at a trained model's scale. Random init (std 0.02) bounds
    every logit by |w| |h| ~ 1.3 over 2000 tokens, so no adapter that leaves the head alone could push
    the answer loss below ~6.3 nats; a trained head is far larger. This is a property of the base, not of
    the training: LoRA still adapts only the language model's linear layers."""
    import torch
    from transformers import AutoModelForImageTextToText

    build_tiny_qwen25vl(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
    with torch.no_grad():
        model.lm_head.weight.mul_(head_scale)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def finetune_config(world: World, storage: Path, experiment: str) -> FinetuneConfig:
    return FinetuneConfig.model_validate(
        {
            "name": f"lora-{uuid.uuid4().hex[:6]}",
            "explanation_set": world.explanation_set,
            "val_split": "val",
            "base_model": str(world.base),
            "min_pixels": 56 * 56,
            "max_pixels": 64 * 64,  # 4 visual tokens per image: the test is about the plumbing
            "lora": {"r": 16, "alpha": 32, "dropout": 0.0},  # the recipe's rank, on the language model
            "optimizer": {"lr": 0.01, "warmup_ratio": 0.1, "weight_decay": 0.0},  # a tiny set, memorised
            "steps": STEPS,
            "batch_size": 2,
            "grad_accumulation": 2,
            "shuffle_buffer": 4,
            "storage_path": str(storage),
            "scaling": {"workers": 2, "cpus_per_worker": 0.5},
            "checkpoint": {"every": EVERY, "keep": 2, "max_failures": 2},
            "registry": {"name": f"gleam-x-test-{uuid.uuid4().hex[:6]}", "alias": "challenger"},
            "tracking": {"experiment": experiment},
        }
    )


def test_lora_overfits_resumes_after_a_killed_worker_registers_and_serves(
    world: World, tmp_path: Path, experiment_name: str, mlflow_client
) -> None:
    config = finetune_config(world, tmp_path / "finetune", experiment_name)
    outcome: list[FinetuneResult | BaseException] = []

    def target() -> None:
        try:
            outcome.append(run_finetune(config))
        except BaseException as exc:  # re-raised below, in the test's thread
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    run_folder = tmp_path / "finetune" / config.name
    deadline = time.monotonic() + 600
    while (committed := _committed_checkpoint(run_folder)) is None:
        assert time.monotonic() < deadline and thread.is_alive(), outcome
        time.sleep(0.05)
    committed_step, committed_dir = committed
    victims = _worker_pids(committed_dir)
    assert len(victims) == 2 and committed_step < STEPS
    os.kill(max(victims), signal.SIGKILL)  # a real crash of one worker process, mid-run
    thread.join(timeout=600)
    assert outcome and not isinstance(outcome[0], BaseException), outcome
    result = outcome[0]
    assert isinstance(result, FinetuneResult) and result.steps == STEPS and not result.already_done

    # resumed from the checkpoint: every step logged, only the lost interval twice, a new worker group
    history = mlflow_client.get_metric_history(result.run_id, "loss")
    counts = Counter(m.step for m in history)
    assert set(counts) == set(range(1, STEPS + 1)), "a step is missing from the MLflow series"
    repeated = sorted(s for s, n in counts.items() if n > 1)
    if repeated:
        assert repeated[0] > committed_step and (repeated[0] - 1) % EVERY == 0, repeated
        assert repeated == list(range(repeated[0], repeated[-1] + 1)) and max(counts.values()) == 2
    checkpoint = Path(result.checkpoint)
    assert not victims & _worker_pids(checkpoint), "the worker group was not restarted"

    # it learned the tiny set: the answer loss at the end is far below the start (latest value per step)
    loss = {m.step: m.value for m in sorted(history, key=lambda m: m.timestamp)}
    assert loss[STEPS] < 0.5 * loss[1], loss
    run = mlflow_client.get_run(result.run_id)
    assert {"lr", "grad_norm", "tokens_per_s", "epoch", "val_loss"} <= set(run.data.metrics)
    assert run.data.metrics["tokens_per_s"] > 0 and run.data.metrics["epoch"] >= 1
    set_rows = open_explanation_set(world.explanation_set).read().to_pylist()
    train_pairs = sum(r["split"] == "train" for r in set_rows)
    assert result.samples == 2 * train_pairs == int(run.data.params["samples.train"])  # en + zh

    # the checkpoint: adapter + trainer state + each worker's data position, no pickle anywhere
    assert (checkpoint / "adapter" / "adapter_model.safetensors").is_file()
    assert (checkpoint / "trainer.safetensors").is_file() and (checkpoint / "trainer.json").is_file()
    positions = [json.loads((checkpoint / "data" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert all(p["world_size"] == 2 and p["step"] == STEPS for p in positions)
    assert not [p for p in checkpoint.rglob("*") if p.suffix in (".bin", ".pt", ".pkl")]

    # registered: a new gleam-x version with the alias, the adapter's files and the base's fingerprint
    name = config.registry.name
    version = mlflow_client.get_model_version_by_alias(name, "challenger")
    assert int(version.version) == result.model_version and result.kind == "adapter"
    base_fingerprint = folder_fingerprint(world.base)
    assert version.tags["gleam.kind"] == "adapter" and version.tags["gleam.fingerprint"] == result.fingerprint
    assert version.tags["gleam.base_fingerprint"] == base_fingerprint == result.base_fingerprint
    assert version.tags["gleam.base_model"] == str(world.base.resolve())

    again = run_finetune(config)  # the same config again: done already, nothing new
    assert again.already_done and again.model_version == result.model_version
    assert len(mlflow_client.search_model_versions(f"name='{name}'")) == 1

    # served: the Explainer loads models:/<name>@challenger on its base and answers over HTTP
    from ray import serve

    mllm = {"mllm": {"model": f"models:/{name}@challenger", "max_new_tokens": 32}}
    url = start(load_config(args=serve_args(world.served, explainer=mllm), port=free_port()))
    try:
        health = requests.get(f"{url}/healthz", timeout=30).json()["explainer"]
        assert health["answers_from"] == "mllm" and health["mllm"]["kind"] == "adapter"
        query = _drone_query(world)
        files = [("image", ("q.jpg", query["image"], "image/jpeg"))]
        data = {"modality": "drone", "tile_id": query["tile_id"], "language": "en"}
        response = requests.post(f"{url}/v1/explain", files=files, data=data, timeout=120)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["reasoning_source"] == "mllm" and answer["raw"]
        model = answer["model"]
        assert (model["name"], model["version"]) == (name, result.model_version)
        assert model["fingerprint"] == result.fingerprint and model["kind"] == "adapter"
        assert model["base"]["fingerprint"] == base_fingerprint
        assert answer["evidence"]["similarity"] is not None
        if answer["parsed"]:  # no confidence was taught: it stays null unless the model wrote one
            assert isinstance(answer["match"], bool)
    finally:
        serve.shutdown()


def _drone_query(world: World) -> dict:
    table = open_corpus(world.served.corpus).read("queries", ["query_id", "modality", "tile_id", "image"])
    return sorted((q for q in table.to_pylist() if q["modality"] == "drone"), key=lambda q: q["query_id"])[0]


def _committed_checkpoint(run_folder: Path) -> tuple[int, Path] | None:
    """(step, folder) of the latest checkpoint Ray Train has committed (all workers reported it)."""
    try:
        found = committed_checkpoint(
            json.loads((run_folder / "checkpoint_manager_snapshot.json").read_text())
        )
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return None if found is None else (found[0], run_folder / found[1])


def _worker_pids(checkpoint: Path) -> set[int]:
    """The training worker processes that wrote a checkpoint (each rank records its pid)."""
    return {json.loads(p.read_text())["pid"] for p in (checkpoint / "data").glob("rank-*.json")}
