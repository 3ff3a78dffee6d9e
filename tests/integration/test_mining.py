"""Similarity mining on Ray: the shared prepared world, embedded with a tiny encoder's saved weights."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from gleam.corpus.reader import open_corpus
from gleam.corpus.schema import Modality
from gleam.evaluation.split import split_filter, split_gallery, split_queries
from gleam.model import weights
from gleam.training.mining import mine_similar_places, nearest_places
from tests.support.training import tiny_encoder

pytestmark = pytest.mark.integration

K = 3
MODALITIES = ["drone", "panorama"]


def test_mining_gives_every_train_place_k_other_train_places_as_the_encoder_sees_them(
    prepared_world: Callable[[int], str], tmp_path: Path
) -> None:
    uri = prepared_world(24)  # shared with the training and index tests: only read
    corpus = open_corpus(uri)
    encoder_uri = tiny_encoder(tmp_path / "encoder", seed=4, embed_dim=16)
    train = corpus.read("tiles", ["tile_id"], filter=split_filter("train"))["tile_id"].to_pylist()
    assert len(train) > K + 1

    mined = mine_similar_places(uri, encoder_uri, MODALITIES, k=K, batch_size=8)

    assert sorted(mined.neighbours) == sorted(train)
    for place, others in mined.neighbours.items():
        assert len(others) == K == len(set(others)) and place not in others and set(others) <= set(train)
    queries = corpus.read("queries", ["modality"], filter=split_filter("train"))["modality"].to_pylist()
    expected_queries = sum(m in MODALITIES for m in queries)
    assert mined.counts == {"places": len(train), "queries": expected_queries, "places_without_queries": 0}
    assert mined.seconds > 0

    # the same encoder in this process, on the evaluation's embedding path: the same neighbours
    encoder, spec, _ = weights.load(encoder_uri)
    gallery = split_gallery(corpus, "train", encoder, spec, batch_size=8, precision="fp32")
    embedded = [split_queries(corpus, "train", Modality(m), encoder, spec, 8, "fp32") for m in MODALITIES]
    vectors = np.concatenate([q.vectors for q in embedded])
    places = [label for q in embedded for label in q.labels]
    assert nearest_places(vectors, places, gallery.vectors, gallery.ids, K) == mined.neighbours
    # and an encoder is not a constant: places do not all get the same neighbours
    assert len({tuple(others) for others in mined.neighbours.values()}) > 1
