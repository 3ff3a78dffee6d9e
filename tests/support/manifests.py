"""Render the kustomize overlays in k8s/ and validate every object as strictly as an API server would.

There is no API server here, so the checks it would make are made from the same schemas:

- ray.io kinds against the openAPIV3Schema of the served version of their KubeRay v1.7.0 CRD, strict
  (an unknown field is an error unless its schema node preserves unknown fields, as the API server's
  strict field validation does), with `x-kubernetes-int-or-string`, list-map/set uniqueness, the root
  `metadata` as a real ObjectMeta, and every `x-kubernetes-validations` CEL rule evaluated with
  cel-python at the node where it sits (transition rules, which need `oldSelf`, only run on update and
  are reported as skipped with that reason);
- built-in kinds strictly with kubernetes-validate against the Kubernetes schemas it ships.

Each failure names the object (kind/name) and the JSON path.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource

from tests.support.paths import REPO

K8S = REPO / "k8s"
OVERLAYS = ("dev", "prod")
KUBECTL = Path(sys.executable).parent / "kubectl"
KUBERNETES_VERSION = "1.33"  # the built-in kinds' schemas; a version KubeRay v1.7.0 supports
KUBERAY_SCHEMAS = "kuberay-v1.7.0"
# the job configs live in jobs/configs/, outside the kustomization root
LOAD_RESTRICTOR = "--load-restrictor=LoadRestrictionsNone"
_OBJECT_META = (
    "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
)
_OLD_SELF = re.compile(r"\boldSelf\b")
_CRD_HEAD = re.compile(r"\n  versions:\n")


def render(overlay: str | Path) -> list[dict[str, Any]]:
    """`kubectl kustomize` of an overlay (a name under k8s/overlays or a folder), as parsed objects."""
    folder = overlay if isinstance(overlay, Path) else K8S / "overlays" / overlay
    result = subprocess.run(
        [str(KUBECTL), "kustomize", LOAD_RESTRICTOR, str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {folder} failed: {result.stderr.strip()}")
    return [obj for obj in yaml.load_all(result.stdout, Loader=yaml.CSafeLoader) if obj]


def kuberay_schemas_dir() -> Path:
    """The KubeRay CRDs, read in place (`$GLEAM_K8S_SCHEMAS` or `<repo>/../shared/k8s-schemas`)."""
    root = Path(os.environ.get("GLEAM_K8S_SCHEMAS") or REPO.parent / "shared" / "k8s-schemas")
    folder = root / KUBERAY_SCHEMAS
    if not any(folder.glob("ray.io_*.yaml")):
        pytest.skip(f"KubeRay v1.7.0 CRD schemas not found in {folder} (set GLEAM_K8S_SCHEMAS)")
    return folder


@dataclass(frozen=True)
class Problem:
    """One way an object would be refused: where (kind/name, JSON path) and why."""

    kind: str
    name: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}: {self.path or '<root>'}: {self.message}"


@dataclass(frozen=True)
class SkippedRule:
    """A CEL rule that was not evaluated, and why (so a skip is visible, never silent)."""

    kind: str
    name: str
    path: str
    rule: str
    reason: str


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    skipped: list[SkippedRule] = field(default_factory=list)
    validated: list[str] = field(default_factory=list)  # "Kind/name" of every object checked

    def extend(self, other: Report) -> None:
        self.problems += other.problems
        self.skipped += other.skipped
        self.validated += other.validated


def json_path(parts: Iterable[str | int]) -> str:
    """`spec.workerGroupSpecs[0].template` from ("spec", "workerGroupSpecs", 0, "template")."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def object_name(obj: dict[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("name") or f"{metadata.get('generateName', '')}<generated>")


# --- CRD schemas -----------------------------------------------------------------------------------


def strict_schema(node: Any) -> Any:
    """An OpenAPI v3 structural schema as a JSON Schema that refuses unknown fields.

    Objects get `additionalProperties: false` unless the schema already says what extra keys may be
    (`additionalProperties`) or keeps them (`x-kubernetes-preserve-unknown-fields`); `nullable` and
    `x-kubernetes-int-or-string` become the JSON Schema types they mean.
    """
    if isinstance(node, list):
        return [strict_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: value for key, value in node.items() if key != "x-kubernetes-validations"}
    for key in ("properties", "patternProperties"):
        if isinstance(out.get(key), dict):
            out[key] = {name: strict_schema(child) for name, child in out[key].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = strict_schema(out[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if isinstance(out.get(key), list):
            out[key] = strict_schema(out[key])
    if out.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    is_object = out.get("type") == "object" or "properties" in out
    keeps_unknown = out.get("x-kubernetes-preserve-unknown-fields") is True
    if is_object and not keeps_unknown and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


@functools.cache
def _kubernetes_definitions() -> Registry:
    """kubernetes-validate's strict definitions (for ObjectMeta), as a registry for `$ref`."""
    folder = f"v{KUBERNETES_VERSION}.0-local-strict"
    ref = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema" / folder
    definitions = json.loads((ref / "_definitions.json").read_text())
    return Resource.from_contents(definitions) @ Registry()


class CrdSchema:
    """The served version of one CRD: a strict JSON Schema validator and the raw schema for CEL."""

    def __init__(self, kind: str, raw: dict[str, Any]) -> None:
        self.kind = kind
        self.raw = raw
        schema = strict_schema(raw)
        schema["properties"]["metadata"] = {"$ref": _OBJECT_META}  # the API server's ObjectMeta
        self.validator = jsonschema.Draft202012Validator(schema, registry=_kubernetes_definitions())


class KubeRaySchemas:
    """The ray.io CRDs of one folder, parsed when a kind is first asked for (they are megabytes)."""

    def __init__(self, folder: Path) -> None:
        self.files: dict[str, Path] = {}
        for path in sorted(folder.glob("*.yaml")):
            text = path.read_text()
            head = yaml.safe_load(_CRD_HEAD.split(text, maxsplit=1)[0])  # group and names only
            spec = head["spec"]
            self.files[f"{spec['group']}/{spec['names']['kind']}"] = path
        self._served: dict[str, dict[str, dict[str, Any]]] = {}  # group/kind -> version -> raw schema
        self._loaded: dict[tuple[str, str], CrdSchema] = {}

    def schema(self, api_version: str, kind: str) -> CrdSchema | None:
        group, _, version = api_version.partition("/")
        key = (api_version, kind)
        if key not in self._loaded:
            raw = self._served_versions(f"{group}/{kind}").get(version)
            if raw is None:
                return None
            self._loaded[key] = CrdSchema(kind, raw)
        return self._loaded[key]

    def _served_versions(self, group_kind: str) -> dict[str, dict[str, Any]]:
        if group_kind not in self._served:
            path = self.files.get(group_kind)
            crd = yaml.load(path.read_text(), Loader=yaml.CSafeLoader) if path else {"spec": {"versions": []}}
            self._served[group_kind] = {
                v["name"]: v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v.get("served")
            }
        return self._served[group_kind]


@functools.cache
def kuberay_schemas(folder: Path) -> KubeRaySchemas:
    return KubeRaySchemas(folder)


# --- CEL rules and list semantics ------------------------------------------------------------------


class CelRules:
    """Compiled `x-kubernetes-validations` rules, each compiled once."""

    def __init__(self) -> None:
        self.environment = celpy.Environment()
        self._programs: dict[str, celpy.Runner] = {}

    def holds(self, rule: str, value: Any) -> tuple[bool, str]:
        """(True, "") when `rule` holds for `self` = value; (False, why) otherwise."""
        if rule not in self._programs:
            self._programs[rule] = self.environment.program(self.environment.compile(rule))
        try:
            result = self._programs[rule].evaluate({"self": celpy.json_to_cel(value)})
        except celpy.CELEvalError as exc:
            return False, f"rule {rule!r} could not be evaluated: {exc.args[0] if exc.args else exc}"
        if isinstance(result, celpy.celtypes.BoolType) and bool(result):
            return True, ""
        if isinstance(result, celpy.celtypes.BoolType):
            return False, ""
        return False, f"rule {rule!r} did not give a boolean: {result!r}"


@dataclass
class _RuleWalk:
    """Walks one object with its schema: the CEL rules and list-type constraints of every node present."""

    cel: CelRules
    kind: str
    name: str
    report: Report

    def problem(self, path: list[str | int], message: str) -> None:
        self.report.problems.append(Problem(self.kind, self.name, json_path(path), message))

    def walk(self, node: dict[str, Any], value: Any, path: list[str | int]) -> None:
        for rule in node.get("x-kubernetes-validations") or []:
            self.rule(rule, value, path)
        if isinstance(value, dict):
            properties = node.get("properties") or {}
            extra = node.get("additionalProperties")
            for key, child in value.items():
                child_schema = properties.get(key, extra if isinstance(extra, dict) else None)
                if child_schema is not None:
                    self.walk(child_schema, child, [*path, key])
        elif isinstance(value, list) and isinstance(node.get("items"), dict):
            self.list_type(node, value, path)
            for index, child in enumerate(value):
                self.walk(node["items"], child, [*path, index])

    def rule(self, rule: dict[str, Any], value: Any, path: list[str | int]) -> None:
        text = rule["rule"]
        if _OLD_SELF.search(text) and not rule.get("optionalOldSelf"):
            reason = "transition rule (uses oldSelf): the API server evaluates it on update only"
            self.report.skipped.append(SkippedRule(self.kind, self.name, json_path(path), text, reason))
            return
        holds, why = self.cel.holds(text, value)
        if not holds:
            self.problem(path, f"{rule.get('message') or f'failed rule: {text}'} {why}".strip())

    def list_type(self, node: dict[str, Any], value: list[Any], path: list[str | int]) -> None:
        """List-type `map` entries are unique by their keys (defaults applied), `set` items by value."""
        list_type = node.get("x-kubernetes-list-type")
        if list_type == "map":
            keys = node.get("x-kubernetes-list-map-keys") or []
            fields = node["items"].get("properties") or {}
            seen: set[str] = set()
            for item in (item for item in value if isinstance(item, dict)):
                identity = json.dumps([item.get(k, (fields.get(k) or {}).get("default")) for k in keys])
                if identity in seen:
                    self.problem(path, f"duplicate entry for key ({', '.join(keys)}) = {identity}")
                seen.add(identity)
        elif list_type == "set":
            items = [json.dumps(item, sort_keys=True) for item in value]
            if len(set(items)) != len(items):
                self.problem(path, "duplicate items in a list of type set")


# --- validation ------------------------------------------------------------------------------------


class ManifestValidator:
    """Rendered objects: ray.io kinds against the KubeRay CRDs, the others with kubernetes-validate."""

    def __init__(self, schemas: KubeRaySchemas) -> None:
        self.schemas = schemas
        self.cel = CelRules()

    def validate(self, objects: Iterable[dict[str, Any]]) -> Report:
        report = Report()
        for obj in objects:
            report.extend(self.validate_one(obj))
        return report

    def validate_one(self, obj: dict[str, Any]) -> Report:
        api_version, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
        report = Report(validated=[f"{kind}/{object_name(obj)}"])
        if api_version.split("/")[0].endswith("ray.io"):
            self._custom(obj, report)
        else:
            report.problems += _builtin(obj)
        return report

    def _custom(self, obj: dict[str, Any], report: Report) -> None:
        kind, name = str(obj.get("kind")), object_name(obj)
        schema = self.schemas.schema(str(obj.get("apiVersion")), kind)
        if schema is None:
            message = f"no served CRD version for {obj.get('apiVersion')} {kind}"
            report.problems.append(Problem(kind, name, "", message))
            return
        errors = sorted(schema.validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path])
        report.problems += [Problem(kind, name, json_path(e.absolute_path), e.message) for e in errors]
        _RuleWalk(self.cel, kind, name, report).walk(schema.raw, obj, [])


def _builtin(obj: dict[str, Any]) -> list[Problem]:
    kind, name = str(obj.get("kind")), object_name(obj)
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [Problem(kind, name, json_path(error.path), error.message)]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [Problem(kind, name, "", error.message)]
    return []


def validator() -> ManifestValidator:
    """The validator over the KubeRay v1.7.0 CRDs (skips the test when they are absent)."""
    return ManifestValidator(kuberay_schemas(kuberay_schemas_dir()))


# --- walking rendered objects ----------------------------------------------------------------------


def by_kind(objects: Iterable[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def ray_cluster_spec(obj: dict[str, Any]) -> dict[str, Any]:
    """The RayCluster spec inside a RayJob, a RayCronJob's template or a RayService."""
    spec = obj["spec"]
    if obj["kind"] == "RayJob":
        return spec["rayClusterSpec"]
    if obj["kind"] == "RayCronJob":
        return spec["jobTemplate"]["rayClusterSpec"]
    if obj["kind"] == "RayService":
        return spec["rayClusterConfig"]
    raise ValueError(f"{obj['kind']} holds no RayCluster spec")


def ray_groups(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """("head", group) and (groupName, group) for every group of a Ray object's cluster."""
    cluster = ray_cluster_spec(obj)
    yield "head", cluster["headGroupSpec"]
    for group in cluster.get("workerGroupSpecs") or []:
        yield group["groupName"], group
