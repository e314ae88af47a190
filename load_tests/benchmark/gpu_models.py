"""What ``make gpu-check`` and the ``gpu`` tests run, built from torch, torchvision, numpy and Pillow alone.

A lent GPU machine has its own Python and a CUDA torch but none of this project's venv (no
tritonclient, protobuf or onnx), so nothing here imports them: the served thresholds come from
the shared contract (``ssd300_common``, standard library only).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from ssd300_build.calibration import sample_photos
from ssd300_build.default_boxes import decode_boxes
from ssd300_build.detector import SSD300Detector
from ssd300_build.export import CUDNN_FLAGS
from ssd300_build.sources import DEFAULT_SEED, load_network
from ssd300_common import contract

REPO_ROOT = Path(__file__).resolve().parents[2]


def served_settings(selection) -> dict:
    """The served thresholds (the client's contract, which a test holds to the configs) as
    arguments of ``selection``'s functions."""
    return {arg: contract.POSTPROCESS_DEFAULTS[name] for name, (arg, _) in selection.SETTINGS.items()}


def photos(count: int | None = None) -> torch.Tensor:
    """The client's sample photos, uint8 [N, 300, 300, 3], repeated to ``count``."""
    batch = sample_photos()
    count = count or len(batch)
    return batch.repeat(-(-count // len(batch)), 1, 1, 1)[:count].contiguous()


def random_network() -> tuple[nn.Module, dict]:
    """(network, metadata): the build's calibrated random weights (``make model WEIGHTS=random``)."""
    return load_network("random", seed=DEFAULT_SEED, calibration_photos=photos())


def trace(network: nn.Module, precision: str = "fp32", *, allow_tf32: bool) -> torch.jit.ScriptModule:
    """:class:`SSD300Detector` traced as the build traces model.pt, TF32 allowed or not.

    Tracing records cuDNN's flags as constants of every convolution: ``allow_tf32=True`` gives
    model.pt's graph, ``False`` a graph that stays FP32 on the GPU whatever the global flags.
    """
    with torch.no_grad(), torch.backends.cudnn.flags(**{**CUDNN_FLAGS, "allow_tf32": allow_tf32}):
        return torch.jit.trace(SSD300Detector(network, precision).eval(), photos(1), check_trace=False)


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


def emulated(network: nn.Module, rounding: str) -> nn.Module:
    """A copy of ``network`` that rounds as a GPU does and computes in FP32, so that the distance
    rounding alone puts between a GPU and the CPU can be measured on a CPU. ``"tf32"``: every
    convolution reads TF32-rounded weights and inputs, as tensor cores do; ``"fp16"``: only the
    input is rounded to FP16, the least an FP16 network changes (tests/test_fp16.py's floor)."""
    copied = copy.deepcopy(network).eval()
    if rounding == "fp16":
        copied.register_forward_pre_hook(lambda _, inputs: (inputs[0].half().float(),))
    for module in copied.modules() if rounding == "tf32" else ():
        if isinstance(module, nn.Conv2d):
            module.weight.data = tf32_round(module.weight.data)
            module.register_forward_pre_hook(lambda _, inputs: (tf32_round(inputs[0]),))
    return copied


def rounding_floor(network: nn.Module, rounding: str, images: torch.Tensor) -> dict[str, float]:
    """Largest box and score differences ``rounding`` (:func:`emulated`) makes on ``images``, over
    every anchor (eager, on the CPU), so no selection in the served graph hides one."""
    detector, rounded = SSD300Detector(network).eval(), emulated(network, rounding)
    with torch.inference_mode():
        (ploc, plabel), (ploc_r, plabel_r) = (n(detector.normalize(images)) for n in (network, rounded))
        boxes, boxes_r = (decode_boxes(p, detector.dboxes).clamp(0, 1) for p in (ploc, ploc_r))
        scores, scores_r = (p.softmax(dim=1)[:, 1:] for p in (plabel, plabel_r))
    return {"boxes": float((boxes_r - boxes).abs().max()), "scores": float((scores_r - scores).abs().max())}
