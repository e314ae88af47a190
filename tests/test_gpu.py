"""The served network and selection on CUDA against the CPU (marker ``gpu``; skipped, with the
reason, where torch sees no GPU). torchvision's ``cpu_and_cuda()`` pattern: a test that means
something on both runs on both.

Needs neither a server nor tritonclient: on a lent GPU machine ``tools/gpu_run.sh`` runs
``pytest --noconftest -m gpu tests/test_gpu.py`` with that machine's torch. Inputs of the
selection come from the network's own outputs (``select(*detector(images), **settings)``), so
these tests follow the served graph's output shapes.
"""

from __future__ import annotations

import pytest
import torch

from load_tests.benchmark import gpu_models
from load_tests.benchmark.cuda_diagnosis import why_no_cuda
from load_tests.benchmark.gpu_check import ROUNDING_MARGIN, STRICT_TOLERANCE, detection_parity, on_device
from ssd300_build.detector import SSD300Detector
from ssd300_serving.served_code import load_selection

pytestmark = pytest.mark.model
CUDA = pytest.param(
    "cuda",
    marks=[
        pytest.mark.gpu,
        pytest.mark.skipif(not torch.cuda.is_available(), reason=f"no CUDA: {why_no_cuda()}"),
    ],
    id="cuda",
)


def cpu_and_cuda():
    return ("cpu", CUDA)


@pytest.fixture(scope="module")
def network(request):
    """The session's seeded network (tests/conftest.py), or under ``--noconftest`` (a GPU machine
    without this project's venv) the build's random weights."""
    try:
        return request.getfixturevalue("random_network")[0]
    except pytest.FixtureLookupError:
        return gpu_models.random_network()[0]


@pytest.fixture(scope="module")
def photos():
    return gpu_models.photos()


@pytest.fixture(scope="module")
def selection():
    module = load_selection()
    return module, gpu_models.served_settings(module)


@pytest.fixture(scope="module")
def cpu_detections(network, photos, selection):
    """FP32 on the CPU: the network's outputs and the CPU instance's selection of them."""
    module, settings = selection
    with torch.inference_mode():
        outputs = SSD300Detector(network).eval()(photos)
        return outputs, module.select_detections(*outputs, **settings)


def on_device_vs_cpu(device, module, photos, selection, cpu_detections, tolerance):
    selection_module, settings = selection
    with torch.inference_mode():
        outputs = on_device(module, torch.device(device))(photos.to(device))
        actual = selection_module.select_detections_gpu(*outputs, **settings)
    return detection_parity(cpu_detections[1], actual, tolerance)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_gpu_selection_on_the_device_equals_the_cpu_selection(device, selection, cpu_detections):
    module, settings = selection
    outputs, expected = cpu_detections
    with torch.inference_mode():
        actual = module.select_detections_gpu(*(t.to(device) for t in outputs), **settings)
    assert actual[0].device.type == device
    assert int(expected[3].sum()) > 0
    for name, got, want in zip(("boxes", "scores", "labels", "counts"), actual, expected):
        assert torch.equal(got.cpu(), want), name  # the same candidates, IoUs and order: exact


@pytest.mark.parametrize("device", [CUDA])
def test_model_pt_on_cuda_matches_the_cpu_within_what_tf32_justifies(
    device, network, photos, selection, cpu_detections
):
    served = gpu_models.trace(network, allow_tf32=True)
    allowed, total = gpu_models.tf32_convolutions(served)
    assert allowed == total > 0  # model.pt's convolutions run TF32 on the GPU
    floor = gpu_models.rounding_floor(network, "tf32", photos)
    assert 0 < max(floor.values()) < 0.5  # TF32 rounding moves outputs, a little
    parity = on_device_vs_cpu(
        device, served, photos, selection, cpu_detections, ROUNDING_MARGIN * max(floor.values())
    )
    assert parity["compared"] > 0 and parity["unmatched"] == 0, parity


@pytest.mark.parametrize("device", [CUDA])
def test_fp32_trace_without_tf32_on_cuda_matches_the_cpu_strictly(
    device, network, photos, selection, cpu_detections
):
    strict = gpu_models.trace(network, allow_tf32=False)
    assert gpu_models.tf32_convolutions(strict)[0] == 0
    parity = on_device_vs_cpu(device, strict, photos, selection, cpu_detections, STRICT_TOLERANCE)
    assert parity["compared"] > 0 and parity["unmatched"] == 0, parity


@pytest.mark.parametrize("device", [CUDA])
def test_fp16_network_on_cuda_stays_within_a_multiple_of_the_input_rounding_floor(
    device, network, photos, selection, cpu_detections
):
    """tests/test_fp16.py holds the FP16 network to 4x what rounding its input alone changes,
    on the CPU; the same bound on the GPU, where FP16 is meant to run."""
    half = gpu_models.trace(network, "fp16", allow_tf32=True)
    assert all(p.dtype == torch.float16 for p in half.parameters() if p.dim() == 4)
    floor = gpu_models.rounding_floor(network, "fp16", photos)
    parity = on_device_vs_cpu(
        device, half, photos, selection, cpu_detections, ROUNDING_MARGIN * max(floor.values())
    )
    assert parity["compared"] > 0 and parity["unmatched"] == 0, parity
