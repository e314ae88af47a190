"""System shared-memory regions for input images, when the server runs on this machine.

Instead of ~270 KB per image travelling through a socket, the client writes the batch into a
region the server maps (``tritonclient.utils.shared_memory``) and the request names the region.
Each request in flight leases its own region; a region is registered with a server the first
time it is used there, and :meth:`SharedMemoryPool.close` is preceded by unregistering it.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import tritonclient.utils.shared_memory as shm

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Region:
    name: str  # the name the server knows it by
    key: str  # the POSIX shared-memory object, "/name"
    byte_size: int
    handle: object
    registered_on: set[str] = field(default_factory=set)  # server URLs

    def write(self, array: np.ndarray) -> int:
        """Copy ``array`` to the start of the region; returns its size in bytes."""
        array = np.ascontiguousarray(array)
        if array.nbytes > self.byte_size:
            raise ValueError(f"{array.nbytes} bytes do not fit region {self.name} ({self.byte_size} bytes)")
        shm.set_shared_memory_region(self.handle, [array])
        return array.nbytes


class SharedMemoryPool:
    """Regions leased one request at a time, kept for reuse until :meth:`close`.

    Sizes are rounded up to a power-of-two count of ``unit_bytes`` (one image), so a detector
    holds at most ~7 sizes × its concurrency regions however its batches vary.
    """

    def __init__(self, unit_bytes: int) -> None:
        self.unit_bytes = unit_bytes
        self._prefix = f"ssd300_client_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self._counter = itertools.count()
        self._lock = threading.Lock()
        self._free: list[Region] = []
        self._regions: list[Region] = []

    def _size_for(self, byte_size: int) -> int:
        units = max(1, -(-byte_size // self.unit_bytes))
        return self.unit_bytes * (1 << (units - 1).bit_length())

    def acquire(self, byte_size: int) -> Region:
        with self._lock:
            fitting = [region for region in self._free if region.byte_size >= byte_size]
            if fitting:
                region = min(fitting, key=lambda r: r.byte_size)
                self._free.remove(region)
                return region
            name = f"{self._prefix}_{next(self._counter)}"
            size = self._size_for(byte_size)
            region = Region(name, "/" + name, size, shm.create_shared_memory_region(name, "/" + name, size))
            self._regions.append(region)
            log.debug("created shared-memory region %s (%d bytes)", name, size)
            return region

    def release(self, region: Region) -> None:
        with self._lock:
            if region in self._regions:
                self._free.append(region)

    @contextmanager
    def lease(self, byte_size: int) -> Iterator[Region]:
        region = self.acquire(byte_size)
        try:
            yield region
        finally:
            self.release(region)

    def regions(self) -> list[Region]:
        with self._lock:
            return list(self._regions)

    def close(self) -> None:
        """Destroy every region (unregister them from their servers first)."""
        with self._lock:
            regions, self._regions, self._free = self._regions, [], []
        for region in regions:
            try:
                shm.destroy_shared_memory_region(region.handle)
            except Exception:
                log.warning("could not destroy shared-memory region %s", region.name, exc_info=True)
