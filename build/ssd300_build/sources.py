"""Where the weights come from: ``WEIGHTS=auto|nvidia|random|<path>``."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .calibration import calibrate_random_network
from .model import SSD300
from .weights import (
    NGC_CHECKPOINT_URL,
    CheckpointUnavailable,
    fetch_nvidia_checkpoint,
    load_weights,
    read_state_dict,
    sha256_of,
)

log = logging.getLogger(__name__)

DEFAULT_SEED = 0
RANDOM_WEIGHTS_WARNING = (
    "SSD300 is built with RANDOM weights: detections are meaningless. "
    "Build with WEIGHTS=nvidia (or a checkpoint path) for real detections."
)


def load_network(
    weights: str,
    *,
    seed: int = DEFAULT_SEED,
    calibration_photos: torch.Tensor | None = None,
    expected_sha256: str | None = None,
) -> tuple[SSD300, dict]:
    """Build SSD300 in eval mode from a weights spec; return it with metadata describing the source."""
    if weights == "auto":
        try:
            return load_network("nvidia", expected_sha256=expected_sha256)
        except CheckpointUnavailable as exc:
            log.warning("%s", exc)
            log.warning("WEIGHTS=auto: falling back to random weights. %s", RANDOM_WEIGHTS_WARNING)
            return load_network("random", seed=seed, calibration_photos=calibration_photos)

    if weights == "random":
        torch.manual_seed(seed)
        network = SSD300()
        calibrate_random_network(network, calibration_photos, seed=seed)
        return network.eval(), {"weights": "random", "seed": seed, "checkpoint": None, "sha256": None}

    if weights == "nvidia":
        path, source, url = fetch_nvidia_checkpoint(), "nvidia", NGC_CHECKPOINT_URL
    else:
        path, source, url = Path(weights), "file", None
    state = read_state_dict(path, expected_sha256=expected_sha256)
    network = SSD300()
    load_weights(network, state, path)
    metadata = {"weights": source, "checkpoint": str(path), "sha256": sha256_of(path)}
    if url:
        metadata["url"] = url
    return network.eval(), metadata
