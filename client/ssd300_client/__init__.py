"""Python client for NVIDIA's SSD300 object detector served on Triton Inference Server.

    from ssd300_client import DEFAULT_DISPLAY_THRESHOLD, Detector

    with Detector("127.0.0.1:8001") as detector:
        detections = detector.detect("photo.jpg")
        for d in detections.filter(DEFAULT_DISPLAY_THRESHOLD):
            print(d.class_name, d.confidence, d.xyxy)
        detections.draw("photo.jpg").save("photo-annotated.png")

``detect()`` returns every detection the server sent (score above 0.05): pass ``threshold=``
or call ``.filter()`` for display. Boxes are in pixels of the original, EXIF-upright image.
"""

from ssd300_common.labels import (
    COCO_CATEGORY_IDS,
    COCO_NAMES,
    class_name,
    coco_category_id,
    label_for_category_id,
)

from .async_detector import AsyncDetector
from .detector import Detector
from .detector_base import DEFAULT_BATCH_SIZE, DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT_S
from .errors import (
    AccessDeniedError,
    InferenceError,
    InferenceTimeoutError,
    InvalidImageError,
    InvalidInputError,
    ModelNotReadyError,
    RandomWeightsWarning,
    ServerBusyError,
    ServerUnavailableError,
    SSD300Error,
)
from .preprocess import boxes_to_pixels, load_image
from .results import DEFAULT_DISPLAY_THRESHOLD, Detection, Detections
from .tls import TLS

__all__ = [
    "COCO_CATEGORY_IDS",
    "COCO_NAMES",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_DISPLAY_THRESHOLD",
    "DEFAULT_TIMEOUT_S",
    "TLS",
    "AccessDeniedError",
    "AsyncDetector",
    "Detection",
    "Detections",
    "Detector",
    "InferenceError",
    "InferenceTimeoutError",
    "InvalidImageError",
    "InvalidInputError",
    "ModelNotReadyError",
    "RandomWeightsWarning",
    "SSD300Error",
    "ServerBusyError",
    "ServerUnavailableError",
    "boxes_to_pixels",
    "class_name",
    "coco_category_id",
    "label_for_category_id",
    "load_image",
]
