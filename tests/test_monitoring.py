"""The chart's Grafana dashboard and PrometheusRule, offline and against a real Prometheus.

Debian's Prometheus 2.42 (unpacked into .tools/ by tools/external_tools.py) scrapes the test
session's tritonserver on loopback while a short load runs, then every PromQL expression of
the dashboard, of the alert rules and of the prometheus-adapter rule is evaluated through its
HTTP API. Series carry the labels a ServiceMonitor scrape gives them (job = the Service's
name, namespace, pod), so the chart's own selectors are what is tested.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import yaml
from tritonclient.utils import InferenceServerException

from load_tests.payloads import SampleImages
from ssd300_client import contract
from ssd300_serving.embedded_server import free_port
from tools.external_tools import ToolInstallError, install_prometheus

from .helpers.chart import (
    ADAPTER_VALUES,
    CHART,
    NAMESPACE,
    RELEASE,
    find,
    kserve_autoscaling_query,
    objects,
    only,
)

POD = f"{RELEASE}-0"
# Thresholds low enough for the test's own load to fire the queue-time and failure alerts at
# once (for: 0s); the defaults are checked separately.
FIRING_VALUES = {
    "metrics": {
        "grafanaDashboard": {"enabled": True},
        "prometheusRule": {
            "enabled": True,
            "queueTime": {"thresholdMs": 0, "for": "0s"},
            "failures": {"ratio": 0.0, "for": "0s"},
            "noReadyPods": {"for": "0s"},
            "gpuMemory": {"for": "0s"},
        },
    }
}
# Series only a GPU or kube-state-metrics provides: empty here, and allowed to be.
NEEDS_GPU_OR_CLUSTER = re.compile(r"\b(nv_gpu_\w+|kube_\w+)\b")
GRAFANA_VARIABLES = {"$namespace": NAMESPACE, "$job": RELEASE, "$pod": ".*", "$__rate_interval": "1m"}
LOAD_S = 20.0


def dashboard_from(docs: list[dict]) -> dict:
    (config_map,) = [d for d in find(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
    (text,) = config_map["data"].values()
    return json.loads(text)


def dashboard_exprs(dashboard: dict) -> dict[str, str]:
    """ "panel title / refId" → PromQL with Grafana's variables filled in as Grafana would here."""
    exprs = {}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"{panel['title']}: unknown variable left in {expr}"
            exprs[f"{panel['title']} / {target['refId']}"] = expr
    return exprs


def rule_groups(docs: list[dict]) -> list[dict]:
    return only(docs, "PrometheusRule")["spec"]["groups"]


def adapter_expr() -> str:
    """The prometheus-adapter rule the HPA scales on, expanded as the adapter would for one pod."""
    (rule,) = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]
    matchers = f'namespace="{NAMESPACE}",pod="{POD}"'
    return rule["metricsQuery"].replace("<<.GroupBy>>", "pod").replace("<<.LabelMatchers>>", matchers)


# --- offline ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def monitoring_docs() -> list[dict]:
    return objects(FIRING_VALUES)


def test_dashboard_ships_as_a_configmap_the_grafana_sidecar_loads(monitoring_docs):
    (config_map,) = [
        d for d in find(monitoring_docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")
    ]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads((CHART / "dashboards" / "ssd300-triton.json").read_text()) == dashboard_from(
        monitoring_docs
    )


def test_dashboard_has_the_panels_an_operator_needs(monitoring_docs):
    dashboard = dashboard_from(monitoring_docs)
    text = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in (
        "nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_exec_count",
        "nv_inference_pending_request_count",
        "nv_gpu_utilization",
        "nv_gpu_memory_used_bytes",
        "up",
    ):
        assert re.search(rf"\b{metric}\b", text), f"no panel uses {metric}"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"]
    datasources = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert datasources == {"${datasource}"}, "every query must follow the data source variable"


def test_alerts_cover_queue_time_failures_readiness_and_gpu_memory(monitoring_docs):
    alerts = {r["alert"]: r for group in rule_groups(monitoring_docs) for r in group["rules"]}
    assert set(alerts) == {
        "SSD300QueueTimeHigh",
        "SSD300InferenceFailures",
        "SSD300NoReadyPods",
        "SSD300GpuMemoryNearlyFull",
    }
    for alert in alerts.values():
        assert alert["labels"]["severity"] in {"warning", "critical"}
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
        # The chart selects this release's series only.
        assert f'job="{RELEASE}"' in alert["expr"] or f'deployment="{RELEASE}"' in alert["expr"]


def test_rules_pass_promtool_check_rules(tmp_path, prometheus):
    _, promtool = prometheus
    for values in ({"metrics": {"prometheusRule": {"enabled": True}}}, FIRING_VALUES):
        rules = tmp_path / "rules.yaml"
        rules.write_text(yaml.safe_dump({"groups": rule_groups(objects(values))}))
        result = subprocess.run([str(promtool), "check", "rules", str(rules)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS: 4 rules found" in result.stdout


# --- a real Prometheus ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def prometheus() -> tuple[Path, Path]:
    try:
        return install_prometheus()
    except ToolInstallError as error:
        pytest.skip(f"Prometheus cannot be installed here: {error}")


class PrometheusServer:
    def __init__(self, binary: Path, workdir: Path, *, metrics_port: int, rules: list[dict]) -> None:
        self.port = free_port()
        (workdir / "rules.yaml").write_text(yaml.safe_dump({"groups": rules}))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(workdir / "rules.yaml")],
            "scrape_configs": [
                {
                    "job_name": RELEASE,  # a ServiceMonitor's job label is its Service's name
                    "static_configs": [
                        {
                            "targets": [f"127.0.0.1:{metrics_port}"],
                            "labels": {"namespace": NAMESPACE, "pod": POD},
                        }
                    ],
                }
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = (workdir / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            [
                str(binary),
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def get(self, path: str, **params) -> dict:
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(url, timeout=30) as response:
            return json.loads(response.read())

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (
                f"prometheus exited: {Path(self.log.name).read_text()[-2000:]}"
            )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        raise AssertionError("prometheus did not become ready")

    def query(self, expr: str) -> list[dict]:
        try:
            answer = self.get("/api/v1/query", query=expr)
        except urllib.error.HTTPError as error:  # a parse error answers 400 with its reason
            raise AssertionError(f"{expr}: {error.read().decode()}") from error
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


def run_load(server, seconds: float) -> dict[str, int]:
    """Two closed-loop clients on ssd300_detector, one on ssd300_image, and one undecodable
    image (a BACKEND failure of ssd300_image) per second."""
    samples = SampleImages()
    stop_at = time.monotonic() + seconds
    counts = {"ok": 0, "failed": 0}

    def detector(index: int) -> None:
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            tensor = grpcclient.InferInput(contract.IMAGES_INPUT, [1, 300, 300, 3], contract.IMAGES_DATATYPE)
            tensor.set_data_from_numpy(samples.pixel_batch(1, index))
            while time.monotonic() < stop_at:
                client.infer(contract.DETECTOR_MODEL, [tensor])
                counts["ok"] += 1

    def images() -> None:
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            good = grpcclient.InferInput(
                contract.ENCODED_IMAGE_INPUT, [1, 1], contract.ENCODED_IMAGE_DATATYPE
            )
            good.set_data_from_numpy(samples.encoded_batch(1))
            bad = grpcclient.InferInput(contract.ENCODED_IMAGE_INPUT, [1, 1], contract.ENCODED_IMAGE_DATATYPE)
            bad.set_data_from_numpy(np.array([[b"not an image"]], dtype=object))
            while time.monotonic() < stop_at:
                client.infer(contract.IMAGE_MODEL, [good])
                counts["ok"] += 1
                try:
                    client.infer(contract.IMAGE_MODEL, [bad])
                except InferenceServerException:
                    counts["failed"] += 1

    threads = [threading.Thread(target=detector, args=(i,)) for i in range(2)] + [
        threading.Thread(target=images)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return counts


@pytest.fixture(scope="module")
def scraped(prometheus, triton_server, monitoring_docs, tmp_path_factory):
    """A Prometheus that scraped the test server through a short load; yields (server, load counts)."""
    binary, _ = prometheus
    server = PrometheusServer(
        binary,
        tmp_path_factory.mktemp("prometheus"),
        metrics_port=triton_server.metrics_port,
        rules=rule_groups(monitoring_docs),
    )
    try:
        server.wait_ready()
        counts = run_load(triton_server, LOAD_S)
        time.sleep(3)  # the last scrape and rule evaluation after the load
        yield server, counts
    finally:
        server.stop()


@pytest.mark.server
def test_prometheus_scrapes_the_server_with_service_monitor_labels(scraped):
    prometheus, counts = scraped
    assert counts["ok"] > 0 and counts["failed"] > 0, counts
    (target,) = prometheus.get("/api/v1/targets")["data"]["activeTargets"]
    assert target["health"] == "up", target
    assert target["labels"]["job"] == RELEASE and target["labels"]["namespace"] == NAMESPACE


@pytest.mark.server
def test_every_dashboard_query_parses_and_has_data(scraped, monitoring_docs):
    prometheus, _ = scraped
    empty = []
    for title, expr in dashboard_exprs(dashboard_from(monitoring_docs)).items():
        result = prometheus.query(expr)  # raises on a parse or evaluation error
        if not result and not NEEDS_GPU_OR_CLUSTER.search(expr):
            empty.append(title)
    assert not empty, f"no series for {empty}"


@pytest.mark.server
def test_dashboard_figures_show_the_load(scraped, monitoring_docs):
    prometheus, _ = scraped
    exprs = dashboard_exprs(dashboard_from(monitoring_docs))
    requests = {
        r["metric"]["model"]: float(r["value"][1])
        for r in prometheus.query(exprs["Requests/s per model / A"])
    }
    assert (
        requests[contract.NETWORK_MODEL] > 0
        and requests[contract.DETECTOR_MODEL] > 0
        and requests[contract.IMAGE_MODEL] > 0
    ), requests
    failures = {
        (r["metric"]["model"], r["metric"]["reason"]): float(r["value"][1])
        for r in prometheus.query(exprs["Failures/s per model / A"])
    }
    # The undecodable images: tritonserver 2.51 counts them as failures of the ensemble called.
    failed = {model for (model, _), rate in failures.items() if rate > 0}
    assert contract.IMAGE_MODEL in failed, failures
    assert contract.DETECTOR_MODEL not in failed, failures
    (batch,) = prometheus.query(exprs["ssd300 average executed batch / A"])
    assert float(batch["value"][1]) >= 1.0
    (pods,) = prometheus.query(exprs["Pods / A"])
    assert float(pods["value"][1]) == 1.0


@pytest.mark.server
def test_dashboard_variables_find_the_release(scraped, monitoring_docs):
    prometheus, _ = scraped
    variables = {v["name"]: v for v in dashboard_from(monitoring_docs)["templating"]["list"]}
    expected = {"namespace": NAMESPACE, "job": RELEASE, "pod": POD}
    for name, value in expected.items():
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", variables[name]["query"]["query"])
        selector, label = match.groups()
        for variable, filled in GRAFANA_VARIABLES.items():
            selector = selector.replace(variable, filled)
        assert label == name
        assert value in prometheus.get(f"/api/v1/label/{label}/values", **{"match[]": selector})["data"]


@pytest.mark.server
def test_every_rule_evaluates_in_prometheus_and_alerts_as_expected(scraped, monitoring_docs):
    prometheus, _ = scraped
    rules = [r for group in prometheus.get("/api/v1/rules")["data"]["groups"] for r in group["rules"]]
    assert len(rules) == 4
    for rule in rules:
        assert rule["health"] == "ok", rule
        prometheus.query(rule["query"])
    state = {r["name"]: r["state"] for r in rules}
    # Thresholds at 0: the load queued requests and sent undecodable images. The server is up
    # (no_ready must stay quiet) and has no GPU (no memory series at all).
    assert state == {
        "SSD300QueueTimeHigh": "firing",
        "SSD300InferenceFailures": "firing",
        "SSD300NoReadyPods": "inactive",
        "SSD300GpuMemoryNearlyFull": "inactive",
    }
    failing = {
        a["labels"]["model"]
        for a in prometheus.get("/api/v1/alerts")["data"]["alerts"]
        if "model" in a["labels"]
    }
    assert contract.IMAGE_MODEL in failing and contract.DETECTOR_MODEL not in failing


@pytest.mark.server
def test_the_adapter_rule_the_hpa_scales_on_returns_the_pod(scraped):
    prometheus, _ = scraped
    (series,) = prometheus.query(adapter_expr())
    assert series["metric"]["pod"] == POD and float(series["value"][1]) >= 0


@pytest.mark.server
def test_the_kserve_keda_query_returns_the_queue_time(scraped):
    prometheus, _ = scraped
    query = kserve_autoscaling_query().replace('pod=~"ssd300-predictor-.*"', 'pod=~".*"')
    (series,) = prometheus.query(query)
    assert float(series["value"][1]) >= 0
