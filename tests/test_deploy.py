"""Offline specification of the serving image and the Helm chart (deploy/).

No cluster, Docker or GPU: the chart is rendered and linted by Helm's own Go engine
(helm-python-sdk), every object is validated against the Kubernetes JSON schemas of a pinned
release (kubernetes-validate, strict: unknown fields fail), and the chart, the Dockerfile, the
entrypoint and the prometheus-adapter rule are checked against each other and against the
models that really are in model_repository/. One test starts the embedded tritonserver 2.51
(the server of the 24.10 image) through the entrypoint to prove its restricted-API flags parse.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path

import dockerfile
import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import tomllib
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from ssd300_client.detector_base import DEFAULT_BATCH_SIZE
from ssd300_common import contract
from ssd300_serving import health

from .helpers.chart import (
    ADAPTER_VALUES,
    CHART,
    DEPLOY,
    MODEL_REPOSITORY,
    NAMESPACE,
    RELEASE,
    REPO,
    find,
    flags,
    objects,
    only,
    pod_specs,
    render,
    server_container,
    server_deployment,
)

EVERYTHING_ON = DEPLOY / "helm" / "ci" / "everything-on.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
ENTRYPOINT = DEPLOY / "entrypoint.sh"

# Oldest Kubernetes the chart is validated against (Chart.yaml allows >= 1.27).
KUBE_VERSION = "1.30.0"
# Custom resources: no schema ships for them; they get a structural check instead.
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}


# --- helpers ---------------------------------------------------------------------------------


def values_file(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def model_configs() -> dict[str, model_config_pb2.ModelConfig]:
    """The production configs in model_repository/, parsed as tritonserver would."""
    configs = {}
    for path in sorted(MODEL_REPOSITORY.glob("*/config.pbtxt")):
        config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
        configs[config.name] = config
    return configs


def dockerfile_stage(stage: str) -> list[dockerfile.Command]:
    """Instructions of one build stage, parsed by BuildKit's own Dockerfile parser."""
    stages: dict[str | None, list[dockerfile.Command]] = {None: []}
    current = None
    for command in dockerfile.parse_file(str(DOCKERFILE)):
        if command.cmd.upper() == "FROM":
            current = command.value[-1]  # FROM <image> AS <stage>
            stages[current] = []
        stages[current].append(command)
    return stages[stage]


def instructions(stage: str, keyword: str) -> list[dockerfile.Command]:
    return [c for c in dockerfile_stage(stage) if c.cmd.upper() == keyword]


def onnx_tensorrt_parameters() -> dict[str, str]:
    """Parameters of the TensorRT accelerator in ssd300/configs/onnx.pbtxt, parsed as tritonserver would."""
    path = MODEL_REPOSITORY / "ssd300" / "configs" / "onnx.pbtxt"
    config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    return dict(accelerator.parameters)


def render_error(values: dict) -> str:
    with pytest.raises(helm.HelmError) as caught:
        render(values)
    return str(caught.value)


@pytest.fixture(scope="module")
def default_docs() -> list[dict]:
    return objects()


@pytest.fixture(scope="module")
def everything_docs() -> list[dict]:
    return objects(values_file(EVERYTHING_ON))


# Value sets every structural check runs on: the defaults, every optional object switched on,
# and the remaining branches (PVC source, NodePort, Locust UI, two GPUs, closed network).
VALUE_SETS = {
    "default": {},
    "everything-on": values_file(EVERYTHING_ON),
    "other-branches": {
        "modelRepository": {"source": "pvc", "pvc": {"claimName": "models"}},
        "service": {"type": "NodePort", "nodePorts": {"http": 30800}},
        "loadTest": {"enabled": True, "mode": "ui"},
        "networkPolicy": {"allowExternal": False, "allowExternalEgress": False},
        "gpu": {"count": 2},
    },
    "grpc-tls": {
        "server": {"grpcTls": {"enabled": True, "secretName": "ssd300-tls", "mutual": True}},
        "loadTest": {"enabled": True},
    },
    "onnx-engine": {"model": {"engine": "onnx"}},
    "onnx-engine-cache-claim": {"model": {"engine": "onnx", "tensorrtCache": {"claimName": "trt-cache"}}},
}


# --- the chart is well-formed -----------------------------------------------------------------


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_chart_passes_helm_lint_strict(values):
    report = helm.lint(CHART, values, strict=True, kube_version=f"v{KUBE_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # 2 = warning, 3 = error
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_object_validates_against_pinned_kubernetes_schemas(values):
    for doc in objects(values):
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
            assert doc["metadata"]["name"] and doc["spec"], doc
            continue
        # Raises ValidationError naming the offending field; strict rejects unknown fields.
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_values_schema_is_a_valid_json_schema_that_accepts_the_defaults():
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(values_file(CHART / "values.yaml"))


def test_default_install_is_server_service_and_guards_only(default_docs):
    kinds = sorted(d["kind"] for d in default_docs)
    assert kinds == [
        "Deployment",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Secret",
        "Service",
        "ServiceAccount",
    ]


def test_everything_on_renders_every_optional_object(everything_docs):
    kinds = sorted(d["kind"] for d in everything_docs)
    assert kinds == sorted(
        [
            "Deployment",
            "Service",
            "ServiceAccount",
            "PodDisruptionBudget",
            "HorizontalPodAutoscaler",
            "ServiceMonitor",
            "ConfigMap",  # Grafana dashboard
            "PrometheusRule",
            "NetworkPolicy",
            "NetworkPolicy",  # server + Locust master
            "Service",
            "Job",
            "Job",  # Locust master Service, master and worker Jobs
        ]
    )  # no Secret: everything-on brings its own admin key Secret


def test_objects_carry_recommended_labels(everything_docs):
    for doc in everything_docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "ssd300-triton"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert "app.kubernetes.io/version" in labels


def test_every_value_is_documented_with_a_param_line():
    documented = set(re.findall(r"^\s*## @param (\S+)", (CHART / "values.yaml").read_text(), re.M))

    def leaves(node, prefix=""):
        if isinstance(node, dict) and node:
            for key, value in node.items():
                yield from leaves(value, f"{prefix}{key}" if not prefix else f"{prefix}.{key}")
        else:
            yield prefix

    for leaf in leaves(values_file(CHART / "values.yaml")):
        parts = leaf.split(".")
        prefixes = {".".join(parts[:n]) for n in range(1, len(parts) + 1)}
        assert prefixes & documented, f"{leaf} has no ## @param line"


# --- the server pod names this repository's real models and ports -----------------------------


def test_server_args_serve_the_image_repository_with_fixed_models(default_docs):
    args = flags(server_container(default_docs)["args"])
    assert args["--model-repository"] == ["/opt/ssd300/model_repository"]
    assert args["--model-control-mode"] == ["none"]
    assert args["--http-port"] == ["8000"] and args["--grpc-port"] == ["8001"]
    assert args["--metrics-port"] == ["8002"]
    # The admin key never appears in the pod spec: the entrypoint adds these from the Secret.
    assert "--http-restricted-api" not in args and "--grpc-restricted-protocol" not in args


def test_grpc_tls_serves_the_mounted_secret_and_the_load_test_trusts_it():
    docs = objects(VALUE_SETS["grpc-tls"])
    container = server_container(docs)
    args = flags(container["args"])
    assert args["--grpc-use-ssl"] == ["true"] and args["--grpc-use-ssl-mutual"] == ["true"]
    assert args["--grpc-server-cert"] == ["/etc/triton/tls/tls.crt"]
    assert args["--grpc-server-key"] == ["/etc/triton/tls/tls.key"]
    assert args["--grpc-root-cert"] == ["/etc/triton/tls/ca.crt"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/etc/triton/tls"]
    assert mount["readOnly"] is True
    volumes = {v["name"]: v for v in server_deployment(docs)["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mount["name"]]["secret"]["secretName"] == "ssd300-tls"
    # The chart's load test speaks grpcs:// to the Service and reads the same Secret.
    for job in find(docs, "Job"):
        (locust,) = job["spec"]["template"]["spec"]["containers"]
        env = {item["name"]: item["value"] for item in locust["env"]}
        assert env["SSD300_CA_CERT"] == "/etc/triton/tls/ca.crt"
        assert env["SSD300_CLIENT_CERT"] == "/etc/triton/tls/tls.crt"
        if "--host" in locust["args"]:
            assert locust["args"][locust["args"].index("--host") + 1].startswith("grpcs://")


def test_grpc_tls_is_off_by_default(default_docs):
    assert "--grpc-use-ssl" not in flags(server_container(default_docs)["args"])


def test_startup_probe_waits_for_an_ensemble_the_repository_has(default_docs):
    configs = model_configs()
    path = server_container(default_docs)["startupProbe"]["httpGet"]["path"]
    model = re.fullmatch(r"/v2/models/([^/]+)/ready", path).group(1)
    assert model == contract.DETECTOR_MODEL and configs[model].platform == "ensemble"


def test_readiness_and_liveness_run_the_canary_the_image_ships(default_docs):
    # Model readiness stays 200 after a Python stub dies (tritonserver 2.51); the canary does not.
    container = server_container(default_docs)
    script = values_file(CHART / "values.yaml")["probes"]["healthScript"]
    copies = {c.value: c.flags for c in instructions("serve", "COPY")}
    assert ("serving/ssd300_serving/health.py", script) in copies
    for probe in ("readinessProbe", "livenessProbe"):
        command = container[probe]["exec"]["command"]
        assert command[:2] == ["python3", script]
        options = dict(zip(command[2::2], command[3::2]))
        # The canary answers before the kubelet gives up, so a failure carries its reason.
        assert int(options["--timeout"]) < container[probe]["timeoutSeconds"]


def test_the_canary_covers_every_python_model_of_the_repository():
    configs = model_configs()
    canary = configs[health.CANARY_MODEL]
    stepped = {step.model_name for step in canary.ensemble_scheduling.step}
    python_models = {name for name, config in configs.items() if config.backend == "python"}
    # ssd300 itself is libtorch in production, a Python runner on CPU: covered either way.
    assert python_models <= stepped and "ssd300" in stepped


def test_the_canary_needs_nothing_but_the_standard_library():
    # The serving image's python3 has neither this project nor its packages: -S drops site-packages.
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(REPO / "serving" / "ssd300_serving" / "health.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "--url" in done.stdout and "--timeout" in done.stdout


def test_liveness_is_more_patient_than_readiness(default_docs):
    # Readiness takes a broken pod out of the Service quickly; liveness restarts it only after
    # a minute of failed canaries, so a slow answer under load never costs a restart.
    container = server_container(default_docs)
    readiness, liveness = container["readinessProbe"], container["livenessProbe"]

    def patience_s(probe: dict) -> int:
        return probe["periodSeconds"] * probe["failureThreshold"]

    assert patience_s(liveness) >= 60 and patience_s(liveness) > patience_s(readiness)
    assert liveness["timeoutSeconds"] >= readiness["timeoutSeconds"]


def test_probes_and_service_reach_the_ports_the_server_listens_on(default_docs):
    container = server_container(default_docs)
    args = flags(container["args"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {
        "http": int(args["--http-port"][0]),
        "grpc": int(args["--grpc-port"][0]),
        "metrics": int(args["--metrics-port"][0]),
    }
    assert container["startupProbe"]["httpGet"]["port"] == "http"
    for probe in ("readinessProbe", "livenessProbe"):
        command = container[probe]["exec"]["command"]
        assert command[command.index("--url") + 1] == f"127.0.0.1:{ports['http']}"
    service = only(default_docs, "Service")
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        "http": (8000, "http"),
        "grpc": (8001, "grpc"),
        "metrics": (8002, "metrics"),
    }


def test_service_selects_server_pods_only(everything_docs):
    deployment = server_deployment(everything_docs)
    server_service = find(everything_docs, "Service", "ssd300")[0]
    assert server_service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert server_service["spec"]["selector"]["app.kubernetes.io/component"] == "server"


def test_server_gets_a_gpu_and_memory_backed_shm(default_docs):
    container = server_container(default_docs)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    pod = server_deployment(default_docs)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert "emptyDir" in volumes[mounts["/tmp"]]  # writable scratch under a read-only root


def gpu_bytes_in_flight(configs: dict, images_per_request: int) -> int:
    """The most bytes the queues let sit in Triton's CUDA pool at once, for clients sending
    ``images_per_request`` images per request (docs/architecture.md, CUDA memory pool): ssd300's
    batch in execution (its inputs, collected onto the GPU, and its outputs), the postprocess's
    queue full of ssd300's outputs, and the postprocess's batch in execution."""
    network, postprocess = configs["ssd300"], configs["ssd300_postprocess"]
    assert all(o.data_type == model_config_pb2.TYPE_FP32 for o in network.output)
    outputs = sum(4 * math.prod(o.dims) for o in network.output)
    inputs = math.prod(network.input[0].dims)  # uint8
    queued = postprocess.dynamic_batching.default_queue_policy.max_queue_size * images_per_request
    return network.max_batch_size * (inputs + outputs) + (queued + postprocess.max_batch_size) * outputs


def test_what_crosses_from_ssd300_to_the_postprocess_is_at_most_half_a_megabyte_per_image():
    configs = model_configs()
    outputs = configs["ssd300"].output
    assert sum(4 * math.prod(o.dims) for o in outputs) <= 500_000  # 320,000: 80 x 200 x (4 + 1) floats
    assert [tuple(o.dims) for o in outputs] == [tuple(i.dims) for i in configs["ssd300_postprocess"].input]


def test_one_cuda_pool_size_everywhere_holds_what_the_queues_admit(default_docs):
    """The README's stock `docker run`, the image, the chart and KServe set the same pool, and it
    holds everything the queues admit when clients send the client library's default batch per
    request (8 images; larger requests may fall back to host memory: correct, but slower)."""
    chart_args = flags(server_container(default_docs)["args"])
    image_args = flags(instructions("serve", "CMD")[0].value)
    kserve = yaml.safe_load((DEPLOY / "kserve" / "servingruntime.yaml").read_text())
    kserve_args = flags(kserve["spec"]["containers"][0]["args"])
    readme = (REPO / "README.md").read_text()
    docker_run = re.search(
        r"docker run [^`]*?tritonserver:24\.10-py3[^`]*?tritonserver ([^`]*?)\n```", readme
    )
    assert docker_run, "README: the stock container's docker run"
    readme_args = flags(docker_run.group(1).replace("\\\n", " ").split())
    sizes = {
        where: args["--cuda-memory-pool-byte-size"][0]
        for where, args in (
            ("chart", chart_args),
            ("image", image_args),
            ("kserve", kserve_args),
            ("README", readme_args),
        )
    }
    assert len(set(sizes.values())) == 1, sizes
    device, size = sizes["chart"].split(":")
    assert device == "0" and int(size) >= gpu_bytes_in_flight(model_configs(), DEFAULT_BATCH_SIZE)
    # Should it fall back to host memory, the Python backend's regions hold a full batch of
    # ssd300's outputs after a few growth steps, instead of the default 1 MB ones.
    per_image = sum(4 * math.prod(o.dims) for o in model_configs()["ssd300"].output)
    settings = dict(v.split(",", 1)[1].split("=") for v in chart_args["--backend-config"])
    full_batch = model_configs()["ssd300"].max_batch_size * per_image
    assert int(settings["shm-default-byte-size"]) + 3 * int(settings["shm-growth-byte-size"]) >= full_batch


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_container_runs_restricted(values):
    for pod in pod_specs(objects(values)):
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"] + pod.get("initContainers", []):
            context = container["securityContext"]
            assert context["capabilities"]["drop"] == ["ALL"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True


def test_grace_period_covers_prestop_pause_and_server_exit_timeout(default_docs):
    pod = server_deployment(default_docs)["spec"]["template"]["spec"]
    container = server_container(default_docs)
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    exit_timeout = int(flags(container["args"])["--exit-timeout-secs"][0])
    assert pause > 0
    assert pod["terminationGracePeriodSeconds"] > pause + exit_timeout


# --- model repository sources ------------------------------------------------------------------


def test_pvc_source_mounts_the_claim_read_only():
    docs = objects(
        {"modelRepository": {"source": "pvc", "pvc": {"claimName": "models", "subPath": "ssd300"}}}
    )
    container = server_container(docs)
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "model-repository"]
    assert mount == {
        "name": "model-repository",
        "mountPath": "/models",
        "readOnly": True,
        "subPath": "ssd300",
    }
    volumes = {v["name"]: v for v in server_deployment(docs)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["model-repository"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    assert flags(container["args"])["--model-repository"] == ["/models"]


def tmp_size_limit(docs: list[dict]) -> str:
    volumes = {v["name"]: v for v in server_deployment(docs)["spec"]["template"]["spec"]["volumes"]}
    return volumes["tmp"]["emptyDir"]["sizeLimit"]


def test_tmp_has_room_for_the_unpacked_archive_only_where_the_repository_holds_one(
    default_docs, everything_docs
):
    # The image's configs name its unpacked environment; a claim or bucket holds the archive
    # (the production configs), which the Python backend unpacks into /tmp (~5.5 GB).
    values = values_file(CHART / "values.yaml")["tmp"]
    assert tmp_size_limit(default_docs) == values["sizeLimit"] == "1Gi"
    pvc = objects({"modelRepository": {"source": "pvc", "pvc": {"claimName": "models"}}})
    assert tmp_size_limit(pvc) == values["archiveSizeLimit"] == "8Gi"
    assert values_file(EVERYTHING_ON)["modelRepository"]["source"] == "objectStorage"
    assert tmp_size_limit(everything_docs) == "8Gi"


def test_object_storage_source_syncs_in_an_init_container(everything_docs):
    pod = server_deployment(everything_docs)["spec"]["template"]["spec"]
    (sync,) = pod["initContainers"]
    assert sync["args"][:3] == ["copy", ":s3,provider=AWS,env_auth=true:models-bucket/ssd300", "/models"]
    assert sync["envFrom"] == [{"secretRef": {"name": "ssd300-bucket-credentials"}}]
    server_mount = [
        m for m in server_container(everything_docs)["volumeMounts"] if m["name"] == "model-repository"
    ]
    assert server_mount[0]["readOnly"] is True
    assert flags(server_container(everything_docs)["args"])["--model-repository"] == ["/models"]


# --- engine -------------------------------------------------------------------------------------


def test_default_engine_is_torchscript_without_a_config_name_or_cache_volume(default_docs):
    container = server_container(default_docs)
    assert not any(arg.startswith("--model-config-name") for arg in container["args"])
    pod = server_deployment(default_docs)["spec"]["template"]["spec"]
    assert "tensorrt-cache" not in {v["name"] for v in pod["volumes"]}
    assert {m["name"] for m in container["volumeMounts"]} == {"dshm", "tmp"}


@pytest.mark.parametrize("claim", ["", "trt-cache"], ids=["emptyDir", "claim"])
def test_onnx_engine_selects_its_config_and_mounts_a_writable_cache_where_the_config_points(claim):
    docs = objects({"model": {"engine": "onnx", "tensorrtCache": {"claimName": claim}}})
    container = server_container(docs)
    (name,) = flags(container["args"])["--model-config-name"]
    # tritonserver loads <model>/configs/<name>.pbtxt where it exists: ssd300's ONNX config.
    assert (MODEL_REPOSITORY / "ssd300" / "configs" / f"{name}.pbtxt").is_file()
    # The engine and timing caches are written where onnx.pbtxt says, under a read-only root.
    parameters = onnx_tensorrt_parameters()
    assert parameters["trt_engine_cache_enable"] == "1"
    paths = {parameters["trt_engine_cache_path"], parameters["trt_timing_cache_path"]}
    (cache,) = [m for m in container["volumeMounts"] if m["name"] == "tensorrt-cache"]
    assert paths == {cache["mountPath"]} and not cache.get("readOnly")
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in server_deployment(docs)["spec"]["template"]["spec"]["volumes"]}
    if claim:
        assert volumes["tensorrt-cache"]["persistentVolumeClaim"] == {"claimName": claim}
    else:
        assert volumes["tensorrt-cache"]["emptyDir"] == {"sizeLimit": "1Gi"}


def test_onnx_engine_keeps_every_other_server_flag(default_docs):
    onnx_args = server_container(objects({"model": {"engine": "onnx"}}))["args"]
    assert onnx_args == [*server_container(default_docs)["args"], "--model-config-name=onnx"]


# --- autoscaling, disruption, network ----------------------------------------------------------


def test_hpa_scales_on_the_metric_the_adapter_rule_serves(everything_docs):
    hpa = only(everything_docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == server_deployment(everything_docs)["metadata"]["name"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["target"]["type"] == "AverageValue"
    (rule,) = values_file(ADAPTER_VALUES)["rules"]["custom"]
    assert metric["pods"]["metric"]["name"] == rule["name"]["as"]
    assert {"nv_inference_queue_duration_us", "nv_inference_request_success"} <= set(
        re.findall(r"\bnv_inference_\w+", rule["metricsQuery"])
    )
    # The rule watches a model that exists and is not an ensemble: requests queue at the network.
    configs = model_configs()
    for model in set(re.findall(r'model="([^"]+)"', rule["seriesQuery"] + rule["metricsQuery"])):
        assert model in configs and configs[model].platform != "ensemble"
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}


def test_hpa_replaces_the_fixed_replica_count(everything_docs, default_docs):
    assert "replicas" not in server_deployment(everything_docs)["spec"]
    assert server_deployment(default_docs)["spec"]["replicas"] == 1


def test_service_monitor_scrapes_the_named_metrics_port(everything_docs):
    monitor = only(everything_docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    (service,) = find(everything_docs, "Service", "ssd300")
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]


def test_disruption_budget_and_network_policy_select_the_server(default_docs):
    selector = server_deployment(default_docs)["spec"]["selector"]["matchLabels"]
    assert only(default_docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    assert only(default_docs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"] == selector


def test_closed_network_policy_admits_clients_load_test_and_monitoring(everything_docs):
    policy = find(everything_docs, "NetworkPolicy", "ssd300")[0]
    inference, metrics = policy["spec"]["ingress"]
    selectors = [peer.get("podSelector", {}).get("matchLabels", {}) for peer in inference["from"]]
    assert {"ssd300-client": "true"} in selectors
    assert any(s.get("app.kubernetes.io/component") == "locust-worker" for s in selectors)
    assert [p["port"] for p in inference["ports"]] == ["http", "grpc"]
    assert [p["port"] for p in metrics["ports"]] == ["metrics"]
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]


# --- load test -----------------------------------------------------------------------------------


def test_headless_load_test_is_a_master_job_and_worker_jobs_that_find_each_other(everything_docs):
    jobs = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in find(everything_docs, "Job")}
    master_args = jobs["locust-master"]["spec"]["template"]["spec"]["containers"][0]["args"]
    worker_args = jobs["locust-worker"]["spec"]["template"]["spec"]["containers"][0]["args"]
    master_service = find(everything_docs, "Service", "ssd300-locust-master")[0]
    assert worker_args[worker_args.index("--master-host") + 1] == master_service["metadata"]["name"]
    assert master_args[master_args.index("-f") + 1] == "/opt/ssd300/load_tests/locustfile.py"
    assert master_args[master_args.index("--host") + 1] == f"ssd300.{NAMESPACE}.svc:8001"  # gRPC port
    assert master_args[master_args.index("--expect-workers") + 1] == "4"
    assert "--headless" in master_args and "--run-time" in master_args
    assert jobs["locust-worker"]["spec"]["parallelism"] == 4
    # One Job per helm revision: Job templates are immutable.
    assert jobs["locust-master"]["metadata"]["name"].endswith("-r1")


def test_locust_args_are_options_of_the_pinned_locust(everything_docs):
    usage = subprocess.run(
        [sys.executable, "-m", "locust", "--help"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    known = set(re.findall(r"--[a-z][a-z-]+", usage))
    for job in find(everything_docs, "Job"):
        args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        assert {a for a in args if a.startswith("--")} <= known, args


def test_ui_load_test_runs_deployments_with_the_web_port():
    docs = objects({"loadTest": {"enabled": True, "mode": "ui", "protocol": "http"}})
    assert not find(docs, "Job")
    masters = [d for d in find(docs, "Deployment") if d["metadata"]["name"].endswith("locust-master")]
    (container,) = masters[0]["spec"]["template"]["spec"]["containers"]
    assert {"name": "locust-web", "containerPort": 8089, "protocol": "TCP"} in container["ports"]
    host = container["args"][container["args"].index("--host") + 1]
    assert host == f"http://ssd300-triton.{NAMESPACE}.svc:8000"
    assert container["image"] == "ssd300-triton-loadtest:0.1.0"


# --- NOTES -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service_type", "hint"),
    [
        ("ClusterIP", "port-forward svc/"),
        ("NodePort", ".nodePort}"),
        ("LoadBalancer", ".status.loadBalancer.ingress"),
    ],
)
def test_notes_print_the_next_commands_for_the_service_type(service_type, hint):
    notes = render({"service": {"type": service_type}})["ssd300-triton/templates/NOTES.txt"]
    assert hint in notes
    assert "rollout status deployment/" in notes
    assert f"/v2/models/{contract.DETECTOR_MODEL}/ready" in notes


# --- bad values fail with readable messages -------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": -1}, "at '/replicaCount': minimum: got -1, want 0"),
        ({"image": {"repository": ""}}, "at '/image/repository': minLength: got 0, want 1"),
        (
            {"terminationGracePeriodSeconds": 20},
            "terminationGracePeriodSeconds (20) must exceed preStopSleepSeconds (10)"
            " + server.exitTimeoutSeconds (30) = 40",
        ),
        ({"modelRepository": {"source": "pvc"}}, "modelRepository.pvc.claimName must be set"),
        ({"server": {"grpcTls": {"enabled": True}}}, "server.grpcTls.secretName must name the Secret"),
        ({"modelRepository": {"source": "objectStorage"}}, "modelRepository.objectStorage.uri must be set"),
        (
            {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}},
            "autoscaling.minReplicas (5) must not exceed autoscaling.maxReplicas (2)",
        ),
        ({"pdb": {"minAvailable": 1}}, "set exactly one of pdb.minAvailable and pdb.maxUnavailable"),
        ({"adminApi": {"restrictedApis": ["model-repo"]}}, "at '/adminApi/restrictedApis/0'"),
        ({"loadTest": {"mode": "batch"}}, "at '/loadTest/mode'"),
        ({"model": {"engine": "tensorrt"}}, "at '/model/engine': value must be one of 'torchscript', 'onnx'"),
        (
            {
                "model": {"engine": "onnx"},
                "modelRepository": {"source": "objectStorage", "objectStorage": {"uri": ":s3:bucket"}},
            },
            "model.engine onnx needs ssd300/configs/onnx.pbtxt",
        ),
        ({"servr": {}}, "additional properties 'servr' not allowed"),
        (
            {"probes": {"liveness": {"timeoutSeconds": 1}}},
            "at '/probes/liveness/timeoutSeconds': minimum: got 1, want 2",
        ),
    ],
    ids=[
        "negative-replicas",
        "no-image",
        "short-grace",
        "pvc-without-claim",
        "tls-without-secret",
        "bucket-without-uri",
        "hpa-min-above-max",
        "pdb-both",
        "unknown-api",
        "unknown-mode",
        "unknown-engine",
        "onnx-config-not-synced",
        "typo-key",
        "no-time-for-the-canary",
    ],
)
def test_bad_values_fail_with_a_readable_message(values, message):
    assert message in render_error(values)


def test_all_cross_field_problems_are_reported_at_once():
    error = render_error({"terminationGracePeriodSeconds": 5, "modelRepository": {"source": "pvc"}})
    assert "terminationGracePeriodSeconds (5)" in error and "pvc.claimName" in error


def test_templates_still_refuse_a_missing_image_without_the_schema(tmp_path):
    # `helm template --skip-schema-validation` (and Helm's lint mode) bypass values.schema.json.
    unchecked = tmp_path / "chart"
    shutil.copytree(CHART, unchecked, ignore=shutil.ignore_patterns("values.schema.json"))
    with (
        helm.Chart.load(unchecked) as chart,
        pytest.raises(helm.HelmError, match="image.repository must be set"),
    ):
        chart.render({"image": {"repository": ""}}, name=RELEASE, namespace=NAMESPACE)


# --- the image agrees with the chart ----------------------------------------------------------


def test_image_default_command_is_the_chart_default_args(default_docs):
    (cmd,) = instructions("serve", "CMD")
    assert list(cmd.value) == server_container(default_docs)["args"]


def test_image_entrypoint_and_command_are_exec_form():
    # Exec form: no shell in between, so SIGTERM reaches tritonserver and starts its exit timeout.
    for keyword in ("ENTRYPOINT", "CMD"):
        (command,) = instructions("serve", keyword)
        assert command.json, f"{keyword} must be a JSON array"
    (entrypoint,) = instructions("serve", "ENTRYPOINT")
    assert entrypoint.value == ("/opt/nvidia/nvidia_entrypoint.sh", "/opt/ssd300/entrypoint.sh")
    assert re.search(
        r'^exec tritonserver "\$@"', ENTRYPOINT.read_text(), re.M
    )  # the script exits into the server


def global_build_args() -> dict[str, str]:
    """The ARGs declared before the first FROM, with their defaults."""
    return dict(c.value[0].split("=", 1) for c in dockerfile_stage(None) if c.cmd.upper() == "ARG")


def test_image_builds_both_stages_from_one_ngc_release():
    release = global_build_args()["NGC_RELEASE"]
    assert release == "24.10"  # tritonserver 2.51, PyTorch 2.5 / CUDA 12.6
    (export_from,) = instructions("export", "FROM")
    (serve_from,) = instructions("serve", "FROM")
    assert export_from.value[0] == "nvcr.io/nvidia/pytorch:${NGC_RELEASE}-py3"
    assert serve_from.value[0] == "nvcr.io/nvidia/tritonserver:${NGC_RELEASE}-py3"
    build_args = dict(c.value[0].split("=", 1) for c in instructions("export", "ARG") if "=" in c.value[0])
    assert build_args["WEIGHTS"] == "nvidia"
    # The Python models' packed environment is built in (and for the Python of) the serving
    # image, by the code and pins of `make python-env`; nothing is installed into the server.
    (env_from,) = instructions("python-env", "FROM")
    assert env_from.value[0] == serve_from.value[0]
    (build,) = instructions("python-env", "RUN")
    assert "-m ssd300_build.python_env" in build.value[0] and "sys.version_info" in build.value[0]
    # As a folder used in place, activated at build time; the import check runs as the stubs do.
    assert '--unpacked --output "${PYTHON_ENV_DIR}"' in build.value[0]
    imports = "import numpy, PIL, torch, ssd300_common.imaging"
    assert f"source '${{PYTHON_ENV_DIR}}/bin/activate' && python3 -c '{imports}'" in build.value[0]
    # The builder copies the shared core in from where it imports it.
    assert ("common/ssd300_common/", "common/ssd300_common/") in [
        c.value for c in instructions("python-env", "COPY")
    ]
    assert "PYTHONPATH=/src/build:/src/common python3 -m ssd300_build.python_env" in build.value[0]
    assert not instructions("serve", "RUN")


def test_image_layout_and_user_match_the_chart(default_docs):
    values = values_file(CHART / "values.yaml")
    copies = {c.value: c.flags for c in instructions("serve", "COPY")}
    assert copies[("/src/model_repository", values["modelRepository"]["imagePath"])] == ("--from=export",)
    # The Python models' environment, where the image's configs point (see the next test).
    assert copies[("${PYTHON_ENV_DIR}", "${PYTHON_ENV_DIR}")] == ("--from=python-env",)
    assert [c.value for c in instructions("serve", "ARG")] == [("PYTHON_ENV_DIR",)]
    assert ("deploy/entrypoint.sh", "/opt/ssd300/entrypoint.sh") in copies
    assert ("serving/ssd300_serving/health.py", values["probes"]["healthScript"]) in copies
    (user,) = instructions("serve", "USER")
    pod = server_deployment(default_docs)["spec"]["template"]["spec"]
    assert user.value == (f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}",)
    (exposed,) = instructions("serve", "EXPOSE")
    assert sorted(map(int, exposed.value)) == sorted(values["server"]["ports"].values())


def test_image_configs_name_the_unpacked_environment_outside_the_repository(tmp_path):
    """The export stage's rewrite, run on a copy of the production configs: every Python model
    names the folder the serve stage copies the environment to, and nothing else changes."""
    folder = global_build_args()["PYTHON_ENV_DIR"]
    repository = values_file(CHART / "values.yaml")["modelRepository"]["imagePath"]
    # r24.10's backend takes a folder in place (pb_env.cc); one inside the repository would be
    # loaded as a model.
    assert not Path(folder).is_relative_to(repository)
    assert [c.value for c in instructions("export", "ARG") if c.value[0].startswith("PYTHON_ENV")] == [
        ("PYTHON_ENV_DIR",)
    ]
    (rewrite,) = [
        c.value[0]
        for c in instructions("export", "RUN")
        if "EXECUTION_ENV_PATH" in c.value[0] or "TRITON_MODEL_DIRECTORY" in c.value[0]
    ]
    copy = tmp_path / "model_repository"
    shutil.copytree(
        MODEL_REPOSITORY, copy, ignore=shutil.ignore_patterns("1", "configs", "python_env.tar.gz")
    )
    command = rewrite.replace("/src/model_repository", str(copy))
    subprocess.run(
        ["sh", "-c", command], env={"PYTHON_ENV_DIR": folder, "PATH": os.environ["PATH"]}, check=True
    )
    python_models = 0
    for name, original in model_configs().items():
        rewritten = text_format.Parse(
            (copy / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
        )
        if original.backend == "python":
            python_models += 1
            assert rewritten.parameters["EXECUTION_ENV_PATH"].string_value == folder
            rewritten.parameters["EXECUTION_ENV_PATH"].string_value = original.parameters[
                "EXECUTION_ENV_PATH"
            ].string_value
        assert rewritten == original, name
    assert python_models == 3
    # The rewrite fails the build when a config names the archive some other way.
    (copy / "ssd300_postprocess" / "config.pbtxt").write_text(
        (MODEL_REPOSITORY / "ssd300_postprocess" / "config.pbtxt").read_text().replace("/../", "/./../")
    )
    result = subprocess.run(["sh", "-c", command], env={"PYTHON_ENV_DIR": folder, "PATH": os.environ["PATH"]})
    assert result.returncode != 0


def export_steps(command: str) -> list[str]:
    """The `find` steps of the export stage's build RUN that prune the copied repository."""
    return [step.strip() for step in command.split("&&") if step.strip().startswith("find ")]


@pytest.mark.parametrize(
    ("engine", "kept"),
    [("torchscript", []), ("onnx", ["ssd300/configs/onnx.pbtxt"])],
)
def test_image_engine_argument_builds_and_keeps_what_the_engine_serves(engine, kept, tmp_path):
    build_args = dict(c.value[0].split("=", 1) for c in instructions("export", "ARG") if "=" in c.value[0])
    assert build_args["ENGINE"] == "torchscript"  # production default: model.pt through libtorch
    runs = [c.value[0] for c in instructions("export", "RUN")]
    (build,) = [r for r in runs if "-m ssd300_build" in r]
    assert '--engine "${ENGINE}"' in build
    assert "test -s /src/model_repository/ssd300/1/model.onnx" in build
    # ENGINE=onnx installs the exporter's packages at the pins requirements.txt holds.
    (install,) = [r for r in runs if "onnx-requirements.txt" in r]
    pattern = re.search(r"grep -E '([^']+)'", install).group(1)
    pinned = [
        line for line in (REPO / "requirements.txt").read_text().splitlines() if re.search(pattern, line)
    ]
    assert sorted(line.split("==")[0] for line in pinned) == ["onnx", "onnx-ir", "onnxscript"]
    # The pruning steps, run on a copy of the repository: the CPU variants go, and so does
    # configs/onnx.pbtxt unless the image is built for ONNX.
    repository = tmp_path / "model_repository"
    shutil.copytree(MODEL_REPOSITORY, repository, ignore=shutil.ignore_patterns("1", "python_env.tar.gz"))
    assert (repository / "ssd300" / "configs" / "onnx.pbtxt").is_file()
    for step in export_steps(build):
        command = step.replace("/src/model_repository", str(repository))
        subprocess.run(["sh", "-c", command], env={"ENGINE": engine, "PATH": os.environ["PATH"]}, check=True)
    left = sorted(str(path.relative_to(repository)) for path in repository.rglob("configs/*"))
    assert left == kept
    folders = sorted(str(path.relative_to(repository)) for path in repository.rglob("configs"))
    assert folders == sorted({str(Path(path).parent) for path in kept})
    assert all((repository / model / "config.pbtxt").is_file() for model in model_configs())


def test_loadtest_image_ships_the_locustfile_and_the_pinned_locust():
    values = values_file(CHART / "values.yaml")
    (workdir,) = instructions("loadtest", "WORKDIR")
    copies = [c.value for c in instructions("loadtest", "COPY")]
    assert ("load_tests/", "load_tests/") in copies
    # `pip install .` builds the wheel: every package folder it lists must be in the image.
    wheel = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    copied = [source for *sources, _ in copies for source in sources]
    for package in wheel["packages"]:
        assert any(f"{package}/".startswith(folder) for folder in copied), package
    assert values["loadTest"]["locustfile"] == f"{workdir.value[0]}/load_tests/locustfile.py"
    # The image installs the requirements.txt lines its grep selects: Locust and the client must be
    # among them.
    install = next(c.value[0] for c in instructions("loadtest", "RUN") if "grep -E" in c.value[0])
    pattern = re.search(r"grep -E '([^']+)'", install).group(1)
    pinned = [
        line for line in (REPO / "requirements.txt").read_text().splitlines() if re.search(pattern, line)
    ]
    assert {line.split("==")[0] for line in pinned} >= {
        "locust",
        "gevent",
        "tritonclient[all]",
        "numpy",
        "pillow",
    }


# --- the entrypoint ------------------------------------------------------------------------------


@pytest.fixture
def fake_tritonserver(tmp_path) -> Path:
    """A `tritonserver` on PATH that records its arguments and environment, one per line."""
    record = tmp_path / "record.txt"
    script = tmp_path / "bin" / "tritonserver"
    script.parent.mkdir()
    script.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\necho "KEYENV=${{TRITON_ADMIN_KEY:-}}" >> {record}\n'
    )
    script.chmod(0o755)
    return record


def run_entrypoint(record: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    path = f"{record.parent / 'bin'}:{os.environ['PATH']}"
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args], env={"PATH": path, **env}, capture_output=True, text=True, timeout=10
    )


def test_entrypoint_appends_restricted_api_flags_from_the_environment(fake_tritonserver):
    done = run_entrypoint(fake_tritonserver, {"TRITON_ADMIN_KEY": "s3cret"}, "--model-control-mode=none")
    assert done.returncode == 0, done.stderr
    lines = fake_tritonserver.read_text().splitlines()
    assert lines == [
        "--model-control-mode=none",
        "--http-restricted-api=model-repository,shared-memory,logging,trace:admin-key=s3cret",
        "--grpc-restricted-protocol=model-repository,shared-memory,logging,trace:admin-key=s3cret",
        "KEYENV=",  # the server and its Python stubs do not inherit the key
    ]


def test_entrypoint_without_a_key_locks_admin_apis_with_a_throwaway_one(fake_tritonserver):
    done = run_entrypoint(fake_tritonserver, {})
    assert done.returncode == 0 and "TRITON_ADMIN_KEY is not set" in done.stderr
    http_flag = fake_tritonserver.read_text().splitlines()[0]
    apis = "model-repository,shared-memory,logging,trace"
    assert re.fullmatch(rf"--http-restricted-api={apis}:admin-key=[0-9a-f]{{48}}", http_flag)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TRITON_ADMIN_HEADER": "admin:key"}, "TRITON_ADMIN_HEADER must be"),
        ({"TRITON_ADMIN_KEY": "a=b"}, "TRITON_ADMIN_KEY may only hold"),
        ({"TRITON_RESTRICTED_APIS": "trace;logging"}, "TRITON_RESTRICTED_APIS must be"),
    ],
)
def test_entrypoint_refuses_values_that_would_split_the_flag(fake_tritonserver, env, message):
    done = run_entrypoint(fake_tritonserver, env)
    assert done.returncode == 64 and message in done.stderr
    assert not fake_tritonserver.exists()


def test_chart_passes_the_entrypoint_its_settings(default_docs):
    env = {e["name"]: e for e in server_container(default_docs)["env"]}
    assert env["TRITON_ADMIN_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "ssd300-triton-admin",
        "key": "admin-key",
    }
    assert env["TRITON_ADMIN_HEADER"]["value"] == "admin-key"
    assert env["TRITON_RESTRICTED_APIS"]["value"] == "model-repository,shared-memory,logging,trace"
    assert only(default_docs, "Secret")["metadata"]["name"] == "ssd300-triton-admin"


# --- the real server accepts the image's flags ------------------------------------------------------


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def http_status(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> int:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except urllib.error.URLError:  # not listening yet
        return 0


def swap_flags(args: list[str], values: dict[str, str]) -> list[str]:
    """Replace the value of each `--name=value` argument named in `values`."""
    swapped = []
    for arg in args:
        name = arg.split("=", 1)[0]
        swapped.append(f"{name}={values[name]}" if name in values else arg)
    return swapped


@pytest.mark.server  # starts a tritonserver itself (no fixture marks it)
def test_embedded_tritonserver_accepts_the_image_flags_and_enforces_the_key(tmp_path):
    """The image's CMD (repository and ports swapped for local ones) through the entrypoint,
    on the PyPI build of the same tritonserver 2.51, with no models and no GPU."""
    pytriton = pytest.importorskip("pytriton", reason="nvidia-pytriton ships the embedded tritonserver")
    server_dir = Path(pytriton.__file__).parent / "tritonserver"
    http, grpc, metrics = free_ports(3)
    replaced = {
        "--model-repository": str(tmp_path / "empty_repository"),
        "--http-port": str(http),
        "--grpc-port": str(grpc),
        "--metrics-port": str(metrics),
    }
    (cmd,) = instructions("serve", "CMD")
    args = swap_flags(list(cmd.value), replaced)
    args += [
        "--http-address=127.0.0.1",
        "--grpc-address=127.0.0.1",
        f"--backend-directory={server_dir / 'backends'}",
    ]
    (tmp_path / "empty_repository").mkdir()
    env = {
        **os.environ,
        "PATH": f"{server_dir / 'bin'}:{os.environ['PATH']}",
        "LD_LIBRARY_PATH": (
            f"{sysconfig.get_config_var('LIBDIR')}:{server_dir.parent.parent / 'nvidia_pytriton.libs'}"
        ),
        "TRITON_ADMIN_KEY": "s3cret",
    }
    log = tmp_path / "server.log"
    with log.open("w") as sink:
        server = subprocess.Popen(
            ["sh", str(ENTRYPOINT), *args], env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        base = f"http://127.0.0.1:{http}"
        deadline = time.monotonic() + 30
        while server.poll() is None and http_status(f"{base}/v2/health/live") != 200:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert server.poll() is None, f"tritonserver refused the flags:\n{log.read_text()}"

        assert http_status(f"{base}/v2/repository/index", method="POST") == 403
        assert http_status(f"{base}/v2/repository/index", {"admin-key": "wrong"}, method="POST") == 403
        assert http_status(f"{base}/v2/repository/index", {"admin-key": "s3cret"}, method="POST") == 200
        assert http_status(f"{base}/v2/health/ready") == 200  # health stays open for probes

        import tritonclient.grpc as grpcclient

        # Over gRPC tritonserver 2.51 expects the header name with a fixed prefix.
        with grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}") as client:
            for headers in (None, {"admin-key": "s3cret"}):
                with pytest.raises(
                    grpcclient.InferenceServerException, match="triton-grpc-protocol-admin-key"
                ):
                    client.get_model_repository_index(headers=headers)
            client.get_model_repository_index(headers={"triton-grpc-protocol-admin-key": "s3cret"})
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
