"""What the blocking :class:`~ssd300_client.Detector` and the :class:`~ssd300_client.AsyncDetector`
share: options, preparing images, building requests, reading answers, the readiness and
weights bookkeeping, and which failures move on to the next server.

The I/O itself (threads or asyncio) lives in the two subclasses.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import warnings
import weakref
from collections.abc import Iterable, Iterator, Mapping

import numpy as np

from . import contract
from .endpoints import check_protocol, is_loopback, normalise_url, split_urls
from .errors import (
    InvalidImageError,
    InvalidInputError,
    ModelNotReadyError,
    RandomWeightsWarning,
    ServerUnavailableError,
    SSD300Error,
)
from .imaging import MODEL_INPUT_SIZE
from .preprocess import (
    ImageInput,
    PreparedImage,
    boxes_to_pixels,
    describe,
    prepare_for_model,
    prepare_for_server_decode,
)
from .results import Detections
from .retry import rotation
from .shared_memory import Region, SharedMemoryPool
from .transport import InferRequest, InputTensor

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0  # per request; a CPU server needs ~0.4 s per image, a batch of 8 ~3 s
DEFAULT_BATCH_SIZE = 8  # the CPU config's preferred batch; GPUs gain up to 64
DEFAULT_CONCURRENCY = 4  # requests in flight: the client prepares the next while the server works
SHARED_MEMORY_MODES = ("auto", True, False)
IMAGE_BYTES = MODEL_INPUT_SIZE * MODEL_INPUT_SIZE * 3

RANDOM_WEIGHTS_MESSAGE = (
    "the server runs SSD300 with RANDOM weights (model config parameter weights=random): "
    "its detections are meaningless. Build the model with WEIGHTS=nvidia for real ones."
)

Outcome = Detections | InvalidImageError
_SERVER_ITEM_ERROR = re.compile(r"encoded_image\[\d+\]:\s*(.*)", re.DOTALL)


class DetectorBase:
    """State and I/O-free steps common to both detectors; see :class:`~ssd300_client.Detector`."""

    def __init__(
        self,
        url: str | Iterable[str],
        *,
        protocol: str,
        model: str | None,
        timeout_s: float,
        retries: int,
        server_side_decode: bool,
        shared_memory: str | bool,
        parameters: Mapping[str, str | int | float | bool] | None,
        connection_class: type,
    ) -> None:
        self.protocol = check_protocol(protocol)
        if shared_memory not in SHARED_MEMORY_MODES:
            raise ValueError(f"shared_memory must be 'auto', True or False, got {shared_memory!r}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.urls = tuple(normalise_url(item, protocol=protocol) for item in split_urls(url))
        self.server_side_decode = bool(server_side_decode)
        self.model = model or (contract.IMAGE_MODEL if server_side_decode else contract.DETECTOR_MODEL)
        self.timeout_s, self.retries = float(timeout_s), int(retries)
        self.shared_memory = shared_memory
        self.parameters = dict(parameters) if parameters else None
        #: The weights the server reports for ssd300 ("random", "nvidia", "file"), once known.
        self.server_weights: str | None = None
        self._connections = [
            connection_class(item, protocol=protocol, timeout_s=self.timeout_s) for item in self.urls
        ]
        self._preferred = 0  # index of the last connection that answered
        self._ready_urls: set[str] = set()
        self._shm_refused: set[str] = set()
        self._weights_checked = False
        self._state_lock = threading.Lock()
        self._shm_pool: SharedMemoryPool | None = None
        if not self.server_side_decode and any(self._shared_memory_wanted(url) for url in self.urls):
            self._shm_pool = SharedMemoryPool(IMAGE_BYTES)
            # Safety net for a detector never closed: POSIX regions outlive the process otherwise.
            weakref.finalize(self, self._shm_pool.close)

    # ----- images in, detections out (no I/O) -----

    def _prepare(self, image: ImageInput, *, name: str) -> PreparedImage:
        if self.server_side_decode:
            return prepare_for_server_decode(image, name=name)
        return prepare_for_model(image, name=name)

    def _prepare_batch(
        self, batch: list[tuple[int, ImageInput]]
    ) -> tuple[list[tuple[int, PreparedImage]], dict[int, Outcome]]:
        prepared, failed = [], {}
        for index, image in batch:
            try:
                prepared.append(
                    (index, self._prepare(image, name=describe(image, fallback=f"images[{index}]")))
                )
            except InvalidImageError as exc:
                failed[index] = exc
        return prepared, failed

    def _request(self, prepared: list[PreparedImage], region: Region | None = None) -> InferRequest:
        outputs = contract.DETECTION_OUTPUTS
        if self.server_side_decode:
            encoded = np.array([[item.encoded] for item in prepared], dtype=np.object_)
            tensor = InputTensor(
                contract.ENCODED_IMAGE_INPUT, contract.ENCODED_IMAGE_DATATYPE, encoded.shape, data=encoded
            )
            return InferRequest(
                self.model, (tensor,), (*outputs, contract.IMAGE_SIZE_OUTPUT), self.parameters
            )
        shape = (len(prepared), MODEL_INPUT_SIZE, MODEL_INPUT_SIZE, 3)
        if region is not None:
            tensor = InputTensor(
                contract.IMAGES_INPUT,
                contract.IMAGES_DATATYPE,
                shape,
                shm_region=region.name,
                shm_byte_size=IMAGE_BYTES * len(prepared),
            )
        else:
            pixels = np.stack([item.pixels for item in prepared])
            tensor = InputTensor(contract.IMAGES_INPUT, contract.IMAGES_DATATYPE, shape, data=pixels)
        return InferRequest(self.model, (tensor,), outputs, self.parameters)

    def _results(self, outputs: dict[str, np.ndarray], prepared: list[PreparedImage]) -> list[Detections]:
        counts = outputs[contract.COUNT_OUTPUT].reshape(len(prepared), -1)[:, 0]
        results = []
        for row, item in enumerate(prepared):
            count = int(counts[row])
            boxes = outputs[contract.BOXES_OUTPUT][row, :count]
            if self.server_side_decode:  # ssd300_image already answers in pixels of the original
                height, width = (int(v) for v in outputs[contract.IMAGE_SIZE_OUTPUT][row])
            else:
                height, width = item.size
                boxes = boxes_to_pixels(boxes, width=width, height=height)
            scores = outputs[contract.SCORES_OUTPUT][row, :count]
            classes = outputs[contract.CLASSES_OUTPUT][row, :count]
            results.append(
                Detections(boxes, scores, classes, (height, width), name=item.name, source=item.source)
            )
        return results

    @staticmethod
    def _batches(images: Iterable[ImageInput], batch_size: int) -> Iterator[list[tuple[int, ImageInput]]]:
        if not 1 <= batch_size <= contract.MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be 1..{contract.MAX_BATCH_SIZE}, got {batch_size}")
        batch: list[tuple[int, ImageInput]] = []
        for item in enumerate(images):
            batch.append(item)
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _image_error(self, error: InvalidInputError, item: PreparedImage) -> InvalidImageError:
        """The server's "encoded_image[i]: …" rejection, told about the caller's file."""
        match = _SERVER_ITEM_ERROR.search(str(error))
        reason = match.group(1) if match else str(error)
        image_error = InvalidImageError(
            f"{item.name}: the server could not decode it ({reason})", name=item.name
        )
        image_error.__cause__, image_error.__suppress_context__ = error, True  # as `raise … from error`
        return image_error

    # ----- shared memory -----

    def _shared_memory_wanted(self, url: str) -> bool:
        return self.shared_memory is True or (self.shared_memory == "auto" and is_loopback(url))

    def _uses_shared_memory(self, url: str) -> bool:
        return self._shm_pool is not None and self._shared_memory_wanted(url) and url not in self._shm_refused

    def _shared_memory_refused(self, url: str, error: SSD300Error) -> None:
        """In "auto" mode a server that cannot map our regions (another container, say) gets bytes."""
        if self.shared_memory is True or isinstance(error, ServerUnavailableError):
            raise error
        log.warning(
            "%s cannot use this machine's shared memory (%s); sending images over the socket", url, error
        )
        self._shm_refused.add(url)

    # ----- readiness, weights, failover -----

    def _not_ready(self, url: str, ready: list[str] | None) -> ModelNotReadyError:
        known = f"; ready models there: {', '.join(ready) or 'none'}" if ready is not None else ""
        where = f"{url} ({self.protocol})"
        return ModelNotReadyError(
            f"model {self.model!r} is not ready on {where}: unknown there or still loading{known}"
        )

    def _mark_ready(self, url: str) -> bool:
        """Record that ``url`` serves the model; True when the weights still need checking."""
        with self._state_lock:
            self._ready_urls.add(url)
            first, self._weights_checked = not self._weights_checked, True
            return first

    def _note_weights(self, weights: str | None) -> None:
        self.server_weights = weights or None
        if weights == contract.RANDOM_WEIGHTS:
            log.warning(RANDOM_WEIGHTS_MESSAGE)
            warnings.warn(
                RANDOM_WEIGHTS_MESSAGE, RandomWeightsWarning, stacklevel=_first_frame_outside_package()
            )

    def _failover_order(self) -> list[tuple[int, object]]:
        """(position, connection) pairs, the one that answered last first."""
        return rotation(list(enumerate(self._connections)), self._preferred)

    def _failed_on(self, url: str, error: SSD300Error) -> bool:
        """Bookkeeping after a connection failed; True when another round may help."""
        self._ready_urls.discard(url)
        log.info("%s%s", error, "; trying the next server" if len(self._connections) > 1 else "")
        return isinstance(error, ServerUnavailableError)

    def _final_error(self, errors: list[SSD300Error]) -> SSD300Error:
        if len(self._connections) == 1:
            return errors[-1]
        kind = (
            ModelNotReadyError
            if all(isinstance(e, ModelNotReadyError) for e in errors)
            else ServerUnavailableError
        )
        summary = kind(
            f"no server could run {self.model!r} ({len(errors)} attempts): "
            + "; ".join(dict.fromkeys(map(str, errors)))
        )
        summary.__cause__, summary.__suppress_context__ = errors[-1], True
        return summary


def _first_frame_outside_package() -> int:
    """``stacklevel`` for warnings.warn that points at the caller's code, not at this package."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    return level
