"""Trace the served network and write it into a Triton model repository.

The build always writes ``model.pt`` (TorchScript: the production libtorch config and the GPU
check run it); ``engine="onnx"`` also writes ``model.onnx`` from the same weights
(onnx_export.py). ``1/weights.json`` records the weights' source, the engine the embedded
server should run and the precision of ``model.pt``.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch

from ssd300_common.contract import ENGINE_FILES, METADATA_FILE, NETWORK_MODEL
from ssd300_serving.provenance import stamp_weights

from .detector import INPUT_SHAPE, SSD300Detector, network_dtype
from .model import SSD300
from .onnx_export import ONNX_FILE, export_onnx

log = logging.getLogger(__name__)

MODEL_FILE = ENGINE_FILES["torchscript"]
ENGINES = tuple(ENGINE_FILES)
# Tracing records torch.backends.cudnn's flags as constants of every convolution in model.pt, so
# they are set here for the GPU that runs it, whatever the building process's global state:
# - benchmark off: the autotuner would run on the first call of each new input shape, and the
#   dynamic batcher forms every batch size from 1 to 64, so live requests would pay for it;
#   cuDNN's heuristics choose well for ResNet-50's convolutions without it.
# - TF32 allowed: on Ampere and newer GPUs FP32 convolutions run on tensor cores with a 10-bit
#   mantissa (FP32's range, ~5e-4 relative rounding), several times faster; NVIDIA's TF32
#   inference figures for SSD300, which ssd300/config.pbtxt sizes its queue from, are measured so.
# - not deterministic: bitwise-repeatable results are not needed, and may cost speed.
CUDNN_FLAGS = {"enabled": True, "benchmark": False, "deterministic": False, "allow_tf32": True}


def trace_detector(network: SSD300, precision: str = "fp32") -> torch.jit.ScriptModule:
    """TorchScript of :class:`SSD300Detector` with a dynamic batch dimension."""
    detector = SSD300Detector(network, precision).eval()
    # One image is enough to trace; fp16 convolutions on a CPU take ~25 s per image.
    example = torch.randint(
        0, 256, (1, *INPUT_SHAPE), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    # Triton's PyTorch backend runs TorchScript; torch's deprecation notice does not apply to us.
    with torch.no_grad(), warnings.catch_warnings(), torch.backends.cudnn.flags(**CUDNN_FLAGS):
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.trace(detector, example, check_trace=False)


def check_build_options(engine: str, precision: str) -> None:
    """Refuse unknown engines and precisions, and FP16 for ONNX, with what to do instead."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    network_dtype(precision)
    if engine == "onnx" and precision != "fp32":
        raise ValueError(
            "PRECISION=fp16 applies to the TorchScript model only: the ONNX model stays FP32 and "
            "gets FP16 on GPUs from TensorRT (precision_mode in ssd300/configs/onnx.pbtxt)"
        )


def write_model(
    network: SSD300, repository: Path, metadata: dict, *, engine: str = "torchscript", precision: str = "fp32"
) -> Path:
    """Write what the build generates into ``repository``: ``ssd300/1/model.pt`` (and
    ``model.onnx`` for ``engine="onnx"``) and their ``weights.json`` (METADATA_FILE, which
    also travels inside model.pt as a TorchScript extra file); return the path of the engine's
    model file."""
    check_build_options(engine, precision)
    version_dir = Path(repository) / NETWORK_MODEL / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    metadata = {**metadata, "torch_version": torch.__version__, "engine": engine, "precision": precision}
    encoded = json.dumps(metadata, indent=2, sort_keys=True)
    log.info("tracing SSD300 (uint8 [N, 300, 300, 3] -> boxes, scores; %s network)", precision)
    traced = trace_detector(network, precision)
    target = version_dir / MODEL_FILE
    # Write then rename, so a running server never sees a half-written model.
    partial = target.with_name(MODEL_FILE + ".partial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(traced, str(partial), _extra_files={METADATA_FILE: encoded})
    partial.replace(target)
    log.info("wrote %s", target)
    onnx_path = version_dir / ONNX_FILE
    if engine == "onnx":
        target = export_onnx(network, onnx_path, encoded)
    elif onnx_path.exists():
        # A model.onnx from an earlier build may hold other weights: never leave it beside.
        onnx_path.unlink()
        log.info("removed %s from an earlier ENGINE=onnx build", onnx_path)
    (version_dir / METADATA_FILE).write_text(encoded + "\n")
    return target


def stamp_config(repository: Path, metadata: dict) -> list[Path]:
    """Stamp the production configs (for images built once per checkpoint): ``config.pbtxt``
    (libtorch, runs model.pt) and, when model.onnx was built, ``configs/onnx.pbtxt`` whose
    precision is TensorRT's, not model.pt's."""
    model_dir = Path(repository) / NETWORK_MODEL
    stamped = [(model_dir / "config.pbtxt", ("weights", "weights_sha256", "precision"))]
    if metadata.get("engine") == "onnx":
        stamped.append((model_dir / "configs" / "onnx.pbtxt", ("weights", "weights_sha256")))
    for path, keys in stamped:
        path.write_text(stamp_weights(path.read_text(), metadata, only=keys))
    return [path for path, _ in stamped]
