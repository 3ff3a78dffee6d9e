"""The Serve application over real HTTP on 127.0.0.1: started from serve/config.yaml on the test world's
tiny encoder (registered as champion) and its published index. The multimodal-LLM explainer over HTTP is
tested where it is fine-tuned (test_finetune_explainer.py), on the adapter it serves."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests
from PIL import Image

from gleam.corpus.config import ImageLimits
from gleam.corpus.reader import open_corpus
from gleam.explain.confidence import POOLED, ConfidenceModel
from gleam.index.catalog import open_index
from gleam.index.job import build_index
from gleam.index.layout import IndexLocation
from gleam.index.location import estimate_location, peak_offset_m, radius_for
from gleam.index.publish import point_current
from gleam.model import weights
from gleam.model.transforms import eval_batch
from gleam.retrieval.fusion import fuse_set
from serve.requests import decode_checked
from serve.run import load_config, start
from tests.support import bad_images
from tests.support.serving import ServedWorld, free_port, index_config, serve_args, served_world
from tests.support.training import tiny_encoder

pytestmark = pytest.mark.integration
TOKEN = "test-token-7f3a"


@pytest.fixture(scope="module")
def world(prepared_world, tmp_path_factory: pytest.TempPathFactory) -> ServedWorld:
    return served_world(tmp_path_factory.mktemp("served"), prepared_world(24))


@pytest.fixture(scope="module")
def app_url(world: ServedWorld) -> Iterator[str]:
    from ray import serve

    port = free_port()
    url = start(load_config(args=serve_args(world), port=port))
    yield url
    serve.shutdown()


@pytest.fixture(scope="module")
def queries(world: ServedWorld) -> list[dict[str, Any]]:
    table = open_corpus(world.corpus).read("queries", ["query_id", "modality", "tile_id", "image"])
    return table.sort_by("query_id").to_pylist()


def _configured(name: str) -> Any:
    """An application argument as serve/config.yaml ships it (what the served app runs with)."""
    import yaml

    config = yaml.safe_load((Path(__file__).parents[2] / "serve" / "config.yaml").read_text())
    return config["applications"][0]["args"][name]


def query_of(queries: list[dict[str, Any]], modality: str, n: int = 0) -> dict[str, Any]:
    return [q for q in queries if q["modality"] == modality][n]


def localize_files(url: str, images: list[bytes], **fields: Any) -> requests.Response:
    files = [("image", (f"q{n}.jpg", data, "image/jpeg")) for n, data in enumerate(images)]
    return requests.post(f"{url}/v1/localize", files=files, data=fields, timeout=60)


def expected_top(world: ServedWorld, query: bytes, modality: str, k: int) -> tuple[list[str], np.ndarray]:
    """The same answer computed in this process: prepare (the ingress's decode to a uint8 array), embed,
    search the published index."""
    encoder, spec, info = weights.load(world.encoder)
    prepared = decode_checked(query, spec.size(modality), ImageLimits())
    vector = encoder(eval_batch([prepared], modality, spec)).detach().numpy()
    scores, tiles = open_index(world.store, world.index, expect_fingerprint=info.fingerprint).search(
        vector, k
    )
    return list(tiles[0]), scores[0]


def candidates_in_process(
    world: ServedWorld, index: Any, query: bytes, modality: str, k: int
) -> list[dict[str, Any]]:
    """The candidates the location is estimated from, searched in this process: as many as the index's
    radius was fitted with (meta.location.k) when that is more than `k`, with their tiles' geometry."""
    depth = max(k, int((index.meta.get("location") or {}).get("k") or 0))
    ids, scores = expected_top(world, query, modality, depth)
    return [
        {"tile_id": tile, "score": float(score), **index.geometry(index.position(tile))}
        for tile, score in zip(ids, scores, strict=True)
        if tile is not None
    ]


def assert_same_location(served: dict[str, Any], expected: dict[str, Any]) -> None:
    """The same estimate, to float noise: the service's scores come from its own forward (1e-6 deg is
    about 0.1 m)."""
    assert {k: v for k, v in served.items() if k not in ("lat", "lon", "fused")} == {
        k: v for k, v in expected.items() if k not in ("lat", "lon", "fused")
    }
    assert (served["fused"] is None) == (expected["fused"] is None)
    for key in ("lat", "lon"):
        assert (served[key] is None) == (expected[key] is None)
        if expected[key] is not None:
            assert served[key] == pytest.approx(expected[key], abs=1e-6)
        if expected["fused"] is not None:
            assert served["fused"][key] == pytest.approx(expected["fused"][key], abs=1e-6)


def test_localize_multipart_matches_the_same_search_in_process(app_url, world, queries) -> None:
    query = query_of(queries, "drone")
    response = localize_files(app_url, [query["image"]], modality="drone", k="7")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["k"] == 7 and body["images"] == 1 and body["modality"] == "drone"
    ids, scores = expected_top(world, query["image"], "drone", 7)
    assert [c["tile_id"] for c in body["candidates"]] == ids
    np.testing.assert_allclose([c["score"] for c in body["candidates"]], scores, atol=1e-4)
    index = open_index(world.store, world.index)
    assert (body["index"]["name"], body["index"]["version"]) == (world.index, index.version)
    quality = body["index"]["quality"]  # what the index recorded about its own scores
    assert isinstance(quality["collapsed"], bool) and isinstance(quality["at_chance"], bool)
    assert body["index"]["warning"] == quality["warning"]
    assert (quality["warning"] is None) == quality["reliable"]
    assert body["encoder"]["fingerprint"] == index.encoder_fingerprint
    assert body["encoder"]["model_name"] == world.model_name
    for candidate in body["candidates"]:
        position = index.position(candidate["tile_id"])
        assert candidate["lat"] == pytest.approx(index.lat[position])
        assert candidate["lon"] == pytest.approx(index.lon[position])
        assert candidate == {
            "tile_id": candidate["tile_id"],
            "score": candidate["score"],
            **index.geometry(position),
        }
    # the position: estimated from these candidates on the version that gave them (what it is depends on
    # whether this random-init encoder's calibration separates places; the reliable case is tested below)
    location = body["location"]
    deep = candidates_in_process(world, index, query["image"], "drone", 7)
    assert [c["tile_id"] for c in deep[:7]] == ids
    assert_same_location(location, estimate_location(deep, "drone", index.meta).to_dict())
    assert "fusion" not in body  # one photo: nothing was fused
    if not quality["reliable"]:
        assert location["method"] == "unknown" and location["lat"] is None and location["radius_m"] is None
        assert quality["warning"] in location["reason"]
    # where the time went: the ingress's steps, the encoder's inside its call, and the same as Server-Timing
    timings = body["timings_ms"]
    steps = ("parse", "prepare", "encoder_call", "queue", "forward", "search", "encoder", "total")
    assert all(timings[step] >= 0 for step in steps) and timings["batch"] >= 1
    assert timings["encoder"] <= timings["encoder_call"] <= timings["total"]
    # took_ms is total (2 decimals) rounded to 1: off by up to 0.05, exactly 0.05 in float at worst
    assert body["took_ms"] == pytest.approx(timings["total"], abs=0.051)
    header = dict(part.strip().split(";dur=") for part in response.headers["Server-Timing"].split(","))
    assert set(steps) | {"json"} <= set(header) and float(header["forward"]) == timings["forward"]


def test_localize_json_set_is_fused(app_url, world, queries) -> None:
    a, b = query_of(queries, "ground", 0), query_of(queries, "ground", 1)
    encoded = [base64.b64encode(x["image"]).decode() for x in (a, b)]
    response = requests.post(
        f"{app_url}/v1/localize", json={"images": encoded, "modality": "ground", "k": 24}, timeout=60
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["images"] == 2 and len(body["candidates"]) == 24
    # the fused score of each tile is its similarity to the normalised mean of the two embeddings
    encoder, spec, _ = weights.load(world.encoder)
    prepared = [decode_checked(x["image"], spec.size("ground"), ImageLimits()) for x in (a, b)]
    vectors = encoder(eval_batch(prepared, "ground", spec)).detach().numpy()
    fused = vectors.mean(axis=0)
    fused /= np.linalg.norm(fused)
    _, ids = open_index(world.store, world.index).search(fused[None], 24)
    assert [c["tile_id"] for c in body["candidates"]] == list(ids[0])
    assert body["fusion"]["method"] == _configured("fusion")  # the service's default
    # by agreement, asked per request: the photos weighted as fuse_set weighs them, the search on that
    by_agreement = requests.post(
        f"{app_url}/v1/localize",
        json={"images": encoded, "modality": "ground", "k": 24, "fusion": "agreement"},
        timeout=60,
    ).json()
    vector, weights_ = fuse_set(vectors, "agreement")
    assert by_agreement["fusion"]["method"] == "agreement"
    np.testing.assert_allclose(by_agreement["fusion"]["weights"], weights_, atol=1e-4)
    assert sum(by_agreement["fusion"]["weights"]) == pytest.approx(1.0)
    _, ids = open_index(world.store, world.index).search(vector[None], 24)
    assert [c["tile_id"] for c in by_agreement["candidates"]] == list(ids[0])
    # a bad fusion or refine names its field
    for field, value in (("fusion", "median"), ("refine", "maybe")):
        response = localize_files(app_url, [a["image"]], modality="ground", **{field: value})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["field"] == field and value in response.json()["error"]["message"]


def test_explain_by_tile_id_answers_from_evidence_in_both_languages(app_url, world, queries) -> None:
    query = query_of(queries, "drone")
    files = [("image", ("q.jpg", query["image"], "image/jpeg"))]
    for language in ("en", "zh"):
        data = {"modality": "drone", "tile_id": query["tile_id"], "language": language}
        response = requests.post(f"{app_url}/v1/explain", files=files, data=data, timeout=60)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["reasoning_source"] == "evidence"
        assert answer["language"] == language
        assert answer["index"] == {"name": world.index, "version": _current_version(app_url)}
        evidence = answer["evidence"]
        threshold = evidence["threshold"]
        assert threshold is not None and evidence["calibration"]["split"] == "val"
        # the tiny world has fewer than MIN_QUERIES validation queries per modality: the pooled calibration
        assert evidence["calibration_used"] == POOLED and any(
            POOLED in n or "合并" in n for n in answer["notes"]
        )
        assert evidence["confidence_model"]["method"] == "platt-logistic"
        if evidence["quality"]["reliable"]:
            assert answer["match"] is (evidence["similarity"] >= threshold)
            fitted = ConfidenceModel.from_dict(threshold, evidence["confidence_model"])
            assert answer["confidence"] == pytest.approx(fitted.confidence(evidence["similarity"]))
        else:  # a random-init tiny encoder may calibrate at chance: then no verdict (tested below)
            assert answer["match"] is None and answer["confidence"] is None
        assert evidence["rank"] is not None and evidence["rank"] >= 1
        heatmap = Image.open(io.BytesIO(base64.b64decode(evidence["heatmap_png"])))
        assert heatmap.format == "PNG" and heatmap.size[0] > 0
        if language == "zh":
            assert any("\u4e00" <= ch <= "\u9fff" for ch in answer["reasoning"])
        else:
            assert "similarity" in answer["reasoning"].lower()


def test_explain_with_an_uploaded_satellite_image(app_url, world, queries) -> None:
    query = query_of(queries, "streetmap")
    tile = requests.get(f"{app_url}/v1/tiles/{query['tile_id']}", timeout=30).content
    body = {
        "image": base64.b64encode(query["image"]).decode(),
        "satellite": base64.b64encode(tile).decode(),
        "modality": "streetmap",
    }
    response = requests.post(f"{app_url}/v1/explain", json=body, timeout=60)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["tile_id"] is None and answer["evidence"]["rank"] is None
    assert -1.0 <= answer["evidence"]["similarity"] <= 1.0


def test_localize_with_explain_explains_the_top_candidate(app_url, queries) -> None:
    query = query_of(queries, "panorama")
    response = localize_files(app_url, [query["image"]], modality="panorama", k="3", explain="true")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["explanation"]["tile_id"] == body["candidates"][0]["tile_id"]
    assert body["explanation"]["evidence"]["rank"] == 1
    assert body["explanation"]["index"] == {
        "name": body["index"]["name"],
        "version": body["index"]["version"],
    }


def test_tiles_page_health_and_docs(app_url, world) -> None:
    tiles = open_corpus(world.corpus).read("tiles", ["tile_id", "image"]).to_pylist()
    response = requests.get(f"{app_url}/v1/tiles/{tiles[0]['tile_id']}", timeout=30)
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert response.content == tiles[0]["image"]
    health = requests.get(f"{app_url}/healthz", timeout=30).json()
    assert health["status"] == "ok" and health["index"]["vectors"] == len(tiles)
    assert health["explainer"]["answers_from"] == "evidence" and health["auth"] is False
    defaults = {name: _configured(name) for name in ("fusion", "refine")}
    assert health["defaults"] == {"k": _configured("default_k"), **defaults}  # serve/config.yaml's
    page = requests.get(f"{app_url}/", timeout=30)
    assert page.status_code == 200 and "<title>GLEAM" in page.text
    assert requests.get(f"{app_url}/static/app.js", timeout=30).status_code == 200
    spec = requests.get(f"{app_url}/openapi.json", timeout=30).json()
    assert {"/v1/localize", "/v1/explain", "/v1/tiles/{tile_id}", "/healthz"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/v1/localize"]["post"]["requestBody"]["content"]
    assert requests.get(f"{app_url}/docs", timeout=30).status_code == 200


def _jpeg(size: tuple[int, int]) -> bytes:
    return bad_images.jpeg(size)


BAD_REQUESTS: list[tuple[str, dict[str, Any], int, str]] = [
    ("empty body", {"data": b"", "headers": {"content-type": "application/json"}}, 400, "empty_body"),
    (
        "not an image",
        {"files": [("image", ("a.txt", bad_images.text_file(), "text/plain"))]},
        415,
        "not_an_image",
    ),
    (
        "truncated image",
        {"files": [("image", ("a.jpg", bad_images.truncated_jpeg(), "image/jpeg"))]},
        422,
        "decode_error",
    ),
    (
        "decompression bomb",
        {"files": [("image", ("a.png", bad_images.png_header_only(30_000, 30_000), "image/png"))]},
        413,
        "pixel_limit",
    ),
    (
        "image too small",
        {"files": [("image", ("a.jpg", bad_images.tiny_jpeg(), "image/jpeg"))]},
        422,
        "too_small",
    ),
    (
        "unknown modality",
        {"files": [("image", ("a.jpg", _jpeg((64, 64)), "image/jpeg"))], "modality": "sonar"},
        422,
        "unknown_modality",
    ),
    (
        "k zero",
        {"files": [("image", ("a.jpg", _jpeg((64, 64)), "image/jpeg"))], "k": "0"},
        422,
        "out_of_range",
    ),
    (
        "k too large",
        {"files": [("image", ("a.jpg", _jpeg((64, 64)), "image/jpeg"))], "k": "101"},
        422,
        "out_of_range",
    ),
    (
        "k not a number",
        {"files": [("image", ("a.jpg", _jpeg((64, 64)), "image/jpeg"))], "k": "five"},
        422,
        "invalid_field",
    ),
    ("bad base64", {"json": {"images": ["not*base64!"], "modality": "drone"}}, 400, "bad_base64"),
    ("bad json", {"data": b"{not json", "headers": {"content-type": "application/json"}}, 400, "bad_json"),
    (
        "wrong content type",
        {"data": b"hello", "headers": {"content-type": "text/plain"}},
        415,
        "unsupported_media_type",
    ),
    ("missing image", {"json": {"modality": "drone"}}, 422, "missing_field"),
    (
        "missing modality",
        {"files": [("image", ("a.jpg", _jpeg((64, 64)), "image/jpeg"))], "modality": None},
        422,
        "missing_field",
    ),
    (
        "unsupported language",
        {"files": [("image", ("a.jpg", _jpeg((64, 64)), "image/jpeg"))], "language": "fr"},
        422,
        "unsupported_language",
    ),
    (
        "too many images",
        {"files": [("image", (f"{n}.jpg", _jpeg((64, 64)), "image/jpeg")) for n in range(9)]},
        413,
        "too_many_images",
    ),
    (
        "unknown field",
        {
            "json": {
                "images": [base64.b64encode(_jpeg((64, 64))).decode()],
                "modality": "drone",
                "colour": "red",
            }
        },
        422,
        "unknown_field",
    ),
    ("empty image list", {"json": {"images": [], "modality": "drone"}}, 422, "missing_field"),
    (
        "unknown fusion",
        {
            "json": {
                "images": [base64.b64encode(_jpeg((64, 64))).decode()],
                "modality": "drone",
                "fusion": "max",
            }
        },
        422,
        "invalid_field",
    ),
    (
        "refine not a boolean",
        {
            "json": {
                "images": [base64.b64encode(_jpeg((64, 64))).decode()],
                "modality": "drone",
                "refine": "often",
            }
        },
        422,
        "invalid_field",
    ),
]


@pytest.mark.parametrize(
    ("case", "request_kwargs", "status", "code"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS]
)
def test_bad_localize_requests_get_a_4xx_json_body(app_url, case, request_kwargs, status, code) -> None:
    kwargs = dict(request_kwargs)
    fields = {"modality": kwargs.pop("modality", "drone"), "k": kwargs.pop("k", "5")}
    if "language" in kwargs:
        fields["language"] = kwargs.pop("language")
    if "files" in kwargs:
        kwargs["data"] = {key: value for key, value in fields.items() if value is not None}
    response = requests.post(f"{app_url}/v1/localize", timeout=60, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert "Traceback" not in response.text


def test_oversize_upload_is_refused_before_it_is_read(app_url) -> None:
    big = b"\xff\xd8\xff" + b"\x00" * (33 * 1024 * 1024)
    response = localize_files(app_url, [big], modality="drone")
    assert response.status_code == 413, response.text[:200]
    assert response.json()["error"]["code"] == "too_large"


def test_unknown_tile_is_a_404_json(app_url, queries) -> None:
    assert requests.get(f"{app_url}/v1/tiles/nope", timeout=30).json()["error"]["code"] == "unknown_tile"
    query = query_of(queries, "drone")
    files = [("image", ("q.jpg", query["image"], "image/jpeg"))]
    response = requests.post(
        f"{app_url}/v1/explain", files=files, data={"modality": "drone", "tile_id": "nope"}, timeout=60
    )
    assert response.status_code == 404 and response.json()["error"]["field"] == "tile_id"
    assert requests.get(f"{app_url}/no/such/route", timeout=30).json()["error"]["code"] == "not_found"


def test_replica_stays_healthy_after_bad_input(app_url, queries) -> None:
    for _ in range(3):
        localize_files(app_url, [bad_images.truncated_jpeg()], modality="drone")
        localize_files(app_url, [bad_images.png_header_only(40_000, 40_000)], modality="drone")
    assert requests.get(f"{app_url}/healthz", timeout=30).status_code == 200
    query = query_of(queries, "drone")
    assert localize_files(app_url, [query["image"]], modality="drone").status_code == 200


def _current_version(url: str) -> str:
    return requests.get(f"{url}/healthz", timeout=30).json()["index"]["version"]


def _wait_until_serving(url: str, version: str, image: bytes, seconds: float = 30) -> bool:
    """True once both copies of the index answer from `version`: the SatelliteIndex deployment (/healthz,
    tiles, explanations) and the encoder's own (`colocated_search`: /v1/localize). Each follows CURRENT
    on its own poll, so right after CURRENT moves they may differ for up to `poll_seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        answer = localize_files(url, [image], modality="drone", k="1")
        if _current_version(url) == version and answer.json()["index"]["version"] == version:
            return True
        time.sleep(0.2)
    return False


def test_hot_swap_under_load_drops_no_request(app_url, world, queries, tmp_path: Path) -> None:
    """Plain and explained /v1/localize requests flow while a new version is published: none fails, and
    every explained answer takes its tile, calibration and version from the one version it names."""
    query = query_of(queries, "drone")
    before = _current_version(app_url)
    metas = {before: open_index(world.store, world.index, before).meta}
    seen: list[tuple[float, float, str]] = []  # (started, finished, version) per request
    explained: list[dict[str, Any]] = []
    failures: list[str] = []
    stop = threading.Event()

    def client(explain: bool) -> None:
        while not stop.is_set():
            try:
                fields = {"modality": "drone", "k": "3", **({"explain": "true"} if explain else {})}
                started = time.monotonic()
                response = localize_files(app_url, [query["image"]], **fields)
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:200]}")
                else:
                    seen.append((started, time.monotonic(), response.json()["index"]["version"]))
                    if explain:
                        explained.append(response.json())
            except requests.RequestException as exc:
                failures.append(repr(exc))

    threads = [threading.Thread(target=client, args=(explain,)) for explain in (False, True)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        # another index key and calibration sample is another build, whose calibration differs from the
        # serving one's: a new version is published while requests flow
        rebuilt = build_index(index_config(world, "index_key=HNSW16,Flat", "calibration.max_queries=5"))
        assert rebuilt.status == "published" and rebuilt.version != before
        deadline = time.monotonic() + 60
        # until the slower client, the explained one, has been answered from the new version too
        while time.monotonic() < deadline and (
            not explained or explained[-1]["index"]["version"] != rebuilt.version
        ):
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not failures, failures[:3]
    in_order = [version for _, _, version in sorted(seen)]  # by start: an explained request takes longer
    assert in_order[0] == before and in_order[-1] == rebuilt.version
    switched = min(finished for _, finished, version in seen if version == rebuilt.version)
    late = {version for started, _, version in seen if started > switched}
    assert late == {rebuilt.version}, "a request started after the swap was answered from the old version"
    assert _wait_until_serving(app_url, rebuilt.version, query["image"])
    metas[rebuilt.version] = open_index(world.store, world.index, rebuilt.version).meta
    assert metas[before]["calibration"] != metas[rebuilt.version]["calibration"]  # the check can tell
    assert {body["index"]["version"] for body in explained} == set(metas), "no explained request on one side"
    for body in explained:
        _explained_from_one_version(body, world, metas[body["index"]["version"]])


def _explained_from_one_version(body: dict[str, Any], world: ServedWorld, meta: dict[str, Any]) -> None:
    """The explanation's version, tile, coordinates, calibration and quality are all the named version's."""
    from gleam.index.calibrate import evidence_facts

    version = body["index"]["version"]
    explanation = body["explanation"]
    assert explanation["index"] == {"name": world.index, "version": version}
    top = body["candidates"][0]
    assert explanation["tile_id"] == top["tile_id"]
    assert (explanation["lat"], explanation["lon"]) == (top["lat"], top["lon"])
    index = open_index(world.store, world.index, version)
    position = index.position(top["tile_id"])
    assert explanation["lat"] == pytest.approx(index.lat[position])
    facts = evidence_facts(meta, "drone")
    evidence = explanation["evidence"]
    assert evidence["calibration"] == meta["calibration"], f"calibration of another version than {version}"
    assert evidence["threshold"] == facts["threshold"] and evidence["quality"] == facts["quality"]
    assert evidence["confidence_model"] == facts["confidence_model"]
    assert evidence["rank"] == 1 and evidence["depth"] is not None


def test_an_index_that_cannot_tell_places_apart_is_flagged_and_gets_no_verdict(
    app_url, world, queries
) -> None:
    """A version whose meta.json records collapsed tiles and a calibration at chance (the reported demo):
    /v1/localize carries the warning and the evidence answer calls nothing a match."""

    def at_chance(meta: dict[str, Any]) -> None:
        meta["spread"] = {"mean_cosine": 0.99991, "effective_rank": 1.3, "vectors": 24, "collapsed": True}
        calibration = meta["calibration"]
        calibration.update(accuracy=0.5, at_chance=True)
        for own in calibration["by_modality"].values():
            own.update(accuracy=0.5, at_chance=True)

    location = IndexLocation(world.store, world.index)
    serving = _current_version(app_url)
    version = _publish_edited(world, serving, at_chance)
    query = query_of(queries, "drone")
    try:
        assert _wait_until_serving(app_url, version, query["image"])
        response = localize_files(app_url, [query["image"]], modality="drone", k="3", explain="true")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["index"]["version"] == version
        # no position either: unknown, with the reason, and nothing to draw
        assert body["location"]["method"] == "unknown" and body["location"]["lat"] is None
        assert "cannot tell places apart" in body["location"]["reason"]
        assert body["index"]["quality"]["collapsed"] is True and body["index"]["quality"]["at_chance"] is True
        assert "cannot tell places apart" in body["index"]["warning"]
        explanation = body["explanation"]
        assert explanation["match"] is None and explanation["confidence"] is None
        assert "cannot tell places apart" in explanation["reasoning"] and "0.9999" in explanation["reasoning"]
        assert explanation["evidence"]["quality"]["reliable"] is False
        files = [("image", ("q.jpg", query["image"], "image/jpeg"))]
        data = {"modality": "drone", "tile_id": query["tile_id"], "language": "zh"}
        zh = requests.post(f"{app_url}/v1/explain", files=files, data=data, timeout=60).json()
        assert zh["match"] is None and "无法区分不同地点" in zh["reasoning"]
    finally:
        point_current(location, serving)
    assert _wait_until_serving(app_url, serving, query["image"])


def _publish_edited(world: ServedWorld, serving: str, edit: Any) -> str:
    """A copy of version `serving` with `edit(meta)` applied to its meta.json, made CURRENT: an index
    version that says something else about its own scores (the vectors and tiles are the same)."""
    import shutil

    location = IndexLocation(world.store, world.index)
    version = location.new_version()
    shutil.copytree(location.version_uri(serving), location.version_uri(version))
    meta_uri = location.file_uri(version, "meta.json")
    meta = json.loads(Path(meta_uri).read_text())
    meta["version"] = version
    edit(meta)
    Path(meta_uri).write_text(json.dumps(meta))
    point_current(location, version)
    return version


def _reliable(meta: dict[str, Any]) -> None:
    """The meta of an index whose scores separate places: spread, calibration and an informative fitted
    confidence (the random-init test encoder's own may be at chance); its fitted location radii kept."""
    meta["spread"] = {"mean_cosine": 0.2, "effective_rank": 12.0, "vectors": 24, "collapsed": False}
    calibration = meta["calibration"]
    for own in (calibration, *calibration["by_modality"].values()):
        own.update(accuracy=0.95, at_chance=False)
        if own.get("confidence"):
            own["confidence"]["slope"] = 25.0
    # the tiny world's few validation queries may leave the refined estimate without a radius of its own
    # (and so never refined): then it says refinement measured half the fused radius
    radius = meta["location"]["radius_m"]
    if radius.get("refined") is None:
        radius["refined"] = radius["fused"] / 2


def test_localize_gives_a_position_with_its_radius_refined_on_request(app_url, world, queries) -> None:
    """On a version whose scores separate places: a fused position with the radius its validation
    queries fitted; with refine=true, the position moved to the heatmap's peak on the top tile, exactly
    as computed in this process from the same tile and the same meta."""
    from gleam.explain.evidence import match_heatmap
    from gleam.index.tiles import TileImages

    serving = _current_version(app_url)
    fitted = open_index(world.store, world.index, serving).meta.get("location")
    assert fitted, "the test world's index has a fitted location radius (its tiles have gsd_m)"
    version = _publish_edited(world, serving, _reliable)
    meta = open_index(world.store, world.index, version).meta
    query = query_of(queries, "drone")
    try:
        assert _wait_until_serving(app_url, version, query["image"])
        plain = localize_files(app_url, [query["image"]], modality="drone", k="5").json()
        assert plain["index"]["version"] == version and plain["index"]["warning"] is None
        location = plain["location"]
        index = open_index(world.store, world.index, version)
        deep = candidates_in_process(world, index, query["image"], "drone", 5)  # as deep as the radius's k
        assert_same_location(location, estimate_location(deep, "drone", meta).to_dict())
        assert location["method"] in ("fused", "top1") and -90 <= location["lat"] <= 90
        assert location["radius_m"] == radius_for(fitted, "drone", location["method"])[0] > 0
        assert location["coverage"] == fitted["coverage"] and "refine" not in plain["timings_ms"]

        refined = localize_files(app_url, [query["image"]], modality="drone", k="5", refine="true").json()
        assert refined["candidates"] == plain["candidates"]
        moved = refined["location"]
        encoder, spec, _ = weights.load(world.encoder)
        top = plain["candidates"][0]
        tile = TileImages(meta["corpus"]).get(top["tile_id"])
        prepared = decode_checked(query["image"], spec.size("drone"), ImageLimits())
        grid = match_heatmap(encoder, spec, [prepared], "drone", tile).grid
        offset = peak_offset_m(grid, top["gsd_m"], top["width"], top["height"])
        expected = estimate_location(deep, "drone", meta, offset).to_dict()
        assert moved["method"] == expected["method"] and moved["radius_m"] == expected["radius_m"]
        assert moved["reason"] == expected["reason"]
        # refined unless the top tile lies outside the most probable neighbourhood (the reason says so)
        assert expected["method"] == "refined" or "outside" in expected["reason"]
        if expected["method"] == "refined":
            assert moved["lat"] == pytest.approx(expected["lat"], abs=1e-6)  # ~0.1 m
            assert moved["lon"] == pytest.approx(expected["lon"], abs=1e-6)
            assert moved["fused"] == pytest.approx(location["fused"])
            assert moved["refinement_m"]["east"] == pytest.approx(offset[0], abs=0.5)
            assert refined["timings_ms"]["refine"] > 0
        # without an index of its own the encoder gets the top tile from the SatelliteIndex deployment
        # with the search's answer (no further call), and refines to the same place
        import asyncio

        encoder = _encoder_searching_through_the_deployment(world)
        batch = [("drone", [prepared], 5, None, "mean", True, time.perf_counter())]
        found = asyncio.run(encoder._localize_batch.__wrapped__(encoder, batch))[0]
        assert found["version"] == version and found["location"] == location
        block = found.pop("refine", None)
        if expected["method"] == "refined" or block is not None:
            assert block is not None and block["tile_id"] == top["tile_id"] and block["image"] == tile
            again = encoder._refined("drone", [prepared], block)
            assert again["method"] == expected["method"]
            assert again["lat"] == pytest.approx(expected["lat"], abs=1e-6)
            assert again["lon"] == pytest.approx(expected["lon"], abs=1e-6)
    finally:
        point_current(IndexLocation(world.store, world.index), serving)
    assert _wait_until_serving(app_url, serving, query["image"])


def test_the_index_health_check_fails_when_the_loaded_index_breaks(world) -> None:
    """The replica class itself, in this process: healthy as loaded, failing once its index is emptied."""
    from serve.index import SatelliteIndex

    fingerprint = open_index(world.store, world.index).encoder_fingerprint
    replica = SatelliteIndex.func_or_class(world.store, world.index, fingerprint, poll_seconds=0)
    try:
        replica.check_health()
        replica._active.opened.index.reset()
        with pytest.raises(RuntimeError, match="0 vectors"):
            replica.check_health()
    finally:
        replica.__del__()


def test_a_batch_search_answers_each_query_as_its_own_search(world) -> None:
    """`search_many` (the encoder's batch: several k, some explained) gives each row `search`'s answer."""
    from serve.index import SatelliteIndex

    fingerprint = open_index(world.store, world.index).encoder_fingerprint
    replica = SatelliteIndex.func_or_class(world.store, world.index, fingerprint, poll_seconds=0)
    try:
        vectors = np.random.default_rng(5).standard_normal((3, replica._active.opened.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        ks, explains = [3, 7, 3], [None, "drone", None]
        batch = replica.search_many(vectors, ks, explains)
        for row, answer in enumerate(batch):
            alone = replica.search(vectors[row][None], ks[row], explains[row])
            assert answer == alone and len(answer["candidates"]) == ks[row]
        assert "context" in batch[1] and "context" not in batch[0]
    finally:
        replica.__del__()


def test_an_encoder_without_its_own_index_searches_through_satellite_index(app_url, world, queries) -> None:
    """`colocated_search: false` (the GPU config): the encoder sends its batch to the SatelliteIndex
    deployment in one `search_many` call, and the answers equal the in-process search."""
    import asyncio

    encoder = _encoder_searching_through_the_deployment(world)
    drone = [query_of(queries, "drone", n)["image"] for n in range(3)]
    size = encoder.spec.size("drone")
    arrays = [decode_checked(image, size, ImageLimits()) for image in drone]

    # the batch body itself (`@serve.batch` needs a replica around it): three requests, one batch, and a
    # fourth, a set fused by agreement that asks for refinement
    batch = [("drone", [array], 5, None, "mean", False, time.perf_counter()) for array in arrays]
    batch.append(("drone", arrays[:2], 5, None, "agreement", True, time.perf_counter()))
    answers = asyncio.run(encoder._localize_batch.__wrapped__(encoder, batch))
    index = open_index(world.store, world.index, _current_version(app_url))
    meta = index.meta
    for image, answer in zip(drone, answers[:3], strict=True):
        ids, scores = expected_top(world, image, "drone", 5)
        assert [c["tile_id"] for c in answer["candidates"]] == ids
        np.testing.assert_allclose([c["score"] for c in answer["candidates"]], scores, atol=1e-4)
        assert answer["version"] == _current_version(app_url)
        # the location comes back from the SatelliteIndex deployment with the candidates it searched
        deep = candidates_in_process(world, index, image, "drone", 5)
        assert_same_location(answer["location"], estimate_location(deep, "drone", meta).to_dict())
        assert "fusion" not in answer and "refine" not in answer
    assert [answer["timings_ms"]["batch"] for answer in answers] == [4, 4, 4, 4]
    fused = answers[3]
    assert fused["fusion"]["method"] == "agreement" and len(fused["fusion"]["weights"]) == 2
    assert sum(fused["fusion"]["weights"]) == pytest.approx(1.0)
    assert fused["location"]["method"] in ("unknown", "fused", "refined", "top1")
    # refinement through the deployment is tested where the index's scores can place a photo (above)


def _encoder_searching_through_the_deployment(world: ServedWorld) -> Any:
    """A QueryEncoder replica object in this process with no index of its own (`colocated_search:
    false`): it searches through the running application's SatelliteIndex deployment."""
    from ray import serve

    from serve.encoder import QueryEncoder
    from serve.run import APP_NAME

    index = serve.get_deployment_handle("SatelliteIndex", app_name=APP_NAME)
    pinned, fingerprint = weights.pin(world.encoder)
    return QueryEncoder.func_or_class(pinned, fingerprint, {"max_batch_size": 4}, None, None, index)


CHROMIUM = Path("/usr/bin/chromium")


def test_web_page_localizes_a_set_and_explains_a_candidate(app_url, world, queries, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"no browser: {CHROMIUM} is missing (make test installs Debian's chromium where apt can)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    photos = []
    for n in range(2):
        path = tmp_path / f"drone-{n}.jpg"
        path.write_bytes(query_of(queries, "drone", n)["image"])
        photos.append(str(path))
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(bad_images.text_file())
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
        )
        try:
            page = browser.new_page()
            # every request is recorded; one that would leave the app's host is refused and reported
            host = urlsplit(app_url).netloc
            requested: list[str] = []
            page.route("**/*", lambda route: _same_host_only(route, host, requested))
            responses: list[Any] = []
            page.on("response", lambda response: responses.append(response))
            page.goto(f"{app_url}/")
            page.get_by_test_id("served").filter(has_text="index").wait_for()
            page.get_by_test_id("images").set_input_files(photos)
            assert page.get_by_test_id("previews").locator("img").count() == 2
            assert page.get_by_test_id("fusion-method").locator("option").first.inner_text() == (
                f"service default ({_configured('fusion')})"
            )
            page.get_by_test_id("modality").select_option("drone")
            page.get_by_test_id("k").fill("4")
            page.get_by_test_id("localize").click()
            candidates = page.get_by_test_id("candidate")
            candidates.nth(3).wait_for()
            assert candidates.count() == 4
            images = "[...document.querySelectorAll('#candidates img')]"
            loaded = f"{images}.every(i => i.complete && i.naturalWidth)"
            page.wait_for_function(f"() => {loaded}")
            # the index's own warning about its scores (collapsed, or a calibration at chance) is shown
            localized = next(r for r in responses if urlsplit(r.url).path == "/v1/localize")
            warning = localized.json()["index"].get("warning")
            banner = page.get_by_test_id("index-warning")
            if warning:
                assert banner.is_visible() and warning in banner.inner_text()
            else:
                assert banner.is_hidden()
            first_score = float(candidates.nth(0).get_by_test_id("score").inner_text())
            assert -1.0 <= first_score <= 1.0
            assert "," in candidates.nth(0).get_by_test_id("coords").inner_text()
            _map_places_the_candidates(page, candidates)
            _page_shows_the_location(page, localized.json())
            fusion = page.get_by_test_id("fusion").inner_text()  # a set of two: how it was fused
            assert f"2 photos fused by {_configured('fusion')}" in fusion and "photo 2: 0." in fusion
            page.screenshot(path=str(tmp_path / "map.png"), full_page=True)
            candidates.nth(1).click()
            second = candidates.nth(1).get_attribute("data-tile-id")
            page.get_by_test_id("explained-tile").filter(has_text=f"tile {second} ·").wait_for()
            page.get_by_test_id("source").filter(has_text="evidence").wait_for()
            # a card selected in the list is the marker selected on the map
            selected = page.locator("[data-testid=map-marker].active")
            assert selected.count() == 1 and selected.get_attribute("data-tile-id") == second
            assert page.get_by_test_id("verdict").inner_text()
            assert "similarity" in page.get_by_test_id("reasoning").inner_text().lower()
            # the tiny world's modalities are answered with the pooled calibration, and the page says so
            assert POOLED in page.get_by_test_id("notes").inner_text()
            heatmap = page.get_by_test_id("heatmap").get_attribute("src") or ""
            assert heatmap.startswith("data:image/png;base64,")
            # on a version whose scores separate places: the estimate on the map, marker and circle
            serving = _current_version(app_url)
            reliable = _publish_edited(world, serving, _reliable)
            try:
                assert _wait_until_serving(app_url, reliable, query_of(queries, "drone")["image"])
                before = len(responses)
                page.get_by_test_id("fusion-method").select_option("agreement")
                page.get_by_test_id("localize").click()
                page.get_by_test_id("location-marker").wait_for()
                answer = next(r for r in responses[before:] if urlsplit(r.url).path == "/v1/localize").json()
                assert answer["index"]["version"] == reliable
                _page_shows_the_location(page, answer)
                assert "fused by agreement" in page.get_by_test_id("fusion").inner_text()
                page.screenshot(path=str(tmp_path / "location.png"), full_page=True)
            finally:
                point_current(IndexLocation(world.store, world.index), serving)
            page.get_by_test_id("images").set_input_files([str(bad)])
            page.get_by_test_id("localize").click()
            error = page.get_by_test_id("error")
            error.wait_for()
            assert "not an image" in error.inner_text()
        finally:
            browser.close()
    off_host = [url for url in requested if urlsplit(url).netloc != host]
    assert not off_host, f"the page asked for something other than the app: {off_host}"
    statuses = {urlsplit(response.url).path: response.status for response in responses}
    for vendored in ("leaflet.js", "leaflet.css"):
        assert statuses.get(f"/static/vendor/leaflet/{vendored}") == 200, statuses


def _page_shows_the_location(page: Any, body: dict[str, Any]) -> None:
    """The caption states the answer's location (lat/lon, radius, coverage, method), and the map has its
    marker and radius circle, inside the map's frame; an unknown one: no marker, and the reason."""
    location = body["location"]
    caption = page.get_by_test_id("location")
    assert caption.is_visible()
    text = page.get_by_test_id("location-text").inner_text()
    marker, circle = page.get_by_test_id("location-marker"), page.get_by_test_id("location-circle")
    if location["method"] == "unknown":
        assert "unknown" in text.lower() and marker.count() == 0 and circle.count() == 0
        assert page.get_by_test_id("location-reason").inner_text() == location["reason"]
        return
    assert f"{location['lat']:.5f}, {location['lon']:.5f}" in text and location["method"] in text
    assert f"{round(location['coverage'] * 100)} %" in text
    radius = location["radius_m"]
    assert (f"{round(radius)} m" if radius < 1000 else " km") in text
    assert marker.count() == 1 and circle.count() == 1
    assert float(marker.get_attribute("data-lat") or "nan") == pytest.approx(location["lat"])
    assert float(marker.get_attribute("data-lon") or "nan") == pytest.approx(location["lon"])
    assert float(circle.get_attribute("data-radius-m") or "nan") == pytest.approx(radius)
    frame, dot, ring = (
        page.get_by_test_id("map").bounding_box(),
        marker.bounding_box(),
        circle.bounding_box(),
    )
    assert frame and dot and ring, "the map, the marker or the circle is not laid out"
    centre = (dot["x"] + dot["width"] / 2, dot["y"] + dot["height"] / 2)
    assert frame["x"] <= centre[0] <= frame["x"] + frame["width"]
    assert frame["y"] <= centre[1] <= frame["y"] + frame["height"]
    # the circle is drawn around the marker, at the radius's scale on the map (a few pixels at least)
    assert ring["x"] <= centre[0] <= ring["x"] + ring["width"] and ring["width"] > 4
    assert ring["width"] == pytest.approx(ring["height"], rel=0.05)


def _same_host_only(route: Any, host: str, requested: list[str]) -> None:
    url = route.request.url
    if urlsplit(url).scheme in ("data", "blob"):
        route.continue_()
        return
    requested.append(url)
    if urlsplit(url).netloc == host:
        route.continue_()
    else:
        route.abort()


def _map_places_the_candidates(page: Any, candidates: Any) -> None:
    """The map panel: a marker per candidate with coordinates at those coordinates, the top one outlined,
    and a click on another marker selects that candidate's card just as a click on the card does."""
    assert page.get_by_test_id("map").is_visible()
    cards = [
        {
            "tile_id": candidates.nth(n).get_attribute("data-tile-id"),
            "coords": candidates.nth(n).get_by_test_id("coords").inner_text(),
        }
        for n in range(candidates.count())
    ]
    placed = [card for card in cards if "," in card["coords"]]
    assert placed, "the test world's tiles all have coordinates"
    markers = page.get_by_test_id("map-marker")
    assert markers.count() == len(placed)
    assert page.get_by_test_id("map-note").is_hidden()
    by_tile = {markers.nth(n).get_attribute("data-tile-id"): markers.nth(n) for n in range(markers.count())}
    assert set(by_tile) == {card["tile_id"] for card in placed}
    page.get_by_test_id("map").scroll_into_view_if_needed()
    frame = page.get_by_test_id("map").bounding_box()
    for rank, card in enumerate(cards, start=1):
        if card not in placed:
            continue
        marker = by_tile[card["tile_id"]]
        lat, lon = (float(part) for part in card["coords"].split(","))
        assert float(marker.get_attribute("data-lat") or "nan") == pytest.approx(lat, abs=1e-5)
        assert float(marker.get_attribute("data-lon") or "nan") == pytest.approx(lon, abs=1e-5)
        assert marker.get_attribute("data-rank") == str(rank)
        title = marker.get_attribute("title") or ""
        assert card["tile_id"] in title and f"#{rank}" in title and "score" in title
        assert card["tile_id"] in (marker.locator("img").get_attribute("alt") or "")
        assert ("top" in (marker.get_attribute("class") or "").split()) == (rank == 1)
        box = marker.bounding_box()  # the map fits its bounds to the candidates
        assert frame and box, "the map or a marker is not laid out"
        assert frame["x"] <= box["x"] + box["width"] / 2 <= frame["x"] + frame["width"]
        assert frame["y"] <= box["y"] + box["height"] / 2 <= frame["y"] + frame["height"]
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=map-marker] img')]"
        ".every(i => i.complete && i.naturalWidth)"
    )
    # a real click on a marker other than the top one, the lowest ranked whose centre no other tile covers
    other = page.evaluate(
        """() => [...document.querySelectorAll('[data-testid=map-marker]')].filter((el) => {
            const r = el.getBoundingClientRect();
            const hit = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
            return el.dataset.rank !== '1' && hit && hit.closest('[data-testid=map-marker]') === el;
        }).map((el) => el.dataset.tileId).pop()"""
    )
    assert other, "every marker but the top one lies under another"
    by_tile[other].click()
    page.get_by_test_id("explained-tile").filter(has_text=f"tile {other} ·").wait_for()
    active = page.locator("[data-testid=candidate].active")
    assert active.count() == 1 and active.get_attribute("data-tile-id") == other
    assert "active" in (by_tile[other].get_attribute("class") or "").split()
    page.get_by_test_id("source").filter(has_text="evidence").wait_for()


def test_bearer_token_when_configured(app_url, world, queries) -> None:
    env = {"runtime_env": {"env_vars": {"GLEAM_API_TOKEN": TOKEN}}, "num_cpus": 0.1}
    port = int(app_url.rsplit(":", 1)[1])
    start(load_config(args=serve_args(world), port=port, deployments={"Ingress": {"ray_actor_options": env}}))
    try:
        query = query_of(queries, "drone")
        files = [("image", ("q.jpg", query["image"], "image/jpeg"))]
        data = {"modality": "drone"}
        assert requests.post(f"{app_url}/v1/localize", files=files, data=data, timeout=60).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        response = requests.post(f"{app_url}/v1/localize", files=files, data=data, headers=wrong, timeout=60)
        assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
        right = {"Authorization": f"Bearer {TOKEN}"}
        response = requests.post(f"{app_url}/v1/localize", files=files, data=data, headers=right, timeout=60)
        assert response.status_code == 200, response.text
        assert TOKEN not in json.dumps(requests.get(f"{app_url}/healthz", timeout=30).json())
    finally:
        start(load_config(args=serve_args(world), port=port))


def test_index_from_another_encoder_is_refused_and_the_old_one_kept(app_url, world, tmp_path: Path) -> None:
    serving = _current_version(app_url)
    other = tiny_encoder(tmp_path / "other", seed=9, embed_dim=16)
    rebuilt = build_index(index_config(world, f"encoder={other}", "calibration.split=null"))
    assert rebuilt.status == "published"
    deadline = time.monotonic() + 30
    refused: dict[str, str] = {}
    while time.monotonic() < deadline and rebuilt.version not in refused:
        refused = requests.get(f"{app_url}/healthz", timeout=30).json()["index"]["refused"]
        time.sleep(0.3)
    try:
        assert "EncoderMismatchError" in refused[rebuilt.version]
        assert _current_version(app_url) == serving
        query = open_corpus(world.corpus).read("queries", ["image", "modality"]).to_pylist()[0]
        assert localize_files(app_url, [query["image"]], modality=query["modality"]).status_code == 200
    finally:
        point_current(IndexLocation(world.store, world.index), serving)
