"""ssd300_image_preprocess: encoded image bytes → uint8 [300, 300, 3] and the original size.

Decoding and resizing are the client's own code (ssd300_common.imaging, from the models' Python
environment), so both sides send the network the same pixels. A bad item fails its own request
with a message naming the problem; the rest of the batch goes on.
"""

import base64
import binascii

import numpy as np
import triton_python_backend_utils as pb_utils

from ssd300_common.imaging import ImageDecodeError, decode_image, resize_for_model

# Encoded images start with a binary signature; text made only of these bytes may be base64.
BASE64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n\r")


def _decode(item: bytes, name: str):
    """Raw file bytes first; base64 text (JSON requests) only when the raw bytes are no image."""
    if not item:
        raise ImageDecodeError(f"{name} is empty")
    try:
        return decode_image(item, name=name)
    except ImageDecodeError:
        if not set(item) <= BASE64_ALPHABET:
            raise
        try:
            data = base64.b64decode(item, validate=False)
        except (binascii.Error, ValueError):
            raise ImageDecodeError(
                f"{name}: neither an image file nor base64 of one ({len(item)} bytes)"
            ) from None
        try:
            return decode_image(data, name=name)
        except ImageDecodeError:
            raise ImageDecodeError(
                f"{name}: neither an image file nor base64 of one ({len(item)} bytes)"
            ) from None


def _preprocess(request):
    encoded = pb_utils.get_input_tensor_by_name(request, "encoded_image").as_numpy()
    images, sizes = [], []
    for index, item in enumerate(encoded.reshape(-1)):
        image = _decode(bytes(item), f"encoded_image[{index}]")
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
