"""ssd300_image_postprocess: normalised boxes → pixels of the original image, clipped to it;
scores, classes, counts and the image size pass through unchanged (see config.pbtxt for why)."""

import numpy as np
import triton_python_backend_utils as pb_utils

# input tensor -> output tensor, copied as they are
PASS_THROUGH = {
    "selected_scores": "detection_scores",
    "selected_classes": "detection_classes",
    "selected_count": "num_detections",
    "image_size": "original_size",
}


def to_pixels(boxes: np.ndarray, image_size: np.ndarray) -> np.ndarray:
    """boxes: [N, K, 4] (x1, y1, x2, y2) in [0, 1]; image_size: [N, 2] (height, width)."""
    height = image_size[:, 0, None, None].astype(np.float32)
    width = image_size[:, 1, None, None].astype(np.float32)
    pixels = np.empty_like(boxes)
    pixels[..., 0::2] = np.clip(boxes[..., 0::2] * width, 0, width)
    pixels[..., 1::2] = np.clip(boxes[..., 1::2] * height, 0, height)
    return pixels


def _read(request, name: str) -> np.ndarray:
    return pb_utils.get_input_tensor_by_name(request, name).as_numpy()


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:

            def read(name, request=request):
                return _read(request, name)

            outputs = [
                pb_utils.Tensor("detection_boxes", to_pixels(read("normalized_boxes"), read("image_size")))
            ]
            outputs += [pb_utils.Tensor(target, read(source)) for source, target in PASS_THROUGH.items()]
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses
