"""Trace the served network and write it into a Triton model repository."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch

from .detector import INPUT_SHAPE, SSD300Detector
from .model import SSD300

log = logging.getLogger(__name__)

MODEL_NAME = "ssd300"
MODEL_FILE = "model.pt"
# Travels inside model.pt as a TorchScript extra file and beside it for people and tools.
METADATA_FILE = "weights.json"
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


def trace_detector(network: SSD300) -> torch.jit.ScriptModule:
    """TorchScript of :class:`SSD300Detector` with a dynamic batch dimension."""
    detector = SSD300Detector(network).eval()
    example = torch.randint(
        0, 256, (2, *INPUT_SHAPE), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    # Triton's PyTorch backend runs TorchScript; torch's deprecation notice does not apply to us.
    with torch.no_grad(), warnings.catch_warnings(), torch.backends.cudnn.flags(**CUDNN_FLAGS):
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.trace(detector, example, check_trace=False)


def write_model(network: SSD300, repository: Path, metadata: dict) -> Path:
    """Write ``<repository>/ssd300/1/model.pt`` and ``weights.json``; return the model path."""
    version_dir = Path(repository) / MODEL_NAME / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    metadata = {**metadata, "torch_version": torch.__version__}
    encoded = json.dumps(metadata, indent=2, sort_keys=True)
    log.info("tracing SSD300 (uint8 [N, 300, 300, 3] -> boxes, scores)")
    traced = trace_detector(network)
    target = version_dir / MODEL_FILE
    # Write then rename, so a running server never sees a half-written model.
    partial = target.with_name(MODEL_FILE + ".partial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(traced, str(partial), _extra_files={METADATA_FILE: encoded})
    partial.replace(target)
    (version_dir / METADATA_FILE).write_text(encoded + "\n")
    log.info("wrote %s", target)
    return target


def read_metadata(repository: Path) -> dict | None:
    """The metadata of the built model, or None when no model has been built."""
    path = Path(repository) / MODEL_NAME / "1" / METADATA_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def stamp_weights(config_text: str, metadata: dict | None) -> str:
    """Append the model.pt provenance as config parameters clients can read (``weights``)."""
    if not metadata:
        return config_text
    lines = [config_text.rstrip(), "# stamped from 1/weights.json"]
    for key, value in (("weights", metadata.get("weights")), ("weights_sha256", metadata.get("sha256"))):
        if value:
            lines.append(f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}')
    return "\n".join(lines) + "\n"


def stamp_config(repository: Path, metadata: dict) -> Path:
    """Stamp the production ``ssd300/config.pbtxt`` (for images built once per checkpoint)."""
    path = Path(repository) / MODEL_NAME / "config.pbtxt"
    path.write_text(stamp_weights(path.read_text(), metadata))
    return path
