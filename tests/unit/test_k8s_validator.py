"""The manifest validator can fail: broken objects of each kind are refused, naming the object and path."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest
import yaml

from tests.support.manifests import ManifestValidator, Report, json_path, strict_schema, validator

RAYJOB = yaml.safe_load(
    """
apiVersion: ray.io/v1
kind: RayJob
metadata: {name: sample, namespace: gleam, labels: {app: sample}}
spec:
  entrypoint: python jobs/prepare.py --config /etc/gleam/prepare.yaml
  entrypointNumCpus: 1
  backoffLimit: 1
  shutdownAfterJobFinishes: true
  ttlSecondsAfterFinished: 60
  rayClusterSpec:
    rayVersion: "2.60.0"
    headGroupSpec:
      rayStartParams: {num-cpus: "1"}
      template:
        spec:
          containers:
            - name: ray-head
              image: gleam-platform:0.1.0
              env: [{name: A, value: "1"}]
              ports: [{name: dashboard, containerPort: 8265}]
              resources: {limits: {cpu: 2, memory: 4Gi}, requests: {cpu: "2", memory: 4Gi}}
    workerGroupSpecs:
      - groupName: cpu
        minReplicas: 1
        maxReplicas: 2
        template:
          spec:
            containers: [{name: ray-worker, image: gleam-platform:0.1.0}]
"""
)
DEPLOYMENT = yaml.safe_load(
    """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: gleam}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx:1.27, ports: [{containerPort: 80}]}]
"""
)


@pytest.fixture(scope="module")
def checker() -> ManifestValidator:
    return validator()


def broken(base: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    obj = copy.deepcopy(base)
    change(obj)
    return obj


def messages(report: Report) -> list[str]:
    return [str(problem) for problem in report.problems]


def head_container(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]


def test_the_unbroken_samples_validate(checker: ManifestValidator) -> None:
    report = checker.validate([RAYJOB, DEPLOYMENT])
    assert report.problems == []
    assert report.validated == ["RayJob/sample", "Deployment/web"]


def test_an_unknown_field_in_a_rayjob_spec_is_refused(checker: ManifestValidator) -> None:
    obj = broken(RAYJOB, lambda o: o["spec"].update(entrypointt="python x.py"))
    assert messages(checker.validate_one(obj)) == [
        "RayJob/sample: spec: Additional properties are not allowed ('entrypointt' was unexpected)"
    ]


def test_an_unknown_field_deep_in_a_pod_template_is_refused(checker: ManifestValidator) -> None:
    obj = broken(RAYJOB, lambda o: head_container(o).update(imagePullPolcy="Always"))
    (problem,) = checker.validate_one(obj).problems
    assert problem.path == "spec.rayClusterSpec.headGroupSpec.template.spec.containers[0]"
    assert "'imagePullPolcy' was unexpected" in problem.message


def test_an_unknown_metadata_field_is_refused_as_objectmeta_would(checker: ManifestValidator) -> None:
    obj = broken(RAYJOB, lambda o: o["metadata"].update(label={"a": "b"}))
    (problem,) = checker.validate_one(obj).problems
    assert (problem.path, "'label' was unexpected" in problem.message) == ("metadata", True)


def test_a_wrong_type_is_refused(checker: ManifestValidator) -> None:
    obj = broken(RAYJOB, lambda o: o["spec"].update(backoffLimit="two"))
    assert messages(checker.validate_one(obj)) == [
        "RayJob/sample: spec.backoffLimit: 'two' is not of type 'integer'"
    ]


def test_int_or_string_takes_both_and_nothing_else(checker: ManifestValidator) -> None:
    limits = ["spec", "rayClusterSpec", "headGroupSpec", "template", "spec", "containers", 0, "resources"]
    assert checker.validate_one(RAYJOB).problems == []  # cpu: 2 (int) and cpu: "2" (string)
    obj = broken(RAYJOB, lambda o: head_container(o)["resources"]["limits"].update(cpu=True))
    (problem,) = checker.validate_one(obj).problems
    assert problem.path == json_path([*limits, "limits", "cpu"])


def test_a_violated_cel_rule_is_refused_with_its_message(checker: ManifestValidator) -> None:
    # spec.managedBy: "self in ['ray.io/kuberay-operator', 'kueue.x-k8s.io/multikueue']"
    obj = broken(RAYJOB, lambda o: o["spec"].update(managedBy="someone-else"))
    report = checker.validate_one(obj)
    (problem,) = report.problems
    assert problem.path == "spec.managedBy"
    assert problem.message.startswith("the managedBy field value must be either 'ray.io/kuberay-operator'")
    # its sibling rule `self == oldSelf` only runs on update: skipped, and said so
    (skipped,) = report.skipped
    assert (skipped.path, skipped.rule) == ("spec.managedBy", "self == oldSelf")
    assert "update" in skipped.reason


def test_the_same_cel_rule_passes_for_an_allowed_value(checker: ManifestValidator) -> None:
    obj = broken(RAYJOB, lambda o: o["spec"].update(managedBy="ray.io/kuberay-operator"))
    assert checker.validate_one(obj).problems == []


def test_cel_rules_on_an_object_node_are_evaluated(checker: ManifestValidator) -> None:
    # deletionStrategy: onSuccess alone breaks "both onSuccess and onFailure, or deletionRules"
    strategy = {"onSuccess": {"policy": "DeleteCluster"}}
    obj = broken(RAYJOB, lambda o: o["spec"].update(deletionStrategy=strategy))
    (problem,) = checker.validate_one(obj).problems
    assert problem.path == "spec.deletionStrategy"
    assert problem.message.startswith("deletionStrategy requires either BOTH onSuccess and onFailure")
    both = {"onSuccess": {"policy": "DeleteCluster"}, "onFailure": {"policy": "DeleteNone"}}
    assert (
        checker.validate_one(broken(RAYJOB, lambda o: o["spec"].update(deletionStrategy=both))).problems == []
    )


def test_cel_rules_inside_list_items_are_evaluated_per_item(checker: ManifestValidator) -> None:
    rules = [
        {"policy": "DeleteCluster", "condition": {"jobStatus": "SUCCEEDED"}},
        {"policy": "DeleteSelf", "condition": {"ttlSeconds": 60}},  # neither jobStatus nor deployment status
    ]
    obj = broken(RAYJOB, lambda o: o["spec"].update(deletionStrategy={"deletionRules": rules}))
    (problem,) = checker.validate_one(obj).problems
    assert problem.path == "spec.deletionStrategy.deletionRules[1].condition"
    assert "requires either the JobStatus or the JobDeploymentStatus" in problem.message


def test_duplicate_keys_of_a_list_map_are_refused(checker: ManifestValidator) -> None:
    obj = broken(RAYJOB, lambda o: head_container(o)["env"].append({"name": "A", "value": "2"}))
    (problem,) = checker.validate_one(obj).problems
    assert problem.path.endswith("containers[0].env") and "duplicate entry" in problem.message


def test_an_unknown_field_in_a_deployment_is_refused_by_kubernetes_validate(
    checker: ManifestValidator,
) -> None:
    obj = broken(
        DEPLOYMENT, lambda o: o["spec"]["template"]["spec"]["containers"][0].update(imagePullPolcy="x")
    )
    (problem,) = checker.validate_one(obj).problems
    assert problem.kind == "Deployment" and problem.path == "spec.template.spec.containers[0]"
    assert "'imagePullPolcy' was unexpected" in problem.message


def test_a_wrong_type_in_a_builtin_kind_is_refused(checker: ManifestValidator) -> None:
    obj = broken(DEPLOYMENT, lambda o: o["spec"].update(replicas="two"))
    (problem,) = checker.validate_one(obj).problems
    assert problem.path == "spec.replicas"


def test_unknown_kinds_and_versions_are_refused(checker: ManifestValidator) -> None:
    unknown = {"apiVersion": "ray.io/v1", "kind": "RayThing", "metadata": {"name": "x"}}
    old = broken(RAYJOB, lambda o: o.update(apiVersion="ray.io/v9"))
    builtin = {"apiVersion": "apps/v1", "kind": "Deploymint", "metadata": {"name": "x"}}
    report = checker.validate([unknown, old, builtin])
    assert [p.kind for p in report.problems] == ["RayThing", "RayJob", "Deploymint"]


def test_strict_schema_keeps_what_a_node_preserves_and_refuses_the_rest() -> None:
    schema = strict_schema(
        {
            "type": "object",
            "properties": {
                "open": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "closed": {"type": "object", "properties": {"a": {"type": "string"}}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "maybe": {"type": "string", "nullable": True},
                "port": {"x-kubernetes-int-or-string": True},
            },
        }
    )
    check = jsonschema.Draft202012Validator(schema)
    good = {"open": {"anything": [1]}, "closed": {"a": "x"}, "labels": {"k": "v"}, "maybe": None, "port": 80}
    assert list(check.iter_errors(good)) == []
    assert list(check.iter_errors({**good, "port": "http"})) == []
    bad = [{"closed": {"b": "x"}}, {"extra": 1}, {"labels": {"k": 1}}, {"port": 1.5}]
    assert [len(list(check.iter_errors(b))) for b in bad] == [1, 1, 1, 1]
