"""Export the served network to ONNX (``model.onnx``) for ONNX Runtime and its TensorRT provider.

The graph is the same module TorchScript traces (:class:`SSD300Detector`): uint8 NHWC input,
normalisation, SSD300, box decode, softmax and each class's top 200, with the tensor names the
Triton configs use. It is built for TensorRT 10.5 (the 24.10 release), which the production
config's ONNX Runtime hands it to: the uint8 input feeds a Cast and nothing else (TensorRT takes
uint8 only as a network input or output), and every op is in TensorRT's ONNX operator table.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from ssd300_common.contract import ENGINE_FILES, METADATA_FILE

from .detector import INPUT_SHAPE, SSD300Detector
from .model import SSD300

log = logging.getLogger(__name__)

ONNX_FILE = ENGINE_FILES["onnx"]
# TensorRT 10.5's ONNX parser documents opsets 9 to 20 (onnx-tensorrt's README for 10.x; opset 21
# ops came in 10.9); ONNX Runtime 1.19 in the 24.10 image and the CPU runner load it too.
OPSET = 20
INPUT_NAME = "images"
# Triton's libtorch backend needs <name>__<index>; the ONNX outputs keep the same names so the
# ensembles wire either engine unchanged.
OUTPUT_NAMES = ("boxes__0", "scores__1")
# The build's weights.json also travels inside model.onnx, under this metadata key.
METADATA_KEY = METADATA_FILE


def export_onnx(network: SSD300, path: Path, metadata_json: str) -> Path:
    """Write ``path`` (FP32, dynamic batch), check it with ``onnx.checker``; return ``path``."""
    import onnx  # here, not at the top: importing the build (export.py) must not need onnx

    detector = SSD300Detector(network).eval()
    example = torch.randint(
        0, 256, (2, *INPUT_SHAPE), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    batch = torch.export.Dim("batch", min=1, max=1024)
    log.info("exporting SSD300 to ONNX (opset %d, dynamic batch)", OPSET)
    # The exporter's graph passes log every rewrite at INFO; only their warnings matter here.
    logging.getLogger("onnx_ir").setLevel(logging.WARNING)
    logging.getLogger("onnxscript").setLevel(logging.WARNING)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            detector,
            (example,),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes=({0: batch},),
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
    model = program.model_proto
    onnx.helper.set_model_props(model, {METADATA_KEY: metadata_json})
    model.doc_string = (
        "SSD300 (NVIDIA DeepLearningExamples layout): uint8 NHWC in, each class's best boxes and scores out"
    )
    # Write then rename, so a running server never sees a half-written model.
    partial = path.with_name(path.name + ".partial")
    onnx.save_model(model, str(partial))
    onnx.checker.check_model(str(partial), full_check=True)
    partial.replace(path)
    log.info("wrote %s (onnx.checker passed)", path)
    return path


def read_onnx_metadata(path: Path) -> str | None:
    """The weights.json text stored in ``model.onnx``, or None."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((p.value for p in model.metadata_props if p.key == METADATA_KEY), None)
