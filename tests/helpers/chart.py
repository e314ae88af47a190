"""The Helm chart rendered as `helm template` would (Helm's own engine, through helm-python), and
the KServe manifests, and the lookups the deploy, KServe and monitoring tests share."""

from __future__ import annotations

from pathlib import Path

import helm_python as helm
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CHART = DEPLOY / "helm" / "ssd300-triton"
ADAPTER_VALUES = DEPLOY / "prometheus-adapter" / "values.yaml"
MODEL_REPOSITORY = REPO / "model_repository"
KSERVE = DEPLOY / "kserve"

RELEASE, NAMESPACE = "ssd300-triton", "ml"  # release named like the chart: objects are "ssd300-triton…"


def render(values: dict | None = None) -> dict[str, str]:
    """Template path → rendered text (NOTES.txt included), as `helm template` would."""
    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE)


def objects(values: dict | None = None) -> list[dict]:
    docs = []
    for path, text in render(values).items():
        if path.endswith(".yaml"):
            docs += [doc for doc in yaml.safe_load_all(text) if doc]
    return docs


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def only(docs: list[dict], kind: str) -> dict:
    (doc,) = find(docs, kind)
    return doc


def server_deployment(docs: list[dict]) -> dict:
    (deployment,) = [
        d
        for d in find(docs, "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "server"
    ]
    return deployment


def server_container(docs: list[dict]) -> dict:
    pod = server_deployment(docs)["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "tritonserver"]
    return container


def pod_specs(docs: list[dict]) -> list[dict]:
    return [d["spec"]["template"]["spec"] for d in docs if d["kind"] in ("Deployment", "Job")]


def flags(args: list[str]) -> dict[str, list[str]]:
    """`--name=value` arguments → {name: [values…]} (a flag may repeat)."""
    parsed: dict[str, list[str]] = {}
    for arg in args:
        name, _, value = arg.partition("=")
        parsed.setdefault(name, []).append(value)
    return parsed


def manifests() -> dict[str, dict]:
    docs = {}
    for path in sorted(KSERVE.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    return docs


def kserve_autoscaling_query() -> str:
    (metric,) = manifests()["InferenceService"]["spec"]["predictor"]["autoScaling"]["metrics"]
    return metric["external"]["metric"]["query"]
