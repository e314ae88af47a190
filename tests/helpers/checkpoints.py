"""Checkpoints shaped like the ones users bring."""

from __future__ import annotations

import collections


def ngc_checkpoint(state, *, half=False):
    """Like a DeepLearningExamples training checkpoint: DDP prefixes, optimizer, scheduler, label map."""
    model = {f"module.{k}": (v.half() if half and v.is_floating_point() else v) for k, v in state.items()}
    return {
        "epoch": 64,
        "iteration": 118_000,
        "model": model,
        "optimizer": {"state": {}, "param_groups": [{"lr": 2.6e-3, "momentum": 0.9, "params": [0, 1]}]},
        "scheduler": {"milestones": collections.Counter({43: 1, 54: 1}), "gamma": 0.1, "last_epoch": 64},
        "label_map": {i: i for i in range(1, 81)},
    }
