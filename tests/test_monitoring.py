"""The chart's Grafana dashboard and PrometheusRule, offline and against a real Prometheus.

Debian's Prometheus 2.42 (unpacked into .tools/ by load_tests/external_tools.py) scrapes the test
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
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import yaml
from tritonclient.utils import InferenceServerException

from load_tests.external_tools import ToolInstallError, install_prometheus
from load_tests.payloads import SampleImages
from ssd300_common import contract
from ssd300_serving.embedded_server import free_port

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
LOAD_S = 10.0  # ten 1-s scrapes: enough for every rate() the dashboard and rules take
# The load runs in a fixture, which pytest-timeout does not bound (timeout_func_only).
LOAD_REQUEST_TIMEOUT_S = 120


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


# --- promtool test rules: input series → expected alerts, one case per alert at least ---------

OURS = f'namespace="{NAMESPACE}", job="{RELEASE}", pod="{POD}"'
OTHER = f'namespace="{NAMESPACE}", job="another-release", pod="another-release-0"'


def series(metric: str, labels: str, values: str) -> dict:
    return {"series": f"{metric}{{{labels}}}", "values": values}


def available_replicas(values: str) -> dict:
    """kube-state-metrics' ready replicas of this release's Deployment, as a promtool series."""
    return series(
        "kube_deployment_status_replicas_available",
        f'namespace="{NAMESPACE}", deployment="{RELEASE}"',
        values,
    )


def firing(rules: dict[str, dict], alert: str, labels: dict[str, str], **filled: str) -> dict:
    """An expected alert: its rule's labels plus ``labels``, and its annotations with the
    template fragments Prometheus would fill (``value``, ``model``, ...) given here as text."""
    rule = rules[alert]
    annotations = {}
    for key, text in rule["annotations"].items():
        text = re.sub(
            r"\{\{ \$value \| (?:printf \"%\.0f\"|humanizePercentage) \}\}", filled.get("value", "?"), text
        )
        text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: filled[m.group(1)], text)
        assert "{{" not in text, f"{alert}: a template fragment the test does not fill: {text}"
        annotations[key] = text
    return {"exp_labels": {**rule["labels"], **labels}, "exp_annotations": annotations}


def alert_unit_tests(rules: dict[str, dict]) -> list[dict]:
    """Cases for the default thresholds (queue 100 ms, failures 1 %, GPU memory 95 %) and
    `for` durations (5m, 5m, 2m, 10m). Counters rise by a fixed step a minute, so every rate
    and ratio is exact; another release's series must never alert."""
    ours, other = {"namespace": NAMESPACE, "job": RELEASE}, {"namespace": NAMESPACE}
    queue_ms = 200  # per request: 60 requests a minute, 60 × 200 000 µs queued a minute
    return [
        {  # queue time: ours at 200 ms fires after 5m; another release's 1 s queue is not ours
            "interval": "1m",
            "input_series": [
                series("nv_inference_request_success", f'{OURS}, model="ssd300"', "0+60x20"),
                series(
                    "nv_inference_queue_duration_us",
                    f'{OURS}, model="ssd300"',
                    f"0+{60 * queue_ms * 1000}x20",
                ),
                series("nv_inference_request_success", f'{OTHER}, model="ssd300"', "0+60x20"),
                series("nv_inference_queue_duration_us", f'{OTHER}, model="ssd300"', "0+60000000x20"),
            ],
            "alert_rule_test": [
                {"eval_time": "4m", "alertname": "SSD300QueueTimeHigh", "exp_alerts": []},  # pending
                {
                    "eval_time": "10m",
                    "alertname": "SSD300QueueTimeHigh",
                    "exp_alerts": [firing(rules, "SSD300QueueTimeHigh", ours, value=str(queue_ms))],
                },
            ],
        },
        {  # queue time below the threshold (50 ms): quiet
            "interval": "1m",
            "input_series": [
                series("nv_inference_request_success", f'{OURS}, model="ssd300"', "0+60x20"),
                series("nv_inference_queue_duration_us", f'{OURS}, model="ssd300"', "0+3000000x20"),
            ],
            "alert_rule_test": [{"eval_time": "15m", "alertname": "SSD300QueueTimeHigh", "exp_alerts": []}],
        },
        {  # failures per model: 5 % of ssd300_image's requests fire, 0.5 % of the detector's do not
            "interval": "1m",
            "input_series": [
                series("nv_inference_request_success", f'{OURS}, model="ssd300_image"', "0+95x20"),
                series(
                    "nv_inference_request_failure",
                    f'{OURS}, model="ssd300_image", reason="BACKEND"',
                    "0+5x20",
                ),
                series("nv_inference_request_success", f'{OURS}, model="ssd300_detector"', "0+199x20"),
                series(
                    "nv_inference_request_failure",
                    f'{OURS}, model="ssd300_detector", reason="BACKEND"',
                    "0+1x20",
                ),
                series(
                    "nv_inference_request_failure", f'{OTHER}, model="ssd300", reason="REJECTED"', "0+100x20"
                ),
            ],
            "alert_rule_test": [
                {"eval_time": "4m", "alertname": "SSD300InferenceFailures", "exp_alerts": []},
                {
                    "eval_time": "10m",
                    "alertname": "SSD300InferenceFailures",
                    "exp_alerts": [
                        firing(
                            rules,
                            "SSD300InferenceFailures",
                            {**ours, "model": "ssd300_image"},
                            value="5%",
                            model="ssd300_image",
                        )
                    ],
                },
            ],
        },
        {  # no ready replica by kube-state-metrics (the server still scraped): fires after 2m
            "interval": "1m",
            "input_series": [
                series("up", OURS, "1x10"),
                available_replicas("1 1 0 0 0 0 0 0"),
            ],
            "alert_rule_test": [
                {"eval_time": "1m", "alertname": "SSD300NoReadyPods", "exp_alerts": []},
                {"eval_time": "3m", "alertname": "SSD300NoReadyPods", "exp_alerts": []},  # pending
                {
                    "eval_time": "5m",
                    "alertname": "SSD300NoReadyPods",
                    "exp_alerts": [firing(rules, "SSD300NoReadyPods", {**other, "deployment": RELEASE})],
                },
            ],
        },
        {  # no kube-state-metrics, and our server down while another release is up: fires
            "interval": "1m",
            "input_series": [series("up", OURS, "1 1 0 0 0 0 0 0"), series("up", OTHER, "1x10")],
            "alert_rule_test": [
                {"eval_time": "1m", "alertname": "SSD300NoReadyPods", "exp_alerts": []},
                {
                    "eval_time": "6m",
                    "alertname": "SSD300NoReadyPods",
                    # absent() of an expression keeps no labels: the alert carries only its own.
                    "exp_alerts": [firing(rules, "SSD300NoReadyPods", {})],
                },
            ],
        },
        {  # a ready replica and a scraped server: quiet
            "interval": "1m",
            "input_series": [
                series("up", OURS, "1x10"),
                available_replicas("1x10"),
            ],
            "alert_rule_test": [{"eval_time": "8m", "alertname": "SSD300NoReadyPods", "exp_alerts": []}],
        },
        {  # GPU memory: one GPU at 97 % fires after 10m, one at 50 % stays quiet
            "interval": "1m",
            "input_series": [
                series("nv_gpu_memory_used_bytes", f'{OURS}, gpu_uuid="GPU-a"', "97000000000x20"),
                series("nv_gpu_memory_total_bytes", f'{OURS}, gpu_uuid="GPU-a"', "100000000000x20"),
                series("nv_gpu_memory_used_bytes", f'{OURS}, gpu_uuid="GPU-b"', "50000000000x20"),
                series("nv_gpu_memory_total_bytes", f'{OURS}, gpu_uuid="GPU-b"', "100000000000x20"),
            ],
            "alert_rule_test": [
                {"eval_time": "9m", "alertname": "SSD300GpuMemoryNearlyFull", "exp_alerts": []},
                {
                    "eval_time": "11m",
                    "alertname": "SSD300GpuMemoryNearlyFull",
                    "exp_alerts": [
                        firing(
                            rules,
                            "SSD300GpuMemoryNearlyFull",
                            {"namespace": NAMESPACE, "pod": POD, "gpu_uuid": "GPU-a"},
                            value="97%",
                            gpu_uuid="GPU-a",
                            pod=POD,
                        )
                    ],
                },
            ],
        },
    ]


def test_every_alert_fires_and_stays_quiet_as_promtool_test_rules_says(tmp_path, prometheus):
    _, promtool = prometheus
    groups = rule_groups(objects({"metrics": {"prometheusRule": {"enabled": True}}}))
    rules = {rule["alert"]: rule for group in groups for rule in group["rules"]}
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    cases = alert_unit_tests(rules)
    covered = {
        check["alertname"] for case in cases for check in case["alert_rule_test"] if check["exp_alerts"]
    }
    assert covered == set(rules), f"alerts without a firing case: {set(rules) - covered}"
    tests = tmp_path / "alerts_test.yaml"
    tests.write_text(
        yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": cases})
    )
    result = subprocess.run(
        [str(promtool), "test", "rules", str(tests)], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


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

    def query(self, expr: str, *, at: float | None = None) -> list[dict]:
        """The instant vector of ``expr`` now, or at the Unix time ``at``."""
        try:
            answer = self.get("/api/v1/query", query=expr, **({} if at is None else {"time": at}))
        except urllib.error.HTTPError as error:  # a parse error answers 400 with its reason
            raise AssertionError(f"{expr}: {error.read().decode()}") from error
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


@dataclass(frozen=True)
class NetworkStats:
    """ssd300's cumulative statistics as tritonserver reports them (not through Prometheus)."""

    inferences: int  # images
    executions: int  # batches run
    successes: int  # requests
    queue_us: float  # summed over requests

    @classmethod
    def read(cls, server) -> NetworkStats:
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            stats = client.get_inference_statistics(contract.NETWORK_MODEL, as_json=True)["model_stats"][0]
        inference = stats["inference_stats"]
        return cls(
            inferences=int(stats.get("inference_count", 0)),
            executions=int(stats.get("execution_count", 0)),
            successes=int(inference.get("success", {}).get("count", 0)),
            queue_us=int(inference.get("queue", {}).get("ns", 0)) / 1000,
        )

    def __sub__(self, other: NetworkStats) -> NetworkStats:
        return NetworkStats(
            self.inferences - other.inferences,
            self.executions - other.executions,
            self.successes - other.successes,
            self.queue_us - other.queue_us,
        )


def run_load(server, seconds: float) -> dict[str, int]:
    """Two closed-loop clients on ssd300_detector sending 2 images a request (so ssd300's
    average batch exceeds 1 whether or not requests are combined), one on ssd300_image, and
    one undecodable image (a BACKEND failure of ssd300_image) per second. An exception in any
    client thread is raised here."""
    samples = SampleImages()
    stop_at = time.monotonic() + seconds
    counts = {"ok": 0, "failed": 0}
    lock = threading.Lock()
    errors: list[BaseException] = []

    def count(outcome: str) -> None:
        with lock:
            counts[outcome] += 1

    def detector(index: int) -> None:
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            tensor = grpcclient.InferInput(contract.IMAGES_INPUT, [2, 300, 300, 3], contract.IMAGES_DATATYPE)
            tensor.set_data_from_numpy(samples.pixel_batch(2, index))
            while time.monotonic() < stop_at:
                client.infer(contract.DETECTOR_MODEL, [tensor], client_timeout=LOAD_REQUEST_TIMEOUT_S)
                count("ok")

    def images() -> None:
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            good = grpcclient.InferInput(
                contract.ENCODED_IMAGE_INPUT, [1, 1], contract.ENCODED_IMAGE_DATATYPE
            )
            good.set_data_from_numpy(samples.encoded_batch(1))
            bad = grpcclient.InferInput(contract.ENCODED_IMAGE_INPUT, [1, 1], contract.ENCODED_IMAGE_DATATYPE)
            bad.set_data_from_numpy(np.array([[b"not an image"]], dtype=object))
            while time.monotonic() < stop_at:
                client.infer(contract.IMAGE_MODEL, [good], client_timeout=LOAD_REQUEST_TIMEOUT_S)
                count("ok")
                try:
                    client.infer(contract.IMAGE_MODEL, [bad], client_timeout=LOAD_REQUEST_TIMEOUT_S)
                except InferenceServerException:
                    count("failed")

    def guarded(target, *args) -> None:
        try:
            target(*args)
        except BaseException as error:  # a thread's exception is otherwise only printed
            with lock:
                errors.append(error)

    threads = [threading.Thread(target=guarded, args=(detector, i)) for i in range(2)] + [
        threading.Thread(target=guarded, args=(images,))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise AssertionError(f"{len(errors)} load thread(s) failed: {errors!r}") from errors[0]
    return counts


def poll(condition, what: str, timeout_s: float = 60.0):
    """``condition()``'s first truthy value, asked every 0.2 s."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"after {timeout_s} s: {what}"
        time.sleep(0.2)
    return value


def evaluated_at(rule: dict) -> float:
    """A rule's lastEvaluation (RFC 3339, nanoseconds) as a Unix time."""
    stamp = re.sub(r"(\.\d{6})\d*", r"\1", rule["lastEvaluation"]).replace("Z", "+00:00")
    return datetime.fromisoformat(stamp).timestamp()


@dataclass(frozen=True)
class Scraped:
    prometheus: PrometheusServer
    counts: dict[str, int]  # the load's answered and failed requests
    load: NetworkStats  # what ssd300 did during the load, by tritonserver's own statistics
    at: float  # Unix time after the last scrape and rule evaluation: queries with [1m] cover the load


@pytest.fixture(scope="module")
def scraped(prometheus, triton_server, monitoring_docs, tmp_path_factory):
    """A Prometheus that scraped the test server through a short load; started fresh, so its
    rates cover nothing but the load."""
    binary, _ = prometheus
    server = PrometheusServer(
        binary,
        tmp_path_factory.mktemp("prometheus"),
        metrics_port=triton_server.metrics_port,
        rules=rule_groups(monitoring_docs),
    )
    try:
        server.wait_ready()
        poll(lambda: server.query("up == 1"), "no scrape of tritonserver")
        before = NetworkStats.read(triton_server)
        counts = run_load(triton_server, LOAD_S)
        after = NetworkStats.read(triton_server)
        # Polled, not slept: the scrape that saw the last request, then a rule evaluation after it.
        successes = f'sum(nv_inference_request_success{{model="{contract.NETWORK_MODEL}"}})'
        poll(
            lambda: [r for r in server.query(successes) if float(r["value"][1]) == after.successes],
            f"Prometheus never saw {after.successes} ssd300 successes",
        )
        seen = time.time()

        def evaluated() -> bool:
            groups = server.get("/api/v1/rules")["data"]["groups"]
            return all(evaluated_at(rule) > seen for group in groups for rule in group["rules"])

        poll(evaluated, "no rule evaluation after the last scrape")
        yield Scraped(server, counts, after - before, time.time())
    finally:
        server.stop()


@pytest.mark.server
def test_prometheus_scrapes_the_server_with_service_monitor_labels(scraped):
    prometheus, counts = scraped.prometheus, scraped.counts
    assert counts["ok"] > 0 and counts["failed"] > 0, counts
    (target,) = prometheus.get("/api/v1/targets")["data"]["activeTargets"]
    assert target["health"] == "up", target
    assert target["labels"]["job"] == RELEASE and target["labels"]["namespace"] == NAMESPACE


@pytest.mark.server
def test_every_dashboard_query_parses_and_has_data(scraped, monitoring_docs):
    prometheus = scraped.prometheus
    empty = []
    for title, expr in dashboard_exprs(dashboard_from(monitoring_docs)).items():
        result = prometheus.query(expr)  # raises on a parse or evaluation error
        if not result and not NEEDS_GPU_OR_CLUSTER.search(expr):
            empty.append(title)
    assert not empty, f"no series for {empty}"


@pytest.mark.server
def test_dashboard_figures_show_the_load(scraped, monitoring_docs):
    prometheus = scraped.prometheus
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
    # Images per execution by tritonserver's own count: above 1, since the detector's requests
    # carry 2 images (a panel dividing the wrong way would show less than 1).
    expected = scraped.load.inferences / scraped.load.executions
    assert expected > 1.0, scraped.load
    (batch,) = prometheus.query(exprs["ssd300 average executed batch / A"], at=scraped.at)
    assert float(batch["value"][1]) == pytest.approx(expected, rel=0.1), scraped.load
    (pods,) = prometheus.query(exprs["Pods / A"])
    assert float(pods["value"][1]) == 1.0


@pytest.mark.server
def test_dashboard_variables_find_the_release(scraped, monitoring_docs):
    prometheus = scraped.prometheus
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
    prometheus = scraped.prometheus
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


def expected_queue_us(scraped: Scraped) -> float:
    """ssd300's mean queue time per request during the load, by tritonserver's own statistics;
    the HPA's and KEDA's queries must give this figure (µs) at the end of the load."""
    assert scraped.load.successes > 0 and scraped.load.queue_us > 0, scraped.load
    return scraped.load.queue_us / scraped.load.successes


@pytest.mark.server
def test_the_adapter_rule_the_hpa_scales_on_returns_the_pods_queue_time(scraped):
    (series,) = scraped.prometheus.query(adapter_expr(), at=scraped.at)
    assert series["metric"]["pod"] == POD
    assert float(series["value"][1]) == pytest.approx(expected_queue_us(scraped), rel=0.1)


@pytest.mark.server
def test_the_kserve_keda_query_returns_the_queue_time(scraped):
    query = kserve_autoscaling_query().replace('pod=~"ssd300-predictor-.*"', 'pod=~".*"')
    (series,) = scraped.prometheus.query(query, at=scraped.at)
    assert float(series["value"][1]) == pytest.approx(expected_queue_us(scraped), rel=0.1)
