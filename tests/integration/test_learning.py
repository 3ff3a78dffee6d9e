"""Proof that the platform learns: phase 1 then phase 2 on a synthetic world, on 2 Ray Train workers.

Everything is the real path (world -> Ray Data prepare -> Ray Train phases -> registry -> evaluate job),
with a tiny random-init encoder so it fits a few CPU minutes. The margins are what a broken loss, a
mislabelled pair or a geometry bug in augmentation would miss: they sit far above chance yet well
below what the seeded run reaches (docs/training.md records the full figures).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gleam.config import EvaluateConfig, PrepareConfig, load_config
from gleam.corpus.prepare import prepare
from gleam.evaluation.evaluate import evaluate
from gleam.training.phases import run_training
from tests.support.paths import shared_dataset
from tests.support.training import SIZES, train_config, world_corpus

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEPS = 300
PHASE2_LR = 2e-4  # phase 2 fine-tunes phase 1: at phase 1's 1e-3 it forgets the street maps


def test_two_phases_lift_held_out_recall_far_above_chance(
    ray_cluster, tmp_path_factory: pytest.TempPathFactory, experiment_name: str
) -> None:
    root = tmp_path_factory.mktemp("learning-world")
    corpus = world_corpus(root, locations=600, seed=11)
    common = {
        "batch_size": 16,
        "loader_threads": 1,
        "shuffle_buffer": 64,
        "scaling": {"workers": 2, "cpus_per_worker": 1},
        "checkpoint": {"every": STEPS},
        "validation": {"enabled": False},
        "seed": 0,
    }
    # phase 1: the best-aligned modality of the synthetic world (street maps are north-up like tiles)
    phase1 = train_config(
        corpus,
        root / "train",
        experiment_name,
        modalities=["streetmap"],
        encoder={"backbone": "test_convnext", "embed_dim": 64, "image_sizes": SIZES},
        steps=STEPS,
        optimizer={"lr": 1e-3, "warmup_steps": 10},
        **common,
    )
    first = run_training(phase1)
    phase2 = train_config(
        corpus,
        root / "train",
        experiment_name,
        phase="phase2",
        modalities=["drone", "streetmap", "panorama", "ground"],
        encoder=None,
        init=f"models:/{phase1.registry.name}@phase1",
        steps=STEPS,
        optimizer={"lr": PHASE2_LR, "warmup_steps": 10},
        registry={"name": phase1.registry.name},
        **common,
    )
    second = run_training(phase2)
    assert second.model_version == first.model_version + 1

    result = evaluate(
        EvaluateConfig(
            corpus=corpus,
            encoder=f"models:/{phase1.registry.name}@phase2",
            split="test",
            grid_queries=0,
            tracking={"experiment": experiment_name},
        )
    )
    chance = result.chance_r1
    r1 = {m: result.metrics[m]["R@1"] for m in result.metrics}
    print(f"gallery {result.gallery_size}, chance R@1 {chance:.2f}: {r1}")
    assert result.gallery_size >= 60 and set(r1) == {"drone", "streetmap", "panorama", "ground"}
    # the well-aligned modality is learnt for real (seeded run: ~27x chance); the cross-view ones
    # (drone, panorama, ground) barely generalise from ~420 places with a random-init tiny network in
    # CPU minutes (docs/training.md), so the whole-model figure is asserted, not each of them
    assert r1["streetmap"] >= 8 * chance, r1
    assert sum(r1.values()) / len(r1) >= 3 * chance, r1


def test_real_drone_views_of_university1652_mini_beat_chance(
    ray_cluster, tmp_path: Path, experiment_name: str
) -> None:
    """Train drone -> satellite on the real train layout, evaluate on the real test layout's gallery."""
    raw = shared_dataset("university1652-mini")
    overrides = [
        "name=u1652",
        f"output={tmp_path / 'prepared'}",
        "sources.0.kind=university1652",
        f"sources.0.uri={raw}",
        "tracking.enabled=false",
        *(f"sizes.{m}=[128,128]" for m in ("satellite", "drone", "ground")),
    ]
    corpus = prepare(load_config(PrepareConfig, None, overrides)).corpus_uri
    config = train_config(
        corpus,
        tmp_path / "train",
        experiment_name,
        modalities=["drone"],
        encoder={"backbone": "test_convnext", "embed_dim": 64, "image_sizes": SIZES},
        steps=STEPS,
        batch_size=16,
        loader_threads=1,
        shuffle_buffer=64,
        scaling={"workers": 2, "cpus_per_worker": 1},
        checkpoint={"every": STEPS},
        validation={"enabled": False},
        optimizer={"lr": 1e-3, "warmup_steps": 10},
    )
    trained = run_training(config)
    result = evaluate(
        EvaluateConfig(
            corpus=corpus,
            encoder=trained.encoder_uri,
            split="test",
            modalities=["drone"],
            grid_queries=0,
            tracking={"experiment": experiment_name},
        )
    )
    print(f"University-1652-mini drone: {result.metrics['drone']}, chance {result.chance_r1:.2f}")
    assert result.gallery_size == 80
    assert result.metrics["drone"]["R@1"] >= 4 * result.chance_r1  # measured: 11.25 % (9x chance)
