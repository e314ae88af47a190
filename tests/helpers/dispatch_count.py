"""Dispatched aten operations per call: what a call would launch on a GPU, counted on CPU
tensors (the number of operations depends on the data, not on the device).

On a GPU every non-view operation is at least one kernel launch and every data-dependent one
(``item``, ``equal``, ``nonzero``, ``is_nonzero``) a device-to-host sync. Views launch nothing
and are counted apart. ``Tensor.tolist()`` reads data without dispatching an operation, so the
sync count is a lower bound for code that uses it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode

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
        self.counts.by_name[name] += 1
        if func.is_view:
            self.counts.views += 1
        else:
            self.counts.ops += 1
        if name in SYNC_OPS or any(tag in func.tags for tag in SYNC_TAGS):
            self.counts.syncs += 1
        return func(*args, **(kwargs or {}))


def count(function, *args, **kwargs) -> DispatchCounts:
    """The operations one call of ``function(*args, **kwargs)`` dispatches."""
    with torch.inference_mode(), DispatchCounter() as counter:
        function(*args, **kwargs)
    return counter.counts
