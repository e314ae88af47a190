"""ENGINE=onnx: model.onnx is the same detector as model.pt, in process and through the server."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest
import torch
import tritonclient.grpc as grpcclient

from ssd300_build import __main__ as build_cli
from ssd300_build.default_boxes import dboxes300_coco
from ssd300_build.detector import SSD300Detector
from ssd300_build.export import write_model
from ssd300_build.onnx_export import ONNX_FILE, OPSET, OUTPUT_NAMES, read_onnx_metadata
from ssd300_build.reference import decode_batch
from ssd300_build.sources import load_network
from ssd300_common import contract
from ssd300_serving.embedded_server import EmbeddedServer
from ssd300_serving.provenance import read_provenance

from .helpers.engines import (
    BOX_TOLERANCE,
    SCORE_TOLERANCE,
    assert_rows_match,
    assert_same_detections,
    copy_repository,
    nvidia_format_checkpoint,
    rows_of,
    run_onnx,
    run_torchscript,
)
from .helpers.images import photo_batch


@pytest.fixture(scope="module")
def onnx_repository(tmp_path_factory, random_network):
    """The session's random network built with ENGINE=onnx (model.pt and model.onnx)."""
    repository = copy_repository(tmp_path_factory, "onnx")
    network, metadata = random_network
    write_model(network, repository, metadata, engine="onnx")
    return repository


def test_onnx_model_is_checked_dynamic_batch_uint8_in_with_the_served_tensor_names(onnx_repository):
    path = onnx_repository / contract.NETWORK_MODEL / "1" / ONNX_FILE
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path))
    assert {o.domain: o.version for o in model.opset_import}[""] == OPSET
    (images,) = model.graph.input
    dims = images.type.tensor_type.shape.dim
    assert (
        images.name == contract.IMAGES_INPUT and images.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    )
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [300, 300, 3]
    assert tuple(o.name for o in model.graph.output) == OUTPUT_NAMES
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in model.graph.output)


# Every op type model.onnx uses, each listed as supported in onnx-tensorrt's operator table for
# TensorRT 10.x (docs/operators.md of onnx/onnx-tensorrt), whose constraints the test below
# checks. A new op type fails the test until it has been looked up there and added.
TENSORRT_CHECKED_OPS = {
    "Cast", "Concat", "Conv", "Div", "Exp", "Expand", "GatherElements", "IsNaN", "MaxPool", "Mul",
    "Relu", "Reshape", "Slice", "Softmax", "Sub", "Add", "TopK", "Transpose", "Unsqueeze", "Where",
}  # fmt: skip
TENSORRT_TOPK_MAX_K = 3840


def test_onnx_graph_is_one_tensorrt_10_5_can_build(onnx_repository):
    """TensorRT takes a uint8 tensor only as a network input feeding a Cast; TensorRT 10.5's
    parser reads opsets 9 to 20; each op must be in its table, with the constraints noted there."""
    model = onnx.load(str(onnx_repository / contract.NETWORK_MODEL / "1" / ONNX_FILE))
    assert 9 <= OPSET <= 20
    graph = model.graph
    consumers = [node for node in graph.node if contract.IMAGES_INPUT in node.input]
    assert [node.op_type for node in consumers] == ["Cast"]
    assert {node.op_type for node in graph.node} <= TENSORRT_CHECKED_OPS
    constants = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            constants[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
    attributes = {
        node.name: {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute} for node in graph.node
    }
    for node in graph.node:
        if node.op_type == "TopK":
            assert attributes[node.name].get("sorted", 1) == 1
            assert (
                node.input[1] in constants
                and int(constants[node.input[1]].reshape(-1)[0]) < TENSORRT_TOPK_MAX_K
            )
        if node.op_type in ("Slice", "Unsqueeze"):
            axes = node.input[3] if node.op_type == "Slice" else node.input[1]
            assert axes in constants, f"{node.name}: axes must be a constant"
    # No other uint8 tensor anywhere: the Cast's output is float.
    (cast,) = consumers
    assert attributes[cast.name]["to"] == onnx.TensorProto.FLOAT


def test_onnx_model_carries_the_builds_metadata(onnx_repository):
    metadata = read_provenance(onnx_repository)
    assert metadata["engine"] == "onnx" and metadata["precision"] == "fp32"
    assert (
        json.loads(read_onnx_metadata(onnx_repository / contract.NETWORK_MODEL / "1" / ONNX_FILE)) == metadata
    )


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_outputs_have_the_torchscript_shapes_for_any_batch(onnx_repository, sample_paths, batch):
    images = photo_batch(sample_paths, batch)
    for reference, output in zip(run_torchscript(onnx_repository, images), run_onnx(onnx_repository, images)):
        assert output.shape == reference.shape and output.dtype == reference.dtype == torch.float32


def test_onnx_detections_equal_torchscript_with_calibrated_random_weights(onnx_repository, sample_paths):
    images = photo_batch(sample_paths, 4)
    compared = assert_same_detections(
        run_torchscript(onnx_repository, images),
        run_onnx(onnx_repository, images),
        box_tol=BOX_TOLERANCE,
        score_tol=SCORE_TOLERANCE,
    )
    assert compared >= 4 * 50  # most of each image's detections were compared


def test_onnx_detections_equal_torchscript_for_an_nvidia_format_checkpoint(
    tmp_path_factory, random_network, sample_paths
):
    """A DeepLearningExamples-style checkpoint file, built with ENGINE=onnx through load_network.
    Its weights are the calibrated random ones with sharper class logits, so it is another model."""
    state = {k: v.clone() for k, v in random_network[0].state_dict().items()}
    for key in state:
        if key.startswith("conf.") and key.endswith(".weight"):
            state[key] *= 1.5
    path = tmp_path_factory.mktemp("checkpoint") / "nvidia_ssd.pt"
    torch.save(nvidia_format_checkpoint(state), path)
    network, metadata = load_network(str(path))
    repository = copy_repository(tmp_path_factory, "onnx_checkpoint")
    write_model(network, repository, metadata, engine="onnx")
    assert read_provenance(repository)["weights"] == "file"
    images = photo_batch(sample_paths, 2)
    assert_same_detections(
        run_torchscript(repository, images),
        run_onnx(repository, images),
        box_tol=BOX_TOLERANCE,
        score_tol=SCORE_TOLERANCE,
    )


def test_torchscript_build_removes_an_onnx_model_of_earlier_weights(tmp_path_factory, onnx_repository):
    repository = copy_repository(tmp_path_factory, "rebuilt")
    version = repository / contract.NETWORK_MODEL / "1"
    shutil.copy(onnx_repository / contract.NETWORK_MODEL / "1" / ONNX_FILE, version / ONNX_FILE)
    torch.manual_seed(0)
    from ssd300_build.model import SSD300

    write_model(SSD300().eval(), repository, {"weights": "random"})
    assert not (version / ONNX_FILE).exists() and read_provenance(repository)["engine"] == "torchscript"


@pytest.mark.parametrize(
    "options, message",
    [
        (["--engine", "tensorrt"], "unknown engine 'tensorrt'"),
        (["--precision", "fp8"], "unknown precision 'fp8'"),
        (["--engine", "onnx", "--precision", "fp16"], "the ONNX model stays FP32"),
    ],
)
def test_build_refuses_unknown_engines_and_precisions_before_loading_anything(
    tmp_path, monkeypatch, capsys, options, message
):
    def load_network(*args, **kwargs):
        raise AssertionError("the build loaded weights before checking its options")

    monkeypatch.setattr(build_cli, "load_network", load_network)
    assert build_cli.main(["--weights", "random", "--repository", str(tmp_path), *options]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.fixture(scope="module")
def onnx_server(onnx_repository, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("onnx_server") / "tritonserver.log"
    server = EmbeddedServer.on_free_ports(
        onnx_repository,
        log_path=log_path,
    )
    with server:
        yield server


@pytest.mark.server  # starts its own tritonserver
def test_embedded_server_runs_the_onnx_engine_and_says_so(onnx_server):
    client = grpcclient.InferenceServerClient(onnx_server.grpc_url)
    try:
        parameters = client.get_model_config(contract.NETWORK_MODEL, as_json=True)["config"]["parameters"]
    finally:
        client.close()
    assert parameters["engine"]["string_value"] == "onnx"
    assert parameters["precision"]["string_value"] == "fp32"
    log = onnx_server.log_path.read_text(errors="replace")
    assert "with onnx" in log and "model.onnx" in log


@pytest.mark.server  # starts its own tritonserver
def test_onnx_engine_served_detections_equal_the_in_process_reference(
    onnx_server, random_network, sample_paths
):
    """The same check test_server.py makes for the TorchScript engine: served ensemble versus
    the eager network + NVIDIA's per-class decode, compared as sets."""
    images = photo_batch(sample_paths, 4)
    client = grpcclient.InferenceServerClient(onnx_server.grpc_url)
    try:
        tensor = grpcclient.InferInput(contract.IMAGES_INPUT, list(images.shape), contract.IMAGES_DATATYPE)
        tensor.set_data_from_numpy(images.numpy())
        result = client.infer(contract.DETECTOR_MODEL, [tensor])
    finally:
        client.close()
    network = random_network[0]
    with torch.no_grad():
        ploc, plabel = network(SSD300Detector(network).normalize(images))
    counts = result.as_numpy(contract.COUNT_OUTPUT)
    outputs = [
        result.as_numpy(name)
        for name in (contract.BOXES_OUTPUT, contract.SCORES_OUTPUT, contract.CLASSES_OUTPUT)
    ]
    for image, reference in enumerate(decode_batch(ploc, plabel, dboxes300_coco())):
        served = rows_of(*(torch.tensor(o[image]) for o in outputs), int(counts[image, 0]))
        expected = rows_of(reference.boxes, reference.scores, reference.labels, len(reference.scores))
        # Engines differ from eager by float rounding only (scores to a few 1e-5).
        assert (
            assert_rows_match(expected, served, box_tol=1e-4, score_tol=5e-5, where=f"image {image}: ") > 50
        )
        assert (outputs[2][image, int(counts[image, 0]) :] == 0).all()
