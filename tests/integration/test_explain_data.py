# ruff: noqa: RUF001  (Chinese text uses full-width punctuation on purpose)
"""The explanation-set job end to end on real parts: a Ray-prepared world, a published index of a tiny
encoder, a real OpenAI-compatible HTTP server on 127.0.0.1 backed by a tiny Qwen2.5-VL, Ray Data actors,
sqlite MLflow. One long scenario: faults (timeout, 429, 500, garbage) -> rejects counted; a review round
trip; a re-run that asks only what is missing and keeps the reviewed words; a re-run with nothing to do.
Then the local-model teacher on a few pairs.

The endpoint answers in `label` mode (a well-formed rationale for the label its prompt states) while the
garbage fault is the random-weight tiny model's own text. Teaching the tiny model the teacher's answer
(tests.support.tiny_vlm.teach_tiny_vlm, label in the prompt -> the JSON answer) does work: in a trial,
8 lessons (2 labels x 2 languages x 2 modalities) then 24 of 24 unseen image pairs answered validly;
but the teaching alone took ~100 s on this 2-core machine, more than this whole module may take, so the
valid answers come from the prompt's label through the same HTTP path.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest
import ray
import typer
from typer.testing import CliRunner

from gleam import storage
from gleam.config import load_config
from gleam.corpus.reader import open_corpus
from gleam.explain.dataset.config import ExplainDataConfig
from gleam.explain.dataset.job import ExplanationSetExistsError, build_explanation_set
from gleam.explain.dataset.teachers import TeacherRefused, jpeg_data_url
from gleam.explain.explanation_set import PAIRS_SCHEMA, open_explanation_set
from gleam.index.config import IndexBuildConfig
from gleam.index.job import build_index
from gleam_cli.explain_data import explain_data, index_access, review_app
from tests.support.openai_server import Fault, TeacherServer, image_key
from tests.support.tiny_vlm import build_tiny_qwen25vl
from tests.support.training import tiny_encoder

pytestmark = pytest.mark.integration

KEY_ENV = "GLEAM_TEST_TEACHER_KEY"
KEY = "sk-test-do-not-log-0f3a"
MAX_PIXELS = 64 * 64
# (split, modality) -> what the endpoint does for every query image of that group on the first run
FAULTS = {
    ("test", "drone"): Fault("500", times=1),  # the first request of each image fails, the retry answers
    ("test", "ground"): Fault("429"),  # rate limited until the retries run out
    ("train", "drone"): Fault("timeout"),  # slower than the client's timeout, every time
    ("train", "ground"): Fault("garbage"),  # the random-weight model's words: unparseable (and cached)
}


@pytest.fixture(scope="module")
def world(prepared_world, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("explain-world")
    corpus = prepared_world(24)
    encoder = tiny_encoder(root / "encoder", seed=0, embed_dim=16)
    store = str(root / "store")
    build_index(
        IndexBuildConfig(
            name="explain-world",
            corpus=corpus,
            encoder=encoder,
            store=store,
            embed={"batch_size": 32, "actors": 1, "num_cpus": 0.5},
            recall={"floor": 0.0},
            tracking={"enabled": False},
        )
    )
    model = build_tiny_qwen25vl(root / "tiny-vlm")
    server = TeacherServer(
        "tiny-teacher", answer="label", garbage_folder=model, api_key=KEY, timeout_sleep_s=8.0
    )
    server.start()
    yield {"root": root, "corpus": corpus, "store": store, "model": model, "server": server}
    server.stop()


def overrides(world: dict[str, Any], experiment: str, name: str = "world-set") -> list[str]:
    return [
        f"name={name}",
        f"output={world['root'] / 'sets'}",
        f"corpus={world['corpus']}",
        f"index.store={world['store']}",
        "index.name=explain-world",
        "splits=[train, test]",
        "modalities=[drone, ground]",
        "queries_per_modality={train: 1, test: 2}",
        "negatives_per_query=1",
        "teacher.kind=openai",
        f"teacher.base_url={world['server'].url}",
        "teacher.model=tiny-teacher",
        f"teacher.api_key_env={KEY_ENV}",
        "teacher.concurrency=8",
        "teacher.timeout_s=6.0",
        "teacher.max_retries=1",
        "teacher.backoff_s=0.05",
        f"teacher.max_image_pixels={MAX_PIXELS}",
        "batch_size=8",
        "embed.batch_size=16",
        "embed.num_cpus=0.5",
        f"tracking.experiment={experiment}",
    ]


def fault_plan(corpus_uri: str) -> dict[str, tuple[str, str]]:
    """query image key (as the server sees it, after the client's encoding) -> its (split, modality)."""
    queries = open_corpus(corpus_uri).read("queries", ["modality", "split", "image"]).to_pylist()
    return {
        image_key(jpeg_data_url(q["image"], MAX_PIXELS)): (q["split"], q["modality"])
        for q in queries
        if (q["split"], q["modality"]) in FAULTS
    }


def requests_per_image(
    server: TeacherServer, groups: dict[str, tuple[str, str]], group: tuple[str, str]
) -> list[int]:
    """How many requests the server received for each query image of `group` that the job asked about."""
    return sorted(server.by_key[key] for key, g in groups.items() if g == group and server.by_key[key])


def cli() -> typer.Typer:
    """The commands as `gleam` registers them (gleam_cli.main is not this module's to edit)."""
    app = typer.Typer()
    app.command("explain-data")(explain_data)
    app.add_typer(review_app, name="explain-review")
    return app


def files_on_disk(set_uri: str, part: str) -> list[str]:
    return sorted(Path(e.uri).name for e in storage.list_files(storage.join(set_uri, part)))


def test_the_set_is_built_reviewed_and_finished_without_paying_twice(
    world: dict[str, Any],
    experiment_name: str,
    mlflow_client,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    server: TeacherServer = world["server"]
    config = load_config(ExplainDataConfig, None, overrides(world, experiment_name))
    groups = fault_plan(world["corpus"])
    server.faults = {key: FAULTS[group] for key, group in groups.items()}
    server.reset_counts()

    # --- run 1: faults -----------------------------------------------------------------------------------
    first = build_explanation_set(config, index_access())
    manifest = first.manifest
    counts = manifest["counts"]
    assert counts["queries"] == {"test": {"drone": 2, "ground": 2}, "train": {"drone": 1, "ground": 1}}
    # a query gives 2 pairs (match + 1 negative), each asked in 2 languages: test groups 8 answers, train 4
    assert counts["pairs"] == 4 and counts["by_split_modality_match"] == {
        "test": {"drone": {"match": 2, "no_match": 2}}
    }
    rejects = counts["rejects"]
    assert rejects["by_reason"] == {"teacher_unavailable": 8 + 4, "unparseable": 4} and rejects["pairs"] == 8
    assert rejects["by_language"] == {
        "en": {"teacher_unavailable": 6, "unparseable": 2},
        "zh": {"teacher_unavailable": 6, "unparseable": 2},
    }
    assert counts["teacher"] == {"asked": 24, "cache_hits": 0}
    # per query image (4 answers each on test, 4 on train): one 500 then retried; every 429 retried once;
    # garbage answered once (the timed-out group is not counted: a request the client gave up on while it
    # was still queued on this loaded machine may never reach the handler)
    assert requests_per_image(server, groups, ("test", "drone")) == [5, 5]
    assert requests_per_image(server, groups, ("test", "ground")) == [8, 8]
    assert requests_per_image(server, groups, ("train", "ground")) == [4]
    # every answer that came back was cached (garbage too); timeouts and 429s were not
    cache = [e.uri for e in storage.list_files(storage.join(first.set_uri, "cache"))]
    assert len(cache) == 8 + 4
    explanation_set = open_explanation_set(first.set_uri)
    pairs = explanation_set.read("pairs")
    assert pairs.schema == PAIRS_SCHEMA and set(pairs["teacher"].to_pylist()) == {"openai:tiny-teacher"}
    assert all(
        r and not r.startswith("{")
        for r in pairs["reasoning_en"].to_pylist() + pairs["reasoning_zh"].to_pylist()
    )
    _check_pairs_against_the_index(pairs.to_pylist(), world)
    assert manifest["index"]["name"] == "explain-world" and manifest["index"]["version"]
    assert manifest["calibration"] is not None and set(manifest["evidence"]) == {"drone", "ground"}
    assert KEY not in json.dumps(manifest)

    # the MLflow run: params, counts as metrics, tagged with the set; the key is nowhere in it
    run = mlflow_client.get_run(first.run_id)
    assert (
        run.data.tags["gleam.job"] == "explain-data" and run.data.tags["gleam.explain_set"] == first.set_uri
    )
    assert (
        run.data.metrics["counts.pairs"] == 4
        and run.data.metrics["counts.rejects.by_reason.unparseable"] == 4
    )
    assert run.data.params["teacher.api_key_env"] == KEY_ENV and KEY not in json.dumps(run.data.params)

    # --- review the test split (through the CLI) ---------------------------------------------------------
    runner = CliRunner()
    export = tmp_path / "review.jsonl"
    result = runner.invoke(
        cli(), ["explain-review", "export", "--set", first.set_uri, "--split", "test", "--out", str(export)]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in export.read_text().splitlines()]
    assert len(rows) == 4 and all((export.parent / r["tile_image"]).is_file() for r in rows)
    rows[0]["reasoning_zh"] = (
        "审阅者改写：两张图像中的道路和屋顶一致。" if rows[0]["match"] else "审阅者改写：道路走向不同。"
    )
    export.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    result = runner.invoke(cli(), ["explain-review", "import", str(export), "--set", first.set_uri])
    assert result.exit_code == 0 and "1 revised, 3 approved" in result.output, result.output
    rows[1]["match"] = not rows[1]["match"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    result = runner.invoke(cli(), ["explain-review", "import", str(bad), "--set", first.set_uri])
    assert result.exit_code == 2 and f"line 2 (pair_id {rows[1]['pair_id']}): match: changed" in result.output

    # --- run 2: the endpoint is healthy; only what was never answered is asked ---------------------------
    server.faults = {}
    server.reset_counts()
    second = build_explanation_set(config, index_access())
    counts = second.manifest["counts"]
    assert counts["teacher"] == {"asked": 12, "cache_hits": 12} and server.calls == 12
    assert counts["pairs"] == 4 + 4 + 2 and counts["rejects"]["by_reason"] == {"unparseable": 4}
    assert counts["review"] == {"approved": 3, "none": 6, "revised": 1}
    pairs = open_explanation_set(second.set_uri).read("pairs")
    assert pairs.num_rows == len(set(pairs["pair_id"].to_pylist())) == 10  # no duplicate rows
    revised = pairs.filter(pc.equal(pairs["review"], "revised")).to_pylist()
    assert [r["reasoning_zh"] for r in revised] == [rows[0]["reasoning_zh"]]  # the reviewer's words survive
    listed = second.manifest["files"]
    assert files_on_disk(second.set_uri, "pairs") == sorted(listed["pairs"])  # old versions deleted
    assert files_on_disk(second.set_uri, "rejects") == sorted(listed["rejects"])
    assert second.manifest["reviews"] and second.run_id != first.run_id

    # --- run 3: complete, nothing to do (through the CLI); another config under the name is refused -------
    server.reset_counts()
    args = ["explain-data", *(a for o in overrides(world, experiment_name) for a in ("--set", o))]
    result = runner.invoke(cli(), args)
    assert result.exit_code == 0 and "nothing to do" in result.output, result.output
    assert server.calls == 0
    runs = mlflow_client.search_runs([run.info.experiment_id])
    assert len(runs) == 2  # one per run that did work
    other = load_config(
        ExplainDataConfig, None, [*overrides(world, experiment_name), "negatives_per_query=2"]
    )
    with pytest.raises(ExplanationSetExistsError, match="another config"):
        build_explanation_set(other, index_access())

    # --- a key the endpoint refuses stops the job with the endpoint's reason, and publishes nothing ---------
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    small = ["splits=[test]", "modalities=[drone]", "queries_per_modality=1", "languages=[en]"]
    refused = load_config(
        ExplainDataConfig, None, [*overrides(world, experiment_name, "refused-set"), *small]
    )
    free_before = ray.available_resources().get("CPU", 0.0)
    with pytest.raises(TeacherRefused, match=r"refused model 'tiny-teacher': HTTP 401") as caught:
        build_explanation_set(refused, index_access())
    assert "sk-wrong" not in str(caught.value)
    assert not storage.exists(storage.join(refused.set_uri, "manifest.json"))
    # the failed job's teacher actors are gone while its error is still held (as pytest holds it here):
    # a leaked pool kept its CPUs and a later Ray Train job of the suite waited for them forever
    deadline = time.monotonic() + 60
    while ray.available_resources().get("CPU", 0.0) < free_before:
        assert time.monotonic() < deadline, (free_before, ray.available_resources())
        time.sleep(0.5)


def _check_pairs_against_the_index(pairs: list[dict[str, Any]], world: dict[str, Any]) -> None:
    """Matches are the query's own tile; negatives are wrong tiles of the same split; ranks are 1-based."""
    corpus = open_corpus(world["corpus"])
    tiles = {t["tile_id"]: t["split"] for t in corpus.read("tiles", ["tile_id", "split"]).to_pylist()}
    own = {q["query_id"]: q["tile_id"] for q in corpus.read("queries", ["query_id", "tile_id"]).to_pylist()}
    for pair in pairs:
        assert (pair["tile_id"] == own[pair["query_id"]]) is pair["match"]
        assert tiles[pair["tile_id"]] == pair["split"] and pair["rank"] >= 1
        assert -1.0 <= pair["similarity"] <= 1.0001


def test_a_local_model_teacher_on_a_few_pairs(world: dict[str, Any], experiment_name: str) -> None:
    """One Ray Data actor holding the tiny model: random weights say garbage, which is cached and counted."""
    mllm = {"model": str(world["model"]), "device": "cpu", "max_new_tokens": 16}
    local_teacher = {"kind": "local", "mllm": mllm, "num_cpus": 0.5}
    config = load_config(
        ExplainDataConfig,
        None,
        [
            *overrides(world, experiment_name, name="local-set"),
            "splits=[test]",
            "modalities=[drone]",
            "queries_per_modality=1",
            "languages=[en]",
            "teacher=" + json.dumps(local_teacher),
            "tracking.enabled=false",
            "embed.in_driver_below=0",  # the queries go through the Ray Data actor pool here
        ],
    )
    result = build_explanation_set(config, index_access())
    counts = result.manifest["counts"]
    assert result.manifest["teacher"] == f"local:{world['model']}"
    assert counts["teacher"] == {"asked": 2, "cache_hits": 0}  # the match and one negative, in English
    assert counts["rejects"]["by_reason"] == {"unparseable": 2} and counts["pairs"] == 0
    rejects = open_explanation_set(result.set_uri).read("rejects").to_pylist()
    assert {r["teacher"] for r in rejects} == {f"local:{world['model']}"} and all(
        r["detail"] for r in rejects
    )
    again = build_explanation_set(config, index_access())
    assert again.skipped  # nothing transient to retry: a complete set
