"""ssd300_image_postprocess: normalised boxes → pixels of the original image, clipped to it."""

import numpy as np
import triton_python_backend_utils as pb_utils


def to_pixels(boxes: np.ndarray, image_size: np.ndarray) -> np.ndarray:
    """boxes: [N, K, 4] (x1, y1, x2, y2) in [0, 1]; image_size: [N, 2] (height, width)."""
    height = image_size[:, 0, None].astype(np.float32)
    width = image_size[:, 1, None].astype(np.float32)
    pixels = np.empty_like(boxes)
    pixels[..., 0::2] = np.clip(boxes[..., 0::2] * width[..., None], 0, width[..., None])
    pixels[..., 1::2] = np.clip(boxes[..., 1::2] * height[..., None], 0, height[..., None])
    return pixels


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            boxes = pb_utils.get_input_tensor_by_name(request, "detection_boxes").as_numpy()
            size = pb_utils.get_input_tensor_by_name(request, "image_size").as_numpy()
            output = pb_utils.Tensor("pixel_boxes", to_pixels(boxes, size))
            responses.append(pb_utils.InferenceResponse(output_tensors=[output]))
        return responses
