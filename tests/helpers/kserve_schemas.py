"""Vendor the parts of KServe's CRD schemas that deploy/kserve/ uses, as test data.

tests/test_kserve.py validates the manifests offline against these schemas. They are the
``openAPIV3Schema`` of the served/storage version of each CRD, as KServe's release publishes
it (``config/crd/full/``), with the subtrees our manifests do not use removed, so the test
data stays small: the InferenceService keeps ``spec.predictor`` only, without the per-framework
shortcuts (``sklearn``, ``pytorch``, … ``triton``) and ``workerSpec``; the ServingRuntime drops
``workerSpec``. A manifest using a removed field fails validation as an unknown field, so the
pruning can make the test stricter, never laxer.

    python -m tests.helpers.kserve_schemas --kserve /path/to/kserve/checkout --ref v0.20.0
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
OUT = REPO_ROOT / "tests" / "data" / "kserve"
CRDS = {
    "InferenceService": ("config/crd/full/serving.kserve.io_inferenceservices.yaml", "v1beta1"),
    "ServingRuntime": ("config/crd/full/serving.kserve.io_servingruntimes.yaml", "v1alpha1"),
}
FRAMEWORKS = (
    "huggingface",
    "lightgbm",
    "onnx",
    "paddle",
    "pmml",
    "pytorch",
    "sklearn",
    "tensorflow",
    "triton",
)
PRUNE = {
    "InferenceService": [("spec", key) for key in ("canary", "explainer", "transformer")]
    + [("spec", "predictor", key) for key in (*FRAMEWORKS, "xgboost", "workerSpec")],
    "ServingRuntime": [("spec", "workerSpec")],
}


def _drop(schema: dict, path: tuple[str, ...]) -> None:
    node = schema
    for key in path[:-1]:
        node = node["properties"][key]
    del node["properties"][path[-1]]
    if path[-1] in node.get("required", []):
        raise ValueError(f"{'.'.join(path)} is required: it cannot be pruned")


def vendor(kserve: Path, ref: str) -> None:
    commit = subprocess.run(
        ["git", "-C", str(kserve), "rev-parse", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    OUT.mkdir(parents=True, exist_ok=True)
    for kind, (path, version) in CRDS.items():
        text = subprocess.run(
            ["git", "-C", str(kserve), "show", f"{commit}:{path}"], capture_output=True, text=True, check=True
        ).stdout
        crd = yaml.safe_load(text)
        (entry,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
        schema = entry["schema"]["openAPIV3Schema"]
        for pruned in PRUNE[kind]:
            _drop(schema, pruned)
        document = {
            "source": f"https://github.com/kserve/kserve/blob/{ref}/{path}",
            "ref": ref,
            "commit": commit,
            "apiVersion": f"{crd['spec']['group']}/{version}",
            "kind": kind,
            "pruned": [".".join(p) for p in PRUNE[kind]],
            "openAPIV3Schema": schema,
        }
        target = OUT / f"{kind.lower()}-{version}.schema.json"
        target.write_text(json.dumps(document, separators=(",", ":"), sort_keys=True) + "\n")
        print(f"{target.relative_to(REPO_ROOT)}: {target.stat().st_size:,} bytes")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.helpers.kserve_schemas", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--kserve", type=Path, required=True, help="a git checkout (or bare clone) of kserve/kserve"
    )
    parser.add_argument("--ref", default="v0.20.0")
    args = parser.parse_args(argv)
    vendor(args.kserve, args.ref)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
