"""``make analyze``: Model Analyzer's configs name what the repository has, and it runs here.

The fast tests read each YAML under ``load_tests/analyze/`` with Model Analyzer's own loader
(1.44.0, installed into ``.tools/`` from PyPI like perf_analyzer) and check the models, their
inputs and the config fields it would sweep against the model repository and the contract.
The slow test runs the smallest profile end to end against the bundled tritonserver.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from load_tests.analyze import __main__ as analyze
from load_tests.payloads import SampleImages
from load_tests.perf.inputs import write_input_data
from ssd300_common import contract
from ssd300_serving.provenance import stamp_weights

REPO_ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = REPO_ROOT / "model_repository"
CONFIGS = sorted((REPO_ROOT / "load_tests" / "analyze").glob("*.yaml"))
# Model Analyzer's CLI parser and config loader, as `model-analyzer profile` runs them; prints
# what it made of the profiled models.
LOADER = """
import json, sys
from model_analyzer.cli.cli import CLI
from model_analyzer.config.input.config_command_profile import ConfigCommandProfile

config = ConfigCommandProfile()
cli = CLI()
cli.add_subcommand(cmd="profile", help="", config=config)
sys.argv = ["model-analyzer", "profile", *sys.argv[1:]]
cli.parse()
print(json.dumps({
    "mode": config.run_config_search_mode,
    "cpu_only_composing_models": config.cpu_only_composing_models,
    "models": {
        spec.model_name(): {
            "model_config_parameters": spec.model_config_parameters() or {},
            "concurrency": spec.parameters()["concurrency"],
            "perf_analyzer_flags": spec.perf_analyzer_flags(),
            "objectives": spec.objectives(),
            "constraints": spec.constraints().to_dict(),
        }
        for spec in config.profile_models
    },
}))
"""


def load_with_model_analyzer(model_analyzer: Path, config: Path, tmp_path: Path) -> dict:
    result = subprocess.run(
        [
            str(model_analyzer.with_name("python")),
            "-c",
            LOADER,
            f"--config-file={config}",
            f"--model-repository={REPOSITORY}",
            f"--export-path={tmp_path / 'export'}",
            f"--output-model-repository-path={tmp_path / 'output'}",
            # It checks that both are executables; nothing runs them here.
            f"--perf-analyzer-path={sys.executable}",
            f"--triton-server-path={sys.executable}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def model_config(model: str, *, cpu: bool) -> mc.ModelConfig:
    folder = REPOSITORY / model
    path = (
        folder / "configs" / "cpu.pbtxt" if cpu and (folder / "configs").is_dir() else folder / "config.pbtxt"
    )
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def sweep_values(value) -> list:
    """Model Analyzer's parsed sweeps are nested lists; the values in them, flattened."""
    return [v for item in value for v in sweep_values(item)] if isinstance(value, list) else [value]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.name)
def test_config_names_models_inputs_and_fields_that_exist(model_analyzer, config, tmp_path):
    loaded = load_with_model_analyzer(model_analyzer, config, tmp_path)
    cpu = config.name == "cpu.yaml"
    inputs = {
        name: json.loads(path.read_text())["data"]
        for name, path in write_input_data(SampleImages(), tmp_path / "inputs").items()
    }
    assert loaded["models"], f"{config.name} profiles no model"
    for model, spec in loaded["models"].items():
        served = model_config(model, cpu=cpu)
        # The input data is a file `make analyze` writes, holding exactly the model's inputs.
        data_file = Path(spec["perf_analyzer_flags"]["input-data"])
        assert data_file.parent == Path("inputs")
        entries = inputs[{"detector_inputs.json": "detector", "image_inputs.json": "image"}[data_file.name]]
        assert all(set(entry) == {tensor.name for tensor in served.input} for entry in entries)
        # The goal: throughput within a p95 latency budget.
        assert "perf_throughput" in spec["objectives"]
        assert spec["constraints"]["perf_latency_p95"]["max"] > 0
        swept = spec["model_config_parameters"]
        for size in sweep_values(swept.get("max_batch_size", [])):
            assert 1 <= size <= contract.MAX_BATCH_SIZE
        for group in sweep_values(swept.get("instance_group", [])):
            assert sweep_values(group["kind"]) == ["KIND_CPU" if cpu else "KIND_GPU"]
        for batching in sweep_values(swept.get("dynamic_batching", [])):
            assert served.HasField("dynamic_batching"), f"{model} has no dynamic batcher to tune"
            assert max(sweep_values(batching["preferred_batch_size"])) <= contract.MAX_BATCH_SIZE
        # Config parameters are swept only where the model reads them.
        for parameters in sweep_values(swept.get("parameters", [])):
            assert set(parameters) <= set(served.parameters), f"{model} has no {set(parameters)}"
        if served.platform == "ensemble":
            assert loaded["mode"] == "quick"  # the only search Model Analyzer has for ensembles
            steps = {step.model_name for step in served.ensemble_scheduling.step}
            assert set(loaded["cpu_only_composing_models"]) <= steps
            for step in loaded["cpu_only_composing_models"]:
                assert model_config(step, cpu=False).instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU


def test_every_public_model_and_the_network_is_profiled_by_some_config(model_analyzer, tmp_path):
    profiled = set()
    for config in CONFIGS:
        profiled |= set(load_with_model_analyzer(model_analyzer, config, tmp_path)["models"])
    assert {contract.NETWORK_MODEL, *contract.PUBLIC_MODELS} <= profiled


def test_repository_view_serves_the_cpu_variants_as_config_pbtxt(tmp_path):
    repository = tmp_path / "model_repository"
    for model in REPOSITORY.iterdir():
        if (model / "config.pbtxt").is_file():
            (repository / model.name / "1").mkdir(parents=True)
            (repository / model.name / "config.pbtxt").write_text((model / "config.pbtxt").read_text())
            if (model / "configs").is_dir():
                (repository / model.name / "configs").symlink_to(model / "configs")
    provenance = {"weights": "random", "engine": "onnx", "precision": "fp32"}
    (repository / "ssd300" / "1" / "weights.json").write_text(json.dumps(provenance))
    view = analyze.cpu_repository(repository, tmp_path / "view")
    for model in repository.iterdir():
        # No configs/ folder: the server loads the config.pbtxt Model Analyzer writes, whatever
        # --model-config-name says.
        assert sorted(p.name for p in (view / model.name).iterdir()) == ["1", "config.pbtxt"]
        cpu = REPOSITORY / model.name / "configs" / "cpu.pbtxt"
        expected = (cpu if cpu.is_file() else REPOSITORY / model.name / "config.pbtxt").read_text()
        if model.name == contract.NETWORK_MODEL:
            expected = stamp_weights(expected, provenance)
            assert 'key: "engine"' in expected  # its runner picks model.onnx by it
        assert (view / model.name / "config.pbtxt").read_text() == expected


def test_launcher_runs_the_bundled_tritonserver(tmp_path):
    launcher = analyze.write_launcher(REPOSITORY, tmp_path / "runtime")
    result = subprocess.run([str(launcher), "--help"], capture_output=True, text=True, timeout=60)
    # Its usage lists the flags it was given, so the binary, its libraries and the flags load.
    assert "Usage: tritonserver" in result.stdout + result.stderr
    assert "--backend-directory" in launcher.read_text()
    assert (tmp_path / "runtime" / "backends" / "python" / "triton_python_backend_stub").exists()


@pytest.mark.slow
@pytest.mark.server
def test_smallest_profile_writes_model_analyzers_reports(model_analyzer, built_repository, tmp_path):
    """cpu.yaml cut to its first value of every sweep, one concurrency, short windows: the
    shipped config and one variant measured against the bundled server (a few minutes)."""
    config = yaml.safe_load((REPO_ROOT / "load_tests" / "analyze" / "cpu.yaml").read_text())
    for spec in config["profile_models"].values():
        swept = spec["model_config_parameters"]
        swept["instance_group"][0]["count"] = swept["instance_group"][0]["count"][:1]
        swept["parameters"]["max_forward_batch"]["string_value"] = ["4"]
        spec["parameters"]["concurrency"] = [1]
    # Windows of 4 requests and a stability bound none misses: this checks the plumbing, not figures.
    config["perf_analyzer_flags"].update({"measurement-request-count": 4, "stability-percentage": 1000})
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump(config))
    reports = tmp_path / "reports"
    code = analyze.main(
        ["--config", str(small), "--repository", str(built_repository), "--reports", str(reports)]
    )
    assert code == 0
    with open(reports / "results" / "metrics-model-inference.csv") as table:
        rows = {row["Model Config Path"]: row for row in csv.DictReader(table)}
    assert set(rows) == {"ssd300_config_default", "ssd300_config_0"}
    assert all(float(row["Throughput (infer/sec)"]) > 0 for row in rows.values())
    summary = reports / "reports" / "summaries" / "ssd300"
    assert any(summary.glob("result_summary.*")), sorted(reports.rglob("*"))
