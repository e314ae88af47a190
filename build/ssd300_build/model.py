"""NVIDIA's SSD300 v1.1 with a ResNet-50 backbone, laid out so its published checkpoints load strictly.

Module and attribute names mirror the state-dict keys of the NGC checkpoints
(``feature_extractor.feature_extractor.*``, ``additional_blocks.*``, ``loc.*``, ``conf.*``);
renaming anything here breaks ``load_state_dict(strict=True)``.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from .default_boxes import BOXES_PER_LOCATION

NUM_CLASSES = 81  # background + the 80 COCO classes

# Channels of the six feature maps (38, 19, 10, 5, 3, 1 pixels wide): layer3's output, then
# one per extra block.
FEATURE_CHANNELS = (1024, 512, 512, 256, 256, 256)
EXTRA_BLOCK_MID_CHANNELS = (256, 256, 128, 128, 128)


class ResNet50Backbone(nn.Module):
    """ResNet-50 up to layer3, with layer3's downsampling removed: Tensor[N, 1024, 38, 38] for 300×300."""

    def __init__(self) -> None:
        super().__init__()
        resnet = torchvision.models.resnet50(weights=None)
        # conv1, bn1, relu, maxpool, layer1, layer2, layer3
        self.feature_extractor = nn.Sequential(*list(resnet.children())[:7])
        first_block = self.feature_extractor[-1][0]
        first_block.conv1.stride = (1, 1)
        first_block.conv2.stride = (1, 1)
        first_block.downsample[0].stride = (1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_extractor(x)


def _extra_block(in_channels: int, mid_channels: int, out_channels: int, downsample: bool) -> nn.Sequential:
    # Indices 0, 1, 3, 4 carry weights; 2 and 5 are the ReLUs (the checkpoint's key layout).
    stride, padding = (2, 1) if downsample else (1, 0)
    return nn.Sequential(
        nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False),
        nn.BatchNorm2d(mid_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid_channels, out_channels, kernel_size=3, stride=stride, padding=padding, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SSD300(nn.Module):
    """Raw SSD300 network.

    Input: Tensor[N, 3, 300, 300], normalised RGB.
    Output: ``(ploc, plabel)`` = Tensor[N, 4, 8732] box offsets and Tensor[N, 81, 8732] class
    logits, boxes ordered as :func:`default_boxes.dboxes300_coco` enumerates them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.feature_extractor = ResNet50Backbone()
        self.additional_blocks = nn.ModuleList(
            _extra_block(c_in, c_mid, c_out, downsample=index < 3)
            for index, (c_in, c_mid, c_out) in enumerate(
                zip(FEATURE_CHANNELS[:-1], EXTRA_BLOCK_MID_CHANNELS, FEATURE_CHANNELS[1:])
            )
        )
        self.loc = nn.ModuleList(
            nn.Conv2d(channels, boxes * 4, kernel_size=3, padding=1)
            for channels, boxes in zip(FEATURE_CHANNELS, BOXES_PER_LOCATION)
        )
        self.conf = nn.ModuleList(
            nn.Conv2d(channels, boxes * NUM_CLASSES, kernel_size=3, padding=1)
            for channels, boxes in zip(FEATURE_CHANNELS, BOXES_PER_LOCATION)
        )
        for head in (*self.loc, *self.conf):
            nn.init.xavier_uniform_(head.weight)

    def feature_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.feature_extractor(images)
        maps = [x]
        for block in self.additional_blocks:
            x = block(x)
            maps.append(x)
        return maps

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.feature_maps(images)
        n = images.shape[0]
        # [N, boxes*C, H, W] reshaped to [N, C, boxes*H*W]: box index = anchor-size-major, then row,
        # then column; the same order the default boxes are enumerated in. reshape, not view: a
        # head's output need not be contiguous (channels-last kernels, other backends), and on a
        # contiguous one reshape is the same free view.
        ploc = torch.cat([head(x).reshape(n, 4, -1) for head, x in zip(self.loc, maps)], dim=2)
        plabel = torch.cat([head(x).reshape(n, NUM_CLASSES, -1) for head, x in zip(self.conf, maps)], dim=2)
        return ploc.contiguous(), plabel.contiguous()
