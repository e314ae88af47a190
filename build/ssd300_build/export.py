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

from .detector import INPUT_SHAPE, SSD300Detector, network_dtype
from .model import SSD300
from .onnx_export import ONNX_FILE, export_onnx

log = logging.getLogger(__name__)

MODEL_NAME = "ssd300"
MODEL_FILE = "model.pt"
# Travels inside model.pt as a TorchScript extra file and beside it for people and tools.
METADATA_FILE = "weights.json"
ENGINES = ("torchscript", "onnx")


def trace_detector(network: SSD300, precision: str = "fp32") -> torch.jit.ScriptModule:
    """TorchScript of :class:`SSD300Detector` with a dynamic batch dimension."""
    detector = SSD300Detector(network, precision).eval()
    # One image is enough to trace; fp16 convolutions on a CPU take ~25 s per image.
    example = torch.randint(
        0, 256, (1, *INPUT_SHAPE), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    # Triton's PyTorch backend runs TorchScript; torch's deprecation notice does not apply to us.
    with torch.no_grad(), warnings.catch_warnings():
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
    """Write ``<repository>/ssd300/1/model.pt`` (and ``model.onnx`` for ``engine="onnx"``) and
    ``weights.json``; return the path of the engine's model file."""
    check_build_options(engine, precision)
    version_dir = Path(repository) / MODEL_NAME / "1"
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


def read_metadata(repository: Path) -> dict | None:
    """The metadata of the built model, or None when no model has been built."""
    path = Path(repository) / MODEL_NAME / "1" / METADATA_FILE
    return json.loads(path.read_text()) if path.is_file() else None


# Config parameter <- weights.json key, stamped for clients (and, for `engine`, the CPU runner).
STAMPED_PARAMETERS = (
    ("weights", "weights"),
    ("weights_sha256", "sha256"),
    ("precision", "precision"),
    ("engine", "engine"),
)


def stamp_weights(config_text: str, metadata: dict | None, *, keys: tuple[str, ...] | None = None) -> str:
    """Append the build's provenance as config parameters clients can read (``weights``,
    ``precision``, ``engine``); ``keys`` limits it to some of those parameters."""
    if not metadata:
        return config_text
    lines = [config_text.rstrip(), "# stamped from 1/weights.json"]
    for key, field in STAMPED_PARAMETERS:
        value = metadata.get(field)
        if value and (keys is None or key in keys):
            lines.append(f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}')
    return "\n".join(lines) + "\n"


def stamp_config(repository: Path, metadata: dict) -> list[Path]:
    """Stamp the production configs (for images built once per checkpoint): ``config.pbtxt``
    (libtorch, runs model.pt) and, when model.onnx was built, ``configs/onnx.pbtxt`` whose
    precision is TensorRT's, not model.pt's."""
    model_dir = Path(repository) / MODEL_NAME
    stamped = [(model_dir / "config.pbtxt", ("weights", "weights_sha256", "precision"))]
    if metadata.get("engine") == "onnx":
        stamped.append((model_dir / "configs" / "onnx.pbtxt", ("weights", "weights_sha256")))
    for path, keys in stamped:
        path.write_text(stamp_weights(path.read_text(), metadata, keys=keys))
    return [path for path, _ in stamped]
