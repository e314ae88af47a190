"""The contract module's tensor, model and file names agree with the model repository's configs."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from ssd300_common import contract
from ssd300_common.imaging import MODEL_INPUT_SIZE
from ssd300_serving import health
from ssd300_serving.served_code import load_selection

REPOSITORY = Path(__file__).resolve().parents[1] / "model_repository"


def load_config(model: str) -> mc.ModelConfig:
    return text_format.Parse((REPOSITORY / model / "config.pbtxt").read_text(), mc.ModelConfig())


def tensors(items) -> dict[str, tuple[int, tuple[int, ...]]]:
    return {tensor.name: (tensor.data_type, tuple(tensor.dims)) for tensor in items}


DETECTION_OUTPUTS = {
    contract.BOXES_OUTPUT: (mc.TYPE_FP32, (contract.MAX_DETECTIONS, 4)),
    contract.SCORES_OUTPUT: (mc.TYPE_FP32, (contract.MAX_DETECTIONS,)),
    contract.CLASSES_OUTPUT: (mc.TYPE_INT32, (contract.MAX_DETECTIONS,)),
    contract.COUNT_OUTPUT: (mc.TYPE_INT32, (1,)),
}


@pytest.mark.parametrize(
    "model",
    [contract.DETECTOR_MODEL, contract.IMAGE_MODEL, contract.NETWORK_MODEL, contract.POSTPROCESS_MODEL],
)
def test_every_model_the_client_names_exists(model):
    assert load_config(model).name == model


@pytest.mark.parametrize("model", [contract.DETECTOR_MODEL, contract.IMAGE_MODEL])
def test_public_models_batch_up_to_the_clients_limit(model):
    assert load_config(model).max_batch_size == contract.MAX_BATCH_SIZE


def test_detector_model_takes_uint8_images_of_the_model_input_size():
    expected = {contract.IMAGES_INPUT: (mc.TYPE_UINT8, (MODEL_INPUT_SIZE, MODEL_INPUT_SIZE, 3))}
    assert tensors(load_config(contract.DETECTOR_MODEL).input) == expected
    assert contract.IMAGES_DATATYPE == "UINT8"


def test_detector_model_outputs_the_four_detection_tensors():
    assert tensors(load_config(contract.DETECTOR_MODEL).output) == DETECTION_OUTPUTS
    assert set(contract.DETECTION_OUTPUTS) == set(DETECTION_OUTPUTS)


def test_image_model_takes_one_encoded_file_per_item():
    assert tensors(load_config(contract.IMAGE_MODEL).input) == {
        contract.ENCODED_IMAGE_INPUT: (mc.TYPE_STRING, (1,))
    }
    assert contract.ENCODED_IMAGE_DATATYPE == "BYTES"  # TYPE_STRING is BYTES on the wire


def test_image_model_outputs_the_detections_and_the_image_size():
    expected = dict(DETECTION_OUTPUTS, **{contract.IMAGE_SIZE_OUTPUT: (mc.TYPE_INT32, (2,))})
    assert tensors(load_config(contract.IMAGE_MODEL).output) == expected


@pytest.mark.parametrize("variant", ["config.pbtxt", "configs/cpu.pbtxt"])
def test_postprocess_defaults_are_the_parameters_of_both_configs(variant):
    config = text_format.Parse(
        (REPOSITORY / contract.POSTPROCESS_MODEL / variant).read_text(), mc.ModelConfig()
    )
    for name, default in contract.POSTPROCESS_DEFAULTS.items():
        assert type(default)(config.parameters[name].string_value) == default, name
    assert contract.POSTPROCESS_DEFAULTS[contract.MAX_DETECTIONS_PARAMETER] == contract.MAX_DETECTIONS
    assert (
        contract.POSTPROCESS_DEFAULTS[contract.SCORE_THRESHOLD_PARAMETER] == contract.SERVER_SCORE_THRESHOLD
    )


def test_the_postprocess_model_reads_exactly_the_contracts_parameters_with_their_types():
    """detection_selection.SETTINGS is the table the served model (and the benchmark) use."""
    selection = load_selection(REPOSITORY)
    assert set(selection.SETTINGS) == set(contract.POSTPROCESS_DEFAULTS)
    for name, (_, cast) in selection.SETTINGS.items():
        assert cast is type(contract.POSTPROCESS_DEFAULTS[name]), name


def test_the_health_probes_standard_library_copy_of_the_names_is_the_contracts():
    assert health.CANARY_MODEL == contract.IMAGE_MODEL
    assert health.CANARY_INPUT == contract.ENCODED_IMAGE_INPUT
    assert health.CANARY_DATATYPE == contract.ENCODED_IMAGE_DATATYPE
    assert health.CANARY_OUTPUT in contract.DETECTION_OUTPUTS


def test_public_models_and_image_outputs_are_the_ensembles_and_their_outputs():
    ensembles = {
        path.parent.name
        for path in REPOSITORY.glob("*/config.pbtxt")
        if load_config(path.parent.name).platform == "ensemble"
    }
    assert set(contract.PUBLIC_MODELS) == ensembles
    assert [output.name for output in load_config(contract.IMAGE_MODEL).output] == list(
        contract.IMAGE_OUTPUTS
    )


def test_the_weights_parameter_is_the_one_the_server_stamps_into_the_network_config():
    from ssd300_serving.provenance import stamp_weights

    stamped = stamp_weights(f'name: "{contract.NETWORK_MODEL}"', {"weights": contract.RANDOM_WEIGHTS})
    config = text_format.Parse(stamped, mc.ModelConfig())
    assert config.parameters[contract.WEIGHTS_PARAMETER].string_value == contract.RANDOM_WEIGHTS


# The file Triton's backend loads from a version folder when the config names none
# (default_model_filename unset): model.pt for libtorch, model.onnx for ONNX Runtime.
TRITON_DEFAULT_MODEL_FILES = {"pytorch_libtorch": "model.pt", "onnxruntime_onnx": "model.onnx"}


def test_the_engine_files_are_the_ones_the_production_configs_load():
    configs = {
        "torchscript": load_config(contract.NETWORK_MODEL),
        "onnx": text_format.Parse(
            (REPOSITORY / contract.NETWORK_MODEL / "configs" / "onnx.pbtxt").read_text(), mc.ModelConfig()
        ),
    }
    assert set(contract.ENGINE_FILES) == set(configs)
    for engine, config in configs.items():
        assert not config.default_model_filename, engine
        assert contract.ENGINE_FILES[engine] == TRITON_DEFAULT_MODEL_FILES[config.platform], engine
