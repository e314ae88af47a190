"""Random weights that behave like a trained SSD300 numerically (docs/testing.md).

Plain random init gives saturated scores (all 1.0, so every top-k cut is a tie) and box offsets
whose exp() overflows to ~1e12: useless for testing decode and NMS. Calibrating BN statistics
and tempering the heads gives spread-out scores and sane boxes, deterministically for a seed.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from ssd300_common import samples
from ssd300_common.imaging import decode_image, resize_for_model

from .detector import SSD300Detector
from .model import SSD300

log = logging.getLogger(__name__)

# A trained SSD300's heads produce logits with a spread of roughly this size and box offsets
# of order one; tempering targets these standard deviations.
CONF_LOGIT_STD = 1.5
LOC_OFFSET_STD = 1.0
BN_CALIBRATION_PASSES = 2
BN_CALIBRATION_BATCH = 8


def synthetic_images(count: int, generator: torch.Generator) -> torch.Tensor:
    """Tensor[count, 300, 300, 3] uint8 of smooth colour fields with fine texture."""
    coarse = torch.rand(count, 3, 6, 6, generator=generator)
    smooth = nn.functional.interpolate(coarse, size=(300, 300), mode="bicubic", align_corners=False)
    texture = 0.08 * torch.randn(count, 3, 300, 300, generator=generator)
    pixels = ((smooth + texture).clamp(0, 1) * 255).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).contiguous()


@torch.no_grad()
def calibrate_random_network(network: SSD300, photos: torch.Tensor | None, *, seed: int) -> None:
    """Calibrate BN statistics on synthetic images, then temper the heads on ``photos``.

    photos: Tensor[N, 300, 300, 3] uint8 of real-looking images (synthetic ones when None).
    """
    generator = torch.Generator().manual_seed(seed)
    detector = SSD300Detector(network)
    for module in network.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over all calibration batches
    network.train()
    for step in range(BN_CALIBRATION_PASSES):
        log.info("calibrating BN statistics: pass %d/%d", step + 1, BN_CALIBRATION_PASSES)
        network.feature_maps(detector.normalize(synthetic_images(BN_CALIBRATION_BATCH, generator)))
    network.eval()

    if photos is None:
        photos = synthetic_images(4, generator)
    log.info("tempering heads on %d images", len(photos))
    maps = network.feature_maps(detector.normalize(photos))
    _temper(network.conf, maps, CONF_LOGIT_STD)
    _temper(network.loc, maps, LOC_OFFSET_STD)


def _temper(heads: nn.ModuleList, maps: list[torch.Tensor], target_std: float) -> None:
    outputs = torch.cat([head(x).flatten() for head, x in zip(heads, maps)])
    scale = target_std / outputs.std().item()
    for head in heads:
        head.weight.mul_(scale)
        head.bias.mul_(scale)


def sample_photos() -> torch.Tensor | None:
    """The sample photos (ssd300_common.samples), decoded and resized as the client sends them;
    they temper random weights."""
    paths = samples.paths()
    if not paths:
        return None
    arrays = [resize_for_model(decode_image(path.read_bytes(), name=path.name)) for path in paths]
    return torch.from_numpy(np.stack(arrays))
