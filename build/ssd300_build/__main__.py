"""``python -m ssd300_build``: checkpoint → SSD300 (TorchScript, or also ONNX) into a model repository."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ssd300_serving.provenance import read_provenance

from .calibration import sample_photos
from .detector import PRECISIONS
from .export import ENGINES, check_build_options, stamp_config, write_model
from .sources import DEFAULT_SEED, RANDOM_WEIGHTS_WARNING, load_network
from .weights import CheckpointError

log = logging.getLogger("ssd300_build")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ssd300_build",
        description="Build the TorchScript SSD300 (uint8 RGB in, decoded boxes and class scores out) "
        "into a Triton model repository.",
    )
    parser.add_argument(
        "--weights",
        default="auto",
        help="auto (NVIDIA checkpoint if cached or downloadable, else random), nvidia, random, "
        "or the path of a checkpoint / state dict (default: %(default)s)",
    )
    parser.add_argument(
        "--repository",
        type=Path,
        default=Path("model_repository"),
        help="model repository to write into (default: %(default)s)",
    )
    parser.add_argument("--sha256", help="expected sha256 of the checkpoint file; refuse it on mismatch")
    parser.add_argument(
        "--stamp-config",
        action="store_true",
        help="also record the weights' source in ssd300/config.pbtxt (for serving images; the "
        "embedded server stamps its own copy at start)",
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help="seed for WEIGHTS=random (default: %(default)s)"
    )
    parser.add_argument(
        "--engine",
        default="torchscript",
        help=f"engine the embedded server runs: {' or '.join(ENGINES)} (onnx also writes model.onnx "
        "beside model.pt; default: %(default)s)",
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        help=f"precision of model.pt's network: {' or '.join(PRECISIONS)} (fp16 is meant for GPUs; "
        "input and outputs stay uint8 / FP32; default: %(default)s)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        check_build_options(args.engine, args.precision)
    except ValueError as exc:  # before loading anything: a typo should not cost a calibration
        print(f"error: {exc}", file=sys.stderr)
        return 2

    try:
        network, metadata = load_network(
            args.weights, seed=args.seed, calibration_photos=sample_photos(), expected_sha256=args.sha256
        )
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_model(network, args.repository, metadata, engine=args.engine, precision=args.precision)
    if args.stamp_config:
        for path in stamp_config(args.repository, read_provenance(args.repository)):
            log.info("stamped %s", path)
    if metadata["weights"] == "random":
        log.warning(RANDOM_WEIGHTS_WARNING)
    return 0


if __name__ == "__main__":
    sys.exit(main())
