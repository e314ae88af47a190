"""Dispatched aten operations per postprocess call: what each call would launch on a GPU.

``python -m load_tests.benchmark.dispatch_count`` counts one call of each selection function
(``select_detections``, the CPU sweep; ``select_detections_gpu``, the fixed-point NMS) at batch
1, 8 and 64 on real SSD300 outputs, on CPU tensors: the number of operations does not depend on
the device, only on the data. On a GPU every non-view operation is (at least) one kernel launch
and every data-dependent one (``item``, ``equal``, ``nonzero``, ``is_nonzero``) a device-to-host
sync. Views (``view``, ``slice``, ``expand``…) launch nothing and are counted apart.
``Tensor.tolist()`` reads the data without dispatching an operation, so syncs it causes are not
seen here: the sync count is a lower bound for code that uses it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# The target for select_detections_gpu: at most this many operations (views included) per call
# at batch 64, a tenth of the ~9,800 the rank sweep dispatches.
TARGET_OPS_AT_64 = 1000
TARGET_BATCH = 64
BATCH_SIZES = (1, 8, 64)
FUNCTIONS = ("select_detections", "select_detections_gpu")
SYNC_TAGS = (torch.Tag.data_dependent_output, torch.Tag.dynamic_output_shape)
# torch.equal answers a Python bool: the host waits for the comparison.
SYNC_OPS = {
    "aten.is_nonzero.default",
    "aten.item.default",
    "aten._local_scalar_dense.default",
    "aten.equal.default",
}


@dataclass
class DispatchCounts:
    ops: int = 0  # non-view operations: kernel launches on a GPU
    views: int = 0  # operations that only make a view of existing data
    syncs: int = 0  # operations whose result the host must wait for
    by_name: Counter = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return self.ops + self.views


class DispatchCounter(TorchDispatchMode):
    """Counts the aten operations dispatched while active (``with DispatchCounter() as c:``)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts = DispatchCounts()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        counts = self.counts
        counts.by_name[name] += 1
        if func.is_view:
            counts.views += 1
        else:
            counts.ops += 1
        if name in SYNC_OPS or any(tag in func.tags for tag in SYNC_TAGS):
            counts.syncs += 1
        return func(*args, **(kwargs or {}))


def count(function, *args, **kwargs) -> DispatchCounts:
    """The operations one call of ``function(*args, **kwargs)`` dispatches."""
    with torch.inference_mode(), DispatchCounter() as counter:
        function(*args, **kwargs)
    return counter.counts


def realistic_outputs(network, batch_sizes: tuple[int, ...] = BATCH_SIZES) -> dict:
    """What ssd300 serves for ``network`` (the calibrated random-weights SSD300: each class's best
    decoded boxes and their probabilities) for the largest batch size, then cut to each smaller
    size. The images are the sample photos in their 8 rotations and mirrorings, each whole and
    zoomed in (every image of batch 64
    differs from the others). Returns {size: (boxes, scores)}."""
    from load_tests.payloads import SampleImages
    from ssd300_build.detector import SSD300Detector

    detector = SSD300Detector(network).eval()
    pixels = torch.from_numpy(SampleImages().pixels)  # photos and their mirror images
    turned = torch.cat([torch.rot90(pixels, turns, dims=(1, 2)) for turns in range(4)])
    variants = torch.cat([turned, zoomed(turned)])
    largest = max(batch_sizes)
    images = variants[torch.arange(largest) % len(variants)].contiguous()
    with torch.inference_mode():
        outputs = [detector(chunk) for chunk in images.split(8)]
    boxes, scores = torch.cat([b for b, _ in outputs]), torch.cat([s for _, s in outputs])
    return {size: (boxes[:size], scores[:size]) for size in batch_sizes}


def zoomed(images: torch.Tensor, keep: float = 0.75) -> torch.Tensor:
    """The central ``keep`` part of each uint8 [N, H, W, 3] image, scaled back to H × W."""
    height, width = images.shape[1:3]
    top, left = round(height * (1 - keep) / 2), round(width * (1 - keep) / 2)
    crop = images[:, top : height - top, left : width - left].permute(0, 3, 1, 2).float()
    scaled = torch.nn.functional.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False)
    return scaled.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def measure(selection, options: dict, outputs: dict, *, repeats: int = 1) -> dict:
    """{function: {batch: {ops, views, syncs, cpu_ms}}} for both selection functions; cpu_ms is
    the median of ``repeats`` timed calls (after one untimed call at the smallest batch)."""
    results: dict = {}
    for name in FUNCTIONS:
        function = getattr(selection, name)
        results[name] = {}
        with torch.inference_mode():
            function(*outputs[min(outputs)], **options)  # warm-up
        for size, (boxes, scores) in sorted(outputs.items()):
            counts = count(function, boxes, scores, **options)
            with torch.inference_mode():
                seconds = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    function(boxes, scores, **options)
                    seconds.append(time.perf_counter() - start)
            results[name][size] = {
                "ops": counts.ops,
                "views": counts.views,
                "syncs": counts.syncs,
                "cpu_ms": 1000 * statistics.median(seconds),
            }
    return results


def total(figures: dict) -> int:
    """All dispatched operations, views included: the figure the target is set on."""
    return figures["ops"] + figures["views"]


def target_met(results: dict) -> bool | None:
    """Whether select_detections_gpu stays within the target at batch 64 (None: not measured)."""
    at_64 = results.get("select_detections_gpu", {}).get(TARGET_BATCH)
    return None if at_64 is None else total(at_64) <= TARGET_OPS_AT_64


def table(results: dict) -> list[str]:
    """Markdown rows: one per function and batch size."""
    lines = [
        "| function | batch | aten ops (views included) | of which views | host syncs seen | CPU ms/call |",
        "|---|---|---|---|---|---|",
    ]
    for name, by_size in results.items():
        for size, figures in by_size.items():
            lines.append(
                f"| `{name}` | {size} | {total(figures):,} | {figures['views']:,} | {figures['syncs']} | "
                f"{figures['cpu_ms']:.1f} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    from load_tests.benchmark.inprocess import load_selection_module, served_selection_options
    from ssd300_build.calibration import sample_photos
    from ssd300_build.sources import load_network

    parser = argparse.ArgumentParser(
        prog="python -m load_tests.benchmark.dispatch_count",
        description="Dispatched aten operations per postprocess call on real SSD300 outputs (CPU).",
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES))
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per figure (median)")
    parser.add_argument("--seed", type=int, default=0, help="random-weights seed (make bench uses 0)")
    args = parser.parse_args(argv)
    network, _ = load_network("random", seed=args.seed, calibration_photos=sample_photos())
    outputs = realistic_outputs(network, tuple(args.batch_sizes))
    selection = load_selection_module()
    results = measure(selection, served_selection_options(selection), outputs, repeats=args.repeats)
    print("\n".join(table(results)))
    met = target_met(results)
    if met is not None:
        figure = total(results["select_detections_gpu"][TARGET_BATCH])
        print(
            f"\nselect_detections_gpu at batch {TARGET_BATCH}: {figure:,} operations "
            f"(target ≤ {TARGET_OPS_AT_64:,}: {'met' if met else 'NOT met'})"
        )
    return 1 if met is False else 0


if __name__ == "__main__":
    sys.exit(main())
