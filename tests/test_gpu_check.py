"""`make gpu-check` without a GPU: run as a lent GPU machine runs it (torch, torchvision, numpy and Pillow,
no tritonclient, pytriton, protobuf or onnx), and its parts on inputs with known answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from load_tests.benchmark import cuda_diagnosis, gpu_check, gpu_models
from ssd300_build.detector import SSD300Detector
from ssd300_serving.served_code import load_selection
from tools.stock_torch import PACKAGE_PATH

REPO_ROOT = gpu_models.REPO_ROOT
# Everything the venv has beyond torch, torchvision, numpy and Pillow that this code could reach.
BLOCKED = ("tritonclient", "pytriton", "tritonserver", "google", "grpc", "onnx", "onnxruntime", "onnxscript")
# None in sys.modules: `import` raises ModuleNotFoundError and importlib.util.find_spec() answers
# None, as for a module that is not installed (torch probes for some at import). Of the project's
# package folders, which the venv's editable install puts on sys.path, only PACKAGE_PATH's stay,
# as on a lent machine.
BLOCKER = (
    "import runpy, sys\n"
    f"sys.modules.update(dict.fromkeys({BLOCKED!r}))\n"
    f"kept, folders = {PACKAGE_PATH.split(os.pathsep)!r}, ('common', 'client', 'build', 'serving')\n"
    "sys.path[:] = [p for p in sys.path if p in kept or not p.endswith(folders)]\n"
)


def run_blocked(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": PACKAGE_PATH}
    command = [sys.executable, "-c", BLOCKER + code, *args]
    return subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """``python -m load_tests.benchmark.gpu_check --device cpu`` with the venv's extras blocked,
    against a repository without model.pt (so it traces its own), at the smallest settings."""
    repository, out = tmp_path_factory.mktemp("empty_repository"), tmp_path_factory.mktemp("gpu_check")
    settings = ["--batch-sizes", "1"]
    process = run_blocked(
        "runpy.run_module('load_tests.benchmark.gpu_check', run_name='__main__')",
        *["--device", "cpu", "--repository", str(repository), "--out", str(out), *settings],
        *["--precisions", "fp32", "--repeats", "1", "--warmup", "0"],
    )
    assert process.returncode == 0, process.stderr[-3000:]
    results = json.loads((out / "gpu_check.json").read_text())
    return {**results, "outputs.npz": dict(np.load(out / "outputs.npz"))}, (out / "gpu_check.md").read_text()


@pytest.mark.model  # traces a network (a few tens of seconds of CPU)
def test_gpu_check_runs_with_only_torch_torchvision_numpy_and_pillow(dry_run):
    results, _ = dry_run
    assert results["model"] == "traced here from random weights (no model.pt built)"
    assert results["torch"] == torch.__version__
    # what make stock-torch compares across torch releases: the network's outputs, both selections
    arrays = results["outputs.npz"]
    assert arrays["boxes"].shape == (4, 80, 200, 4) and arrays["scores"].shape == (4, 80, 200)
    for name in ("select_detections", "select_detections_gpu"):
        assert arrays[f"{name}_3"].sum() > 0 and (arrays[f"{name}_0"] == arrays["select_detections_0"]).all()
    # the blocker works: neither the client package nor tritonclient imports
    for module in ("ssd300_client", "tritonclient.grpc"):
        refused = run_blocked(f"import {module}")
        assert refused.returncode != 0
        assert f"ModuleNotFoundError: No module named '{module}'" in refused.stderr


def test_the_gpu_script_puts_the_same_folders_on_pythonpath_as_stock_torch():
    script = (REPO_ROOT / "tools" / "gpu_run.sh").read_text()
    (line,) = [line for line in script.splitlines() if line.startswith("export PYTHONPATH=")]
    value = line.split('"')[1].split("${")[0]  # "$PWD/common:...:$PWD", then the caller's own
    folders = [Path(part.replace("$PWD", str(REPO_ROOT))) for part in value.split(":")]
    assert folders == [Path(path) for path in PACKAGE_PATH.split(os.pathsep)]


@pytest.mark.model
def test_gpu_check_on_a_cpu_reports_the_parity_rows_as_not_run(dry_run):
    results, table = dry_run
    assert [row["verdict"] for row in results["parity"]] == ["not run"] * 3
    assert all(row["detail"].startswith("--device cpu") for row in results["parity"])
    check = "served selection on CUDA (select_detections_gpu) vs select_detections on CPU"
    assert f"| parity | {check} | 4 | not run (--device cpu" in table


@pytest.mark.model
def test_gpu_check_forward_rows_name_the_graph_they_time(dry_run):
    results, _ = dry_run
    modules = [row["setting"] for row in results["forward"]]
    assert modules == [
        "model.pt (as served; TF32 allowed in 65/65 convolutions)",
        "FP32 trace, TF32 disallowed (0/65 convolutions allow it)",
    ]
    assert all(row["value"] > 0 and row["batch"] == 1 for row in results["forward"])
    assert [row["setting"] for row in results["postprocess"]] == [
        "select_detections",
        "select_detections_gpu",
    ]


def test_model_pt_as_the_build_writes_it_allows_tf32_in_every_convolution(built_repository):
    """What gpu-check's model.pt row assumes, and what gpu_models.trace(allow_tf32=True) gives."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        served = torch.jit.load(str(built_repository / "ssd300" / "1" / "model.pt"))
    allowed, total = gpu_models.tf32_convolutions(served)
    assert allowed == total == 65  # ResNet-50 to layer3 (43), extra layers (10), heads (12)


def test_tf32_round_keeps_ten_mantissa_bits():
    ulp = 2.0**-10  # TF32's spacing just above 1.0
    values = torch.tensor([1.0 + ulp / 4, 1.0 + 3 * ulp / 4, -(1.0 + 3 * ulp / 4), 1.0 + ulp, 3.0, 0.0])
    expected = torch.tensor([1.0, 1.0 + ulp, -(1.0 + ulp), 1.0 + ulp, 3.0, 0.0])
    torch.testing.assert_close(gpu_models.tf32_round(values), expected, rtol=0, atol=0)


def test_tf32_emulation_moves_a_convolutions_output_by_tf32s_rounding():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 8, 3).eval()
    x = torch.randn(1, 16, 12, 12)
    with torch.no_grad():
        exact, emulated = conv(x), gpu_models.emulated(conv, "tf32")(x)
    relative = float(((emulated - exact).abs() / exact.abs().clamp(min=1.0)).max())
    # 144 products, each operand off by at most 2^-11 relative: far below 1e-2, far above FP32's 1e-7
    assert 1e-5 < relative < 1e-2
    assert torch.equal(conv(x).detach(), exact)  # the original convolution is left as it was


def test_tf32_rounding_alone_stays_within_the_bound_model_pt_is_held_to(random_network):
    """What gpu-check's model.pt row allows, checked against the CPU's TF32 emulation in place of
    a GPU: rounding alone must not make it report a difference (NMS decisions that flip)."""
    network = random_network[0]
    images = gpu_models.photos()
    floor = gpu_models.rounding_floor(network, "tf32", images)
    selection = load_selection()
    settings = gpu_models.served_settings(selection)
    with torch.inference_mode():
        exact = selection.select_detections(*SSD300Detector(network)(images), **settings)
        rounded = selection.select_detections(
            *SSD300Detector(gpu_models.emulated(network, "tf32"))(images), **settings
        )
    parity = gpu_check.detection_parity(exact, rounded, gpu_check.ROUNDING_MARGIN * max(floor.values()))
    assert parity["unmatched"] == 0 and parity["compared"] > 50, parity
    # and the rounding is real: the same outputs held to FP32's tolerance differ
    assert gpu_check.detection_parity(exact, rounded, gpu_check.STRICT_TOLERANCE)["unmatched"] > 0


def detections(rows: list[tuple[int, float, list[float]]]):
    """One image's selection outputs from (label, score, box) rows, padded to 4."""
    boxes, scores, labels = torch.zeros(1, 4, 4), torch.zeros(1, 4), torch.zeros(1, 4, dtype=torch.int32)
    for i, (label, score, box) in enumerate(rows):
        boxes[0, i], scores[0, i], labels[0, i] = torch.tensor(box), score, label
    return boxes, scores, labels, torch.tensor([[len(rows)]], dtype=torch.int32)


def test_detection_parity_flags_a_box_moved_beyond_the_tolerance():
    rows = [(1, 0.9, [0.1, 0.1, 0.4, 0.4]), (3, 0.7, [0.5, 0.5, 0.9, 0.8]), (2, 0.2, [0.0, 0.0, 1.0, 1.0])]
    near = [(1, 0.9005, [0.1, 0.1, 0.4, 0.4005]), *rows[1:]]
    far = [(1, 0.9, [0.1, 0.1, 0.4, 0.403]), *rows[1:]]
    same = gpu_check.detection_parity(detections(rows), detections(near), tolerance=1e-3)
    assert same["verdict"] == "equal" and same["unmatched"] == 0
    # the cut is the lowest score (0.2) + the tolerance: both rows above it are compared, each way
    assert same["compared"] == 2 and same["detail"] == "2 of 3 compared, 0 unmatched; tolerance 1.0e-03"
    moved = gpu_check.detection_parity(detections(rows), detections(far), tolerance=1e-3)
    assert moved["verdict"] == "DIFFER" and moved["unmatched"] == 2  # missing on each side
    relabelled = gpu_check.detection_parity(
        detections(rows), detections([(2, *rows[0][1:]), *rows[1:]]), 1e-3
    )
    assert relabelled["unmatched"] == 2


def test_the_cuda_diagnosis_names_the_torch_to_install_for_an_older_driver():
    message = cuda_diagnosis.diagnosis("2.14.1+cu130", "13.0", 12080)
    assert message == (
        "the NVIDIA driver supports CUDA 12.8, but torch 2.14.1+cu130 is built for CUDA 13.0, which needs "
        "a driver for CUDA 13 (R580 or newer): install a torch built for CUDA 12 (e.g. `pip install torch "
        "--index-url https://download.pytorch.org/whl/cu126`), or update the driver"
    )
    # a driver new enough, a CPU-only torch, no driver at all: each told apart
    assert cuda_diagnosis.diagnosis("2.11.0+cu130", "13.0", 13000).startswith(
        "the driver supports CUDA 13.0, yet torch 2.11.0+cu130 sees no GPU (is CUDA_VISIBLE_DEVICES empty?"
    )
    assert "supports CUDA 12.4, but torch 2.5.1" in cuda_diagnosis.diagnosis("2.5.1", "13.0", 12040)
    assert cuda_diagnosis.diagnosis("2.14.1+cu126", "12.6", 12040).startswith("the driver supports")
    assert "CPU-only build" in cuda_diagnosis.diagnosis("2.14.1+cpu", None, None)
    assert cuda_diagnosis.diagnosis("2.14.1+cu130", "13.0", None).startswith("no NVIDIA driver here")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_gpu_check_on_cuda_without_a_gpu_says_why_and_exits_2(capsys):
    assert gpu_check.main(["--device", "cuda"]) == 2
    assert capsys.readouterr().err == (
        f"error: no usable CUDA device: {cuda_diagnosis.why_no_cuda()}. (--device cpu dry-runs)\n"
    )
