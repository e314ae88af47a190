"""The model repository's configs, checked statically.

The production (GPU, libtorch) configs cannot be loaded on this machine, so every .pbtxt is
parsed into Triton's ModelConfig protobuf (a typo or unknown field fails the parse) and the
facts the ensembles depend on are cross-checked.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from ssd300_common import contract

REPOSITORY = Path(__file__).resolve().parents[1] / "model_repository"
ENSEMBLES = contract.PUBLIC_MODELS
COMPOSING = ("ssd300", "ssd300_postprocess", "ssd300_image_preprocess", "ssd300_image_postprocess")


def load(model: str, variant: str | None = None) -> mc.ModelConfig:
    path = REPOSITORY / model / ("config.pbtxt" if variant is None else f"configs/{variant}.pbtxt")
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def signature(config: mc.ModelConfig) -> dict:
    tensors = {}
    for kind, items in (("input", config.input), ("output", config.output)):
        for tensor in items:
            tensors[(kind, tensor.name)] = (tensor.data_type, tuple(tensor.dims))
    return tensors


def test_every_model_has_a_parseable_production_config_named_after_its_folder():
    folders = sorted(p.name for p in REPOSITORY.iterdir() if p.is_dir())
    assert folders == sorted(ENSEMBLES + COMPOSING)
    for model in folders:
        assert load(model).name == model


@pytest.mark.parametrize("model", COMPOSING)
def test_every_composing_model_has_a_cpu_variant_with_the_same_tensors(model):
    production, cpu = load(model), load(model, "cpu")
    assert cpu.name == model
    assert signature(cpu) == signature(production)
    assert cpu.max_batch_size == production.max_batch_size
    assert all(group.kind == mc.ModelInstanceGroup.KIND_CPU for group in cpu.instance_group)
    assert cpu.HasField("dynamic_batching")


def test_production_network_is_libtorch_on_gpus_with_dynamic_batching():
    config = load("ssd300")
    assert config.platform == "pytorch_libtorch"
    assert config.max_batch_size == 64
    assert [group.kind for group in config.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    assert 0 < config.dynamic_batching.max_queue_delay_microseconds <= 10_000
    # libtorch maps outputs by position: names must follow <name>__<index>.
    assert [output.name for output in config.output] == ["boxes__0", "scores__1"]


def test_production_onnx_network_runs_tensorrt_fp16_on_gpus_like_the_torchscript_config():
    """configs/onnx.pbtxt (`--model-config-name onnx`) swaps the engine and nothing else."""
    onnx, torchscript = load("ssd300", "onnx"), load("ssd300")
    assert onnx.name == "ssd300" and onnx.platform == "onnxruntime_onnx"
    assert signature(onnx) == signature(torchscript)
    assert onnx.max_batch_size == torchscript.max_batch_size
    assert [group.kind for group in onnx.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    assert onnx.dynamic_batching == torchscript.dynamic_batching
    (accelerator,) = onnx.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    assert accelerator.parameters["precision_mode"] == "FP16"
    assert int(accelerator.parameters["max_workspace_size_bytes"]) >= 1 << 30
    assert accelerator.parameters["trt_engine_cache_enable"] == "1"
    assert accelerator.parameters["trt_engine_cache_path"].startswith("/")
    # the TensorRT profile covers every batch the dynamic batcher can form
    for bound, batch in (("min", 1), ("max", onnx.max_batch_size)):
        assert accelerator.parameters[f"trt_profile_{bound}_shapes"] == f"images:{batch}x300x300x3"
    (warmup,) = onnx.model_warmup
    assert warmup.batch_size == onnx.max_batch_size and set(warmup.inputs) == {"images"}


# The parameter keys the ONNX Runtime backend of Triton 24.10 parses for the "tensorrt" GPU
# execution accelerator: src/onnxruntime.cc of triton-inference-server/onnxruntime_backend, branch
# r24.10 (commit 17e5cb23a6fbeb37282eb7079dd0b580cd79530d), ModelState::LoadModel's `param_key ==`
# chain; any other key fails the model load ("unknown parameter ... for TensorRT Execution
# Accelerator"), which only a GPU server would show.
TENSORRT_ACCELERATOR_PARAMETERS = frozenset(
    {
        "precision_mode",
        "max_workspace_size_bytes",
        "trt_max_partition_iterations",
        "trt_min_subgraph_size",
        "int8_calibration_table_name",
        "int8_use_native_calibration_table",
        "trt_dla_enable",
        "trt_dla_core",
        "trt_engine_cache_enable",
        "trt_engine_cache_path",
        "trt_engine_cache_prefix",
        "trt_dump_subgraphs",
        "trt_force_sequential_engine_build",
        "trt_context_memory_sharing_enable",
        "trt_layer_norm_fp32_fallback",
        "trt_timing_cache_enable",
        "trt_timing_cache_path",
        "trt_force_timing_cache",
        "trt_detailed_build_log",
        "trt_build_heuristics_enable",
        "trt_sparsity_enable",
        "trt_builder_optimization_level",
        "trt_auxiliary_streams",
        "trt_tactic_sources",
        "trt_extra_plugin_lib_paths",
        "trt_profile_min_shapes",
        "trt_profile_max_shapes",
        "trt_profile_opt_shapes",
        "trt_cuda_graph_enable",
        "trt_dump_ep_context_model",
        "trt_ep_context_file_path",
        "trt_ep_context_embed_mode",
    }
)
# The same file's precision_mode values (anything else: "unsupported precision mode").
TENSORRT_PRECISION_MODES = ("FP32", "FP16", "INT8")


def test_onnx_config_gives_tensorrt_only_parameters_the_24_10_backend_accepts():
    # parameters is a free string map in ModelConfig: a misspelt key parses, then fails the load.
    (accelerator,) = load("ssd300", "onnx").optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    assert set(accelerator.parameters) <= TENSORRT_ACCELERATOR_PARAMETERS, sorted(
        set(accelerator.parameters) - TENSORRT_ACCELERATOR_PARAMETERS
    )
    assert accelerator.parameters["precision_mode"] in TENSORRT_PRECISION_MODES
    # The backend parses the switches with ParseBoolValue; this repository writes them as 0 or 1.
    for key, value in accelerator.parameters.items():
        if key.endswith("_enable"):
            assert value in ("0", "1"), (key, value)


def test_onnx_config_names_the_tensors_the_onnx_export_writes():
    from ssd300_build.onnx_export import INPUT_NAME, OUTPUT_NAMES

    config = load("ssd300", "onnx")
    assert [t.name for t in config.input] == [INPUT_NAME]
    assert tuple(t.name for t in config.output) == OUTPUT_NAMES


def test_production_postprocess_runs_on_gpus_and_keeps_tensors_there():
    config = load("ssd300_postprocess")
    assert [group.kind for group in config.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    assert config.parameters["FORCE_CPU_ONLY_INPUT_TENSORS"].string_value == "no"


@pytest.mark.parametrize("variant", [None, "cpu"])
def test_postprocess_thresholds_are_the_reference_defaults(variant):
    parameters = load("ssd300_postprocess", variant).parameters
    assert float(parameters["score_threshold"].string_value) == 0.05
    assert int(parameters["candidates_per_class"].string_value) == 200
    assert float(parameters["nms_iou_threshold"].string_value) == 0.45
    assert int(parameters["max_detections"].string_value) == 200


def test_detector_ensemble_has_the_public_contract():
    config = load("ssd300_detector")
    assert config.platform == "ensemble" and config.max_batch_size == 64
    assert signature(config) == {
        ("input", "images"): (mc.TYPE_UINT8, (300, 300, 3)),
        ("output", "detection_boxes"): (mc.TYPE_FP32, (200, 4)),
        ("output", "detection_scores"): (mc.TYPE_FP32, (200,)),
        ("output", "detection_classes"): (mc.TYPE_INT32, (200,)),
        ("output", "num_detections"): (mc.TYPE_INT32, (1,)),
    }


def test_image_ensemble_takes_bytes_and_adds_the_image_size():
    tensors = signature(load("ssd300_image"))
    assert tensors[("input", "encoded_image")] == (mc.TYPE_STRING, (1,))
    assert tensors[("output", "image_size")] == (mc.TYPE_INT32, (2,))
    detector_outputs = {k: v for k, v in signature(load("ssd300_detector")).items() if k[0] == "output"}
    assert detector_outputs.items() <= tensors.items()


@pytest.mark.parametrize("ensemble", ENSEMBLES)
@pytest.mark.parametrize("variant", [None, "cpu"])
def test_ensemble_steps_wire_tensors_of_matching_type_and_shape(ensemble, variant):
    """Every tensor an ensemble step reads is produced, with the same dtype and dims, by the
    ensemble input or an earlier step; every ensemble output is produced by some step."""
    config = load(ensemble)
    available = {t.name: (t.data_type, tuple(t.dims)) for t in config.input}
    for step in config.ensemble_scheduling.step:
        model = load(
            step.model_name, variant if (REPOSITORY / step.model_name / "configs").is_dir() else None
        )
        assert model.max_batch_size >= config.max_batch_size
        inputs = {t.name: (t.data_type, tuple(t.dims)) for t in model.input}
        outputs = {t.name: (t.data_type, tuple(t.dims)) for t in model.output}
        assert set(step.input_map) == set(inputs), f"{step.model_name}: inputs not all wired"
        for model_input, ensemble_tensor in step.input_map.items():
            assert available[ensemble_tensor] == inputs[model_input], f"{step.model_name}.{model_input}"
        for model_output, ensemble_tensor in step.output_map.items():
            available[ensemble_tensor] = outputs[model_output]
    for output in config.output:
        assert available[output.name] == (output.data_type, tuple(output.dims)), output.name


def shared_core_imports() -> dict[str, set[str]]:
    """``{model: modules}`` of ssd300_common the Python-backend models import, each name checked
    to exist there."""
    import ast
    import importlib

    imported: dict[str, set[str]] = {}
    for path in sorted(REPOSITORY.glob("*/1/*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ssd300_common"):
                module = importlib.import_module(node.module)
                missing = [alias.name for alias in node.names if not hasattr(module, alias.name)]
                assert not missing, f"{path}: {node.module} has no {missing}"
                imported.setdefault(path.parents[1].name, set()).add(node.module)
    return imported


def test_the_python_models_import_the_shared_core_and_hold_no_copy_of_it():
    """One source: the decode model decodes with the client's ssd300_common.imaging and the CPU
    runner loads the engine files contract.py names, both from the models' Python environment.
    No model folder keeps a copy of one of the core's modules: a second source would drift."""
    import ssd300_common

    assert shared_core_imports() == {
        "ssd300": {"ssd300_common.contract"},
        "ssd300_image_preprocess": {"ssd300_common.imaging"},
    }
    shared = {path.name for path in Path(ssd300_common.__file__).parent.glob("*.py")} - {"__init__.py"}
    copies = [path for path in REPOSITORY.glob("*/1/*.py") if path.name in shared]
    assert copies == [], (
        f"copies of ssd300_common's modules (left by an earlier build? delete them): {copies}"
    )


@pytest.mark.parametrize("variant", [None, "cpu", "onnx"])
def test_stamped_network_config_still_parses_and_names_its_weights(variant):
    from ssd300_serving.provenance import stamp_weights

    path = REPOSITORY / "ssd300" / ("config.pbtxt" if variant is None else f"configs/{variant}.pbtxt")
    metadata = {"weights": "nvidia", "sha256": "ab" * 32, "precision": "fp16", "engine": "onnx"}
    parameters = text_format.Parse(stamp_weights(path.read_text(), metadata), mc.ModelConfig()).parameters
    assert parameters["weights"].string_value == "nvidia"
    assert parameters["weights_sha256"].string_value == "ab" * 32
    assert parameters["precision"].string_value == "fp16"
    assert parameters["engine"].string_value == "onnx"


def test_production_stamp_leaves_the_engine_to_the_config_and_the_onnx_precision_to_tensorrt(tmp_path):

    from ssd300_build.export import stamp_config

    shutil.copytree(REPOSITORY / "ssd300", tmp_path / "ssd300", ignore=shutil.ignore_patterns("1"))
    metadata = {"weights": "nvidia", "sha256": "ab" * 32, "precision": "fp32", "engine": "onnx"}
    assert len(stamp_config(tmp_path, metadata)) == 2
    parse = lambda path: text_format.Parse(path.read_text(), mc.ModelConfig()).parameters  # noqa: E731
    torchscript = parse(tmp_path / "ssd300" / "config.pbtxt")
    onnx = parse(tmp_path / "ssd300" / "configs" / "onnx.pbtxt")
    assert torchscript["precision"].string_value == "fp32" and "engine" not in torchscript
    assert onnx["weights"].string_value == "nvidia" and "precision" not in onnx and "engine" not in onnx


@pytest.mark.parametrize("variant", [None, "cpu", "onnx"])
def test_network_queue_is_bounded_and_refuses_explicitly(variant):
    policy = load("ssd300", variant).dynamic_batching.default_queue_policy
    assert policy.max_queue_size > 0
    assert policy.timeout_action == mc.ModelQueuePolicy.REJECT
    assert policy.default_timeout_microseconds > 0


# --- production completeness (issue 12) -------------------------------------------------------

ALL_CONFIGS = [(model, None) for model in ENSEMBLES + COMPOSING] + [(model, "cpu") for model in COMPOSING]


@pytest.mark.parametrize("model, variant", ALL_CONFIGS)
def test_every_dynamically_batched_model_has_a_bounded_queue_that_refuses(model, variant):
    config = load(model, variant)
    if not config.HasField("dynamic_batching"):
        return
    policy = config.dynamic_batching.default_queue_policy
    assert 0 < policy.max_queue_size <= 512, f"{model}: unbounded queue"
    assert policy.timeout_action == mc.ModelQueuePolicy.REJECT
    assert policy.default_timeout_microseconds > 0


def test_every_production_python_model_runs_in_the_packed_environment():
    from ssd300_build.python_env import ARCHIVE_NAME

    python_models = [model for model in COMPOSING if load(model).backend == "python"]
    assert python_models == ["ssd300_postprocess", "ssd300_image_preprocess", "ssd300_image_postprocess"]
    for model in python_models:
        path = load(model).parameters["EXECUTION_ENV_PATH"].string_value
        # One archive beside the models, wherever the repository is mounted.
        assert path == f"$$TRITON_MODEL_DIRECTORY/../{ARCHIVE_NAME}", model
        # The embedded server's CPU variants run in the venv that started it.
        assert "EXECUTION_ENV_PATH" not in load(model, "cpu").parameters


def test_production_network_warms_up_every_batch_size_range_the_batcher_forms():
    from itertools import pairwise

    config = load("ssd300")
    sizes = [warmup.batch_size for warmup in config.model_warmup]
    assert sizes == sorted(set(sizes))
    # Smallest and largest batch, and no gap wider than a doubling in between.
    assert sizes[0] == 1 and sizes[-1] == config.max_batch_size
    assert all(larger <= 2 * smaller for smaller, larger in pairwise(sizes))
    inputs = {tensor.name: (tensor.data_type, tuple(tensor.dims)) for tensor in config.input}
    for warmup in config.model_warmup:
        assert warmup.count >= 2  # the profiling executor optimises on the second call
        assert {name: (t.data_type, tuple(t.dims)) for name, t in warmup.inputs.items()} == inputs


def test_production_postprocess_warms_up_its_gpu_before_it_is_ready():
    config = load("ssd300_postprocess")
    inputs = {tensor.name: (tensor.data_type, tuple(tensor.dims)) for tensor in config.input}
    assert {warmup.batch_size for warmup in config.model_warmup} == {1, config.max_batch_size}
    for warmup in config.model_warmup:
        assert {name: (t.data_type, tuple(t.dims)) for name, t in warmup.inputs.items()} == inputs
        assert all(t.zero_data for t in warmup.inputs.values())  # nothing to select: no NaN, no chains


def test_ssd300_hands_over_the_candidates_the_postprocess_may_be_asked_for():
    """ssd300's graph ranks each class's CANDIDATES best; candidates_per_class (request
    parameter, checked against the inputs' dims) can only lower that, and the default takes all."""
    from ssd300_build.detector import CANDIDATES
    from ssd300_build.reference import CANDIDATES_PER_CLASS

    boxes, scores = load("ssd300").output
    classes = 80  # COCO
    assert tuple(boxes.dims) == (classes, CANDIDATES, 4) and tuple(scores.dims) == (classes, CANDIDATES)
    assert CANDIDATES == CANDIDATES_PER_CLASS == contract.POSTPROCESS_DEFAULTS[contract.CANDIDATES_PARAMETER]
    for variant in (None, "cpu"):
        assert (
            int(load("ssd300_postprocess", variant).parameters["candidates_per_class"].string_value)
            == CANDIDATES
        )


def test_queue_sizing_comments_quote_the_precision_model_pt_is_served_in():
    from ssd300_build.export import CUDNN_FLAGS

    # model.pt is traced in FP32 with TF32 convolutions allowed: NVIDIA's TF32 figures apply.
    assert CUDNN_FLAGS["allow_tf32"]
    for model in ("ssd300", "ssd300_postprocess"):
        lines = (REPOSITORY / model / "config.pbtxt").read_text().splitlines()
        comments = " ".join(line for line in lines if line.strip().startswith("#"))
        assert "TF32" in comments, model
        assert "AMP" not in comments and "mixed precision" not in comments, model
