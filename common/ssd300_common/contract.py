"""Names and sizes the server's model repository defines, written out once for every side.

The ``config.pbtxt`` files under ``model_repository/`` are the source of truth;
``tests/test_client_contract.py`` asserts that every value here agrees with them. The client,
the model build, the serving helpers, the load tests and the models import these names.
"""

from __future__ import annotations

# Models (docs/contracts.md).
DETECTOR_MODEL = "ssd300_detector"  # uint8 images already resized to 300×300 in
IMAGE_MODEL = "ssd300_image"  # encoded image files in (server-side decode)
NETWORK_MODEL = "ssd300"  # the network itself; its config carries the weights' provenance
POSTPROCESS_MODEL = "ssd300_postprocess"  # where the score threshold and top-K live

# Inputs.
IMAGES_INPUT = "images"  # UINT8 [N, 300, 300, 3], RGB
ENCODED_IMAGE_INPUT = "encoded_image"  # BYTES [N, 1], raw file bytes
IMAGES_DATATYPE = "UINT8"
ENCODED_IMAGE_DATATYPE = "BYTES"

# Outputs, shared by both public models.
BOXES_OUTPUT = "detection_boxes"  # FP32 [N, 200, 4] (x1, y1, x2, y2)
SCORES_OUTPUT = "detection_scores"  # FP32 [N, 200], highest first
CLASSES_OUTPUT = "detection_classes"  # INT32 [N, 200], 1..80, 0 = padding
COUNT_OUTPUT = "num_detections"  # INT32 [N, 1]
IMAGE_SIZE_OUTPUT = "image_size"  # INT32 [N, 2] (height, width); ssd300_image only
DETECTION_OUTPUTS = (BOXES_OUTPUT, SCORES_OUTPUT, CLASSES_OUTPUT, COUNT_OUTPUT)

IMAGE_OUTPUTS = (*DETECTION_OUTPUTS, IMAGE_SIZE_OUTPUT)  # what ssd300_image returns
PUBLIC_MODELS = (DETECTOR_MODEL, IMAGE_MODEL)

MAX_BATCH_SIZE = 64  # max_batch_size of both public models
MAX_DETECTIONS = 200  # rows per image in every detection output

# ssd300_postprocess's selection settings: config parameters (NVIDIA's reference values), each
# of which a request may override with a request parameter of the same name.
SCORE_THRESHOLD_PARAMETER = "score_threshold"  # detections scoring at or below it are dropped
CANDIDATES_PARAMETER = "candidates_per_class"  # best boxes per class that enter NMS
NMS_IOU_PARAMETER = "nms_iou_threshold"  # a box survives NMS if its IoU with every kept one is below
MAX_DETECTIONS_PARAMETER = "max_detections"  # detections per image, at most MAX_DETECTIONS
POSTPROCESS_DEFAULTS: dict[str, float | int] = {
    SCORE_THRESHOLD_PARAMETER: 0.05,
    CANDIDATES_PARAMETER: 200,
    NMS_IOU_PARAMETER: 0.45,
    MAX_DETECTIONS_PARAMETER: MAX_DETECTIONS,
}
SERVER_SCORE_THRESHOLD = POSTPROCESS_DEFAULTS[SCORE_THRESHOLD_PARAMETER]

# Files the model build writes into NETWORK_MODEL's version folder (none is committed): the
# engine each one is for, and the build's provenance (also inside model.pt and model.onnx).
ENGINE_FILES = {"torchscript": "model.pt", "onnx": "model.onnx"}
METADATA_FILE = "weights.json"

# Parameter the embedded server stamps into ssd300's config: "random", "nvidia" or "file".
WEIGHTS_PARAMETER = "weights"
RANDOM_WEIGHTS = "random"
