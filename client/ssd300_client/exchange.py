"""One inference exchange, worded without I/O: prepared images → an :class:`InferRequest`,
the server's arrays → :class:`Detections`, a server's "cannot decode" → the caller's file name."""

from __future__ import annotations

import re

import numpy as np

from ssd300_common import contract
from ssd300_common.imaging import MODEL_INPUT_SIZE

from .errors import InvalidImageError, InvalidInputError
from .preprocess import PreparedImage, boxes_to_pixels
from .results import Detections
from .shared_memory import Region
from .transport import InferRequest, InputTensor

IMAGE_BYTES = MODEL_INPUT_SIZE * MODEL_INPUT_SIZE * 3
_SERVER_ITEM_ERROR = re.compile(r"encoded_image\[\d+\]:\s*(.*)", re.DOTALL)


def pixels_of(prepared: list[PreparedImage]) -> np.ndarray:
    """uint8 [N, 300, 300, 3]: the batch as ``ssd300_detector`` takes it."""
    return np.stack([_pixels(item) for item in prepared])


def _pixels(item: PreparedImage) -> np.ndarray:
    if item.pixels is None:
        raise ValueError(f"{item.name} was prepared for server-side decode, not as pixels")
    return item.pixels


def detector_request(
    model: str,
    prepared: list[PreparedImage],
    parameters: dict | None,
    region: Region | None = None,
) -> InferRequest:
    """Pixels for ``ssd300_detector``: in the request, or in a shared-memory region already
    holding them."""
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
        tensor = InputTensor(contract.IMAGES_INPUT, contract.IMAGES_DATATYPE, shape, data=pixels_of(prepared))
    return InferRequest(model, (tensor,), contract.DETECTION_OUTPUTS, parameters)


def image_request(model: str, prepared: list[PreparedImage], parameters: dict | None) -> InferRequest:
    """Encoded files for ``ssd300_image``, which answers with each image's size too."""
    encoded = np.array([[item.encoded] for item in prepared], dtype=np.object_)
    tensor = InputTensor(
        contract.ENCODED_IMAGE_INPUT, contract.ENCODED_IMAGE_DATATYPE, encoded.shape, data=encoded
    )
    return InferRequest(
        model, (tensor,), (*contract.DETECTION_OUTPUTS, contract.IMAGE_SIZE_OUTPUT), parameters
    )


def detections_from(outputs: dict[str, np.ndarray], prepared: list[PreparedImage]) -> list[Detections]:
    """One :class:`Detections` per image, in pixels of the original image."""
    counts = outputs[contract.COUNT_OUTPUT].reshape(len(prepared), -1)[:, 0]
    sizes = outputs.get(contract.IMAGE_SIZE_OUTPUT)  # ssd300_image answers in pixels already
    results = []
    for row, item in enumerate(prepared):
        count = int(counts[row])
        boxes = outputs[contract.BOXES_OUTPUT][row, :count]
        if sizes is not None:
            height, width = (int(v) for v in sizes[row])
        elif item.size is not None:
            height, width = item.size
            boxes = boxes_to_pixels(boxes, width=width, height=height)
        else:
            raise ValueError(f"{item.name}: the server did not say the image's size")
        scores = outputs[contract.SCORES_OUTPUT][row, :count]
        classes = outputs[contract.CLASSES_OUTPUT][row, :count]
        results.append(Detections(boxes, scores, classes, (height, width), name=item.name))
    return results


def image_error(error: InvalidInputError, item: PreparedImage) -> InvalidImageError:
    """The server's "encoded_image[i]: …" rejection, told about the caller's file."""
    match = _SERVER_ITEM_ERROR.search(str(error))
    reason = match.group(1) if match else str(error)
    image_error = InvalidImageError(f"{item.name}: the server could not decode it ({reason})", name=item.name)
    image_error.__cause__, image_error.__suppress_context__ = error, True  # as `raise … from error`
    return image_error
