"""What ``make gpu-check`` and the ``gpu`` tests run, built from torch, torchvision, numpy and Pillow alone.

A lent GPU machine has its own Python and a CUDA torch but none of this project's venv
(no tritonclient, protobuf or onnx): so the served selection and the client's contract are
loaded from their files, not through their packages (``ssd300_client``'s ``__init__`` imports
tritonclient, ``ssd300_build.export`` imports onnx).
"""

from __future__ import annotations

import ast
import copy
import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from PIL import Image
from torch import nn

from ssd300_build.client_files import client_package_dir, sample_photo_paths
from ssd300_build.default_boxes import decode_boxes
from ssd300_build.detector import FIG_SIZE, SSD300Detector
from ssd300_build.sources import DEFAULT_SEED, load_network

REPO_ROOT = Path(__file__).resolve().parents[2]
SELECTION_FILE = REPO_ROOT / "model_repository" / "ssd300_postprocess" / "1" / "detection_selection.py"
EXPORT_FILE = REPO_ROOT / "build" / "ssd300_build" / "export.py"


def load_file(name: str, path: Path) -> ModuleType:
    """A module loaded from its file alone, as the Python backend loads detection_selection.py."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def selection_module() -> ModuleType:
    return load_file("detection_selection", SELECTION_FILE)


def served_settings(selection: ModuleType) -> dict:
    """The served thresholds (the client's contract, which a test holds to the configs) as
    ``select_detections`` arguments."""
    contract = load_file("ssd300_contract", client_package_dir() / "contract.py")
    return {
        argument: contract.POSTPROCESS_DEFAULTS[name] for name, (argument, _) in selection.SETTINGS.items()
    }


def served_cudnn_flags() -> dict:
    """``export.CUDNN_FLAGS`` (the cuDNN flags model.pt is traced with), read from export.py's
    source: importing it would import onnx, which a GPU machine need not have."""
    for node in ast.parse(EXPORT_FILE.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "CUDNN_FLAGS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise LookupError(f"CUDNN_FLAGS is not assigned in {EXPORT_FILE}")


def photos(count: int | None = None) -> torch.Tensor:
    """The client's sample photos at the input size, uint8 [N, 300, 300, 3], repeated to ``count``."""
    arrays = [
        np.asarray(Image.open(p).convert("RGB").resize((FIG_SIZE, FIG_SIZE), Image.BILINEAR))
        for p in sample_photo_paths()
    ]
    batch = torch.from_numpy(np.stack(arrays))
    count = count or len(batch)
    return batch.repeat(-(-count // len(batch)), 1, 1, 1)[:count].contiguous()


def random_network() -> tuple[nn.Module, dict]:
    """The build's calibrated random weights (``WEIGHTS=random``, its default seed)."""
    return load_network("random", seed=DEFAULT_SEED, calibration_photos=photos())


def trace(network: nn.Module, precision: str = "fp32", *, allow_tf32: bool) -> torch.jit.ScriptModule:
    """:class:`SSD300Detector` traced as the build traces model.pt, TF32 allowed or not.

    Tracing records cuDNN's flags as constants of every convolution: ``allow_tf32=True`` gives
    model.pt's graph, ``False`` a graph that stays FP32 on the GPU whatever the global flags.
    """
    flags = {**served_cudnn_flags(), "allow_tf32": allow_tf32}
    example = photos(1)
    with torch.no_grad(), torch.backends.cudnn.flags(**flags):
        return torch.jit.trace(SSD300Detector(network, precision).eval(), example, check_trace=False)


def tf32_convolutions(scripted: torch.jit.ScriptModule) -> tuple[int, int]:
    """(convolutions allowing TF32, all convolutions) of a traced graph: the last argument of
    ``aten::_convolution`` is its allow_tf32 constant."""
    convolutions = [n for n in scripted.inlined_graph.nodes() if n.kind() == "aten::_convolution"]
    allowed = sum(bool(list(n.inputs())[-1].toIValue()) for n in convolutions)
    return allowed, len(convolutions)


def tf32_round(x: torch.Tensor) -> torch.Tensor:
    """FP32 values rounded to TF32's 10-bit mantissa (to nearest, ties away from zero): what a
    tensor core reads of an FP32 operand. 13 of FP32's 23 mantissa bits go."""
    bits = x.contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


def tf32_emulated(network: nn.Module) -> nn.Module:
    """A copy of ``network`` whose convolutions read TF32-rounded weights and inputs and
    accumulate in FP32, as TF32 tensor cores do: runs on a CPU, so the distance TF32 alone puts
    between a GPU and the CPU can be measured there."""
    emulated = copy.deepcopy(network).eval()
    for module in emulated.modules():
        if isinstance(module, nn.Conv2d):
            module.weight.data = tf32_round(module.weight.data)
            module.register_forward_pre_hook(lambda _, inputs: (tf32_round(inputs[0]),))
    return emulated


def half_input_emulated(network: nn.Module) -> nn.Module:
    """A copy of ``network`` that rounds only its input to FP16 and computes in FP32: the least
    an FP16 network changes (tests/test_fp16.py measures FP16 against this floor)."""
    emulated = copy.deepcopy(network).eval()
    emulated.register_forward_pre_hook(lambda _, inputs: (inputs[0].half().float(),))
    return emulated


def decoded(network: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every anchor's box (clamped to the image) and class scores, from ``network`` in eager
    mode on the CPU: anchor for anchor comparable whatever selection the served graph adds."""
    detector = SSD300Detector(network).eval()
    with torch.inference_mode():
        ploc, plabel = network(detector.normalize(images))
        return decode_boxes(ploc, detector.dboxes).clamp(0, 1), plabel.softmax(dim=1)[:, 1:]


def rounding_floor(network: nn.Module, emulated: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """Largest box and score differences between ``emulated`` and ``network`` on ``images``."""
    (boxes, scores), (boxes_r, scores_r) = decoded(network, images), decoded(emulated, images)
    return {"boxes": float((boxes_r - boxes).abs().max()), "scores": float((scores_r - scores).abs().max())}
