"""ssd300_image_preprocess: encoded image bytes → uint8 [300, 300, 3] and the original size.

A bad item fails its own request with a message naming the problem; the rest of the batch
goes on.
"""

import base64
import binascii

import numpy as np
import triton_python_backend_utils as pb_utils

from imaging import ImageDecodeError, decode_image, resize_for_model

# Encoded images start with a binary signature; text made only of these bytes is base64.
BASE64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n\r")


def _image_bytes(item: bytes) -> bytes:
    if item and set(item[:64]) <= BASE64_ALPHABET:
        try:
            return base64.b64decode(item, validate=False)
        except (binascii.Error, ValueError):
            pass
    return item


def _preprocess(request):
    encoded = pb_utils.get_input_tensor_by_name(request, "encoded_image").as_numpy()
    images, sizes = [], []
    for index, item in enumerate(encoded.reshape(-1)):
        data = _image_bytes(bytes(item))
        if not data:
            raise ImageDecodeError(f"encoded_image[{index}] is empty")
        image = decode_image(data, name=f"encoded_image[{index}]")
        images.append(resize_for_model(image))
        sizes.append((image.height, image.width))
    return [
        pb_utils.Tensor("images", np.stack(images)),
        pb_utils.Tensor("image_size", np.asarray(sizes, dtype=np.int32)),
    ]


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(pb_utils.InferenceResponse(output_tensors=_preprocess(request)))
            except ImageDecodeError as exc:
                error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses
