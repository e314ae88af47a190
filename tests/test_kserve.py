"""deploy/kserve/ validated offline against KServe's own CRD schemas, and against the chart.

The schemas are the ``openAPIV3Schema`` of KServe v0.20.0's CRDs (tests/data/kserve/, written
by ``python -m tests.helpers.kserve_schemas``; each file names its source and commit). Validation is
what the API server does with strict field validation: JSON-schema types, enums, patterns and
required fields, and no field the schema does not know.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import jsonschema
import pytest

from .helpers.chart import (
    KSERVE,
    MODEL_REPOSITORY,
    REPO,
    flags,
    kserve_autoscaling_query,
    manifests,
    objects,
    server_container,
)

SCHEMAS = REPO / "tests" / "data" / "kserve"
# KServe's storage initializer downloads `storageUri` here, in every predictor pod.
KSERVE_MODEL_DIR = "/mnt/models"


def load_schemas() -> dict[tuple[str, str], dict]:
    schemas = {}
    for path in SCHEMAS.glob("*.schema.json"):
        document = json.loads(path.read_text())
        schemas[(document["apiVersion"], document["kind"])] = document
    return schemas


def unknown_fields(instance, schema: dict, path: str = "") -> list[str]:
    """Fields the structural schema does not declare (the API server's strict validation)."""
    problems = []
    if isinstance(instance, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return []
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in instance.items():
            if properties is not None and key in properties:
                problems += unknown_fields(value, properties[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                problems += unknown_fields(value, extra, f"{path}.{key}")
            elif properties is not None or extra is False:
                problems.append(f"{path}.{key}")
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(instance):
            problems += unknown_fields(item, schema["items"], f"{path}[{index}]")
    return problems


def validate(doc: dict, schema: dict) -> None:
    jsonschema.Draft7Validator(schema).validate(doc)
    unknown = unknown_fields({k: v for k, v in doc.items() if k != "metadata"}, schema)
    assert not unknown, f"{doc['kind']}: fields unknown to KServe's schema: {unknown}"


@pytest.fixture(scope="module")
def kserve() -> dict[str, dict]:
    return manifests()


@pytest.fixture(scope="module")
def runtime_container(kserve) -> dict:
    (container,) = kserve["ServingRuntime"]["spec"]["containers"]
    return container


def test_vendored_schemas_name_their_source():
    schemas = load_schemas()
    assert set(schemas) == {
        ("serving.kserve.io/v1beta1", "InferenceService"),
        ("serving.kserve.io/v1alpha1", "ServingRuntime"),
    }
    for document in schemas.values():
        assert document["source"].startswith("https://github.com/kserve/kserve/blob/v0.20.0/")
        assert len(document["commit"]) == 40
        jsonschema.Draft7Validator.check_schema(document["openAPIV3Schema"])


def test_manifests_validate_against_kserve_crd_schemas(kserve):
    schemas = load_schemas()
    assert set(kserve) == {"ServingRuntime", "InferenceService"}
    for doc in kserve.values():
        validate(doc, schemas[(doc["apiVersion"], doc["kind"])]["openAPIV3Schema"])


@pytest.mark.parametrize(
    "kind, change, message",
    [
        (
            "InferenceService",
            lambda d: d["spec"]["predictor"].update(minReplica=1),
            "spec.predictor.minReplica",
        ),
        ("InferenceService", lambda d: d["spec"]["predictor"].update(maxReplicas="4"), "'4' is not of type"),
        (
            "ServingRuntime",
            lambda d: d["spec"]["supportedModelFormats"][0].pop("name"),
            "'name' is a required",
        ),
        (
            "ServingRuntime",
            lambda d: d["spec"]["containers"][0].update(image=["x"]),
            "is not of type 'string'",
        ),
    ],
    ids=["unknown field", "wrong type", "missing required", "image not a string"],
)
def test_the_validation_catches_mistakes(kind, change, message):
    doc = manifests()[kind]
    change(doc)
    schema = load_schemas()[(doc["apiVersion"], kind)]["openAPIV3Schema"]
    with pytest.raises((jsonschema.ValidationError, AssertionError), match=message):
        validate(doc, schema)


def test_inference_service_uses_the_runtime_it_ships_with(kserve):
    runtime, service = kserve["ServingRuntime"], kserve["InferenceService"]
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    formats = {(f["name"], f.get("version")) for f in runtime["spec"]["supportedModelFormats"]}
    assert (model["modelFormat"]["name"], model["modelFormat"].get("version")) in formats
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert "v2" in runtime["spec"]["protocolVersions"]


def test_inference_service_gets_a_gpu_and_bounded_replicas(kserve):
    predictor = kserve["InferenceService"]["spec"]["predictor"]
    resources = predictor["model"]["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "1"
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    assert predictor["model"]["storageUri"].split("://")[0] in {"s3", "gs", "pvc", "https", "hf", "oci"}


def test_runtime_serves_the_downloaded_repository_on_kserves_ports(runtime_container, kserve):
    args = flags(runtime_container["args"])
    assert args["--model-repository"] == [KSERVE_MODEL_DIR]
    (port,) = runtime_container["ports"]
    assert args["--http-port"] == [str(port["containerPort"])]
    annotations = kserve["ServingRuntime"]["spec"]["annotations"]
    assert args["--metrics-port"] == [annotations["prometheus.kserve.io/port"]]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        spec = runtime_container[probe]
        target = spec["httpGet"]["port"] if "httpGet" in spec else spec["exec"]["command"][3].split(":")[1]
        assert str(target) == str(port["containerPort"]), probe


def test_runtime_uses_the_charts_server_settings_and_canary(runtime_container):
    """Same tritonserver flags as the Helm chart's defaults, apart from where the repository and
    ports are: the two ways to deploy must not drift apart."""
    chart = server_container(objects())
    placement = {"--model-repository", "--http-port", "--grpc-port", "--metrics-port"}
    ours, theirs = flags(runtime_container["args"]), flags(chart["args"])
    assert {k: v for k, v in ours.items() if k not in placement} == {
        k: v for k, v in theirs.items() if k not in placement
    }
    chart_canary = chart["readinessProbe"]["exec"]["command"]
    for probe in ("readinessProbe", "livenessProbe"):
        command = runtime_container[probe]["exec"]["command"]
        assert command[:2] == chart_canary[:2], (
            f"{probe} must run the canary the image ships: {shlex.join(command)}"
        )
    startup_model = runtime_container["startupProbe"]["httpGet"]["path"].split("/")[3]
    assert (MODEL_REPOSITORY / startup_model / "config.pbtxt").is_file()


def test_runtime_runs_restricted_with_room_for_python_backend_shm(kserve, runtime_container):
    security = runtime_container["securityContext"]
    assert security["runAsNonRoot"] and not security["allowPrivilegeEscalation"]
    assert security["capabilities"]["drop"] == ["ALL"]
    (volume,) = kserve["ServingRuntime"]["spec"]["volumes"]
    assert volume["emptyDir"]["medium"] == "Memory"
    mounts = {m["mountPath"]: m["name"] for m in runtime_container["volumeMounts"]}
    assert mounts["/dev/shm"] == volume["name"]


def test_keda_scales_on_the_charts_queue_time_signal():
    query = kserve_autoscaling_query()
    assert "nv_inference_queue_duration_us" in query and 'model="ssd300"' in query
    assert "nv_inference_request_success" in query
    assert Path(KSERVE / "inferenceservice.yaml").read_text().count("autoscalerClass: keda") == 1
