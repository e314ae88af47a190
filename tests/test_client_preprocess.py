"""Images in any form and mode → the model's uint8 RGB [300, 300, 3]; boxes back to pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from PIL import Image

from ssd300_client import InvalidImageError, boxes_to_pixels, load_image
from ssd300_client.preprocess import prepare_for_model, prepare_for_server_decode

EXIF_ORIENTATION = 0x0112
PILLOW_DEFAULT_BOMB_LIMIT = 1024 * 1024 * 1024 // 4 // 3


def encode(image: Image.Image, format: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


# ----- box mapping -----


def test_boxes_scale_by_width_and_height_of_a_landscape_image():
    # 640×480: x · 640, y · 480 → (0.5·640, 0.25·480, 0.75·640, 1.0·480) = (320, 120, 480, 480)
    assert_allclose(boxes_to_pixels([[0.5, 0.25, 0.75, 1.0]], width=640, height=480), [[320, 120, 480, 480]])


def test_boxes_scale_by_width_and_height_of_a_portrait_image():
    # 480×640: (0.1·480, 0.1·640, 0.9·480, 0.5·640) = (48, 64, 432, 320)
    assert_allclose(
        boxes_to_pixels([[0.1, 0.1, 0.9, 0.5]], width=480, height=640), [[48, 64, 432, 320]], rtol=1e-6
    )


def test_boxes_of_a_tiny_image_keep_sub_pixel_coordinates():
    # 3×2: (0.5·3, 0.5·2, 1.0·3, 1.0·2) = (1.5, 1, 3, 2)
    assert_allclose(boxes_to_pixels([[0.5, 0.5, 1.0, 1.0]], width=3, height=2), [[1.5, 1.0, 3.0, 2.0]])


def test_boxes_reaching_outside_the_image_are_clipped_to_it():
    # 100×50: (−0.1·100, −0.2·50, 1.3·100, 1.05·50) = (−10, −10, 130, 52.5) → (0, 0, 100, 50)
    assert_allclose(boxes_to_pixels([[-0.1, -0.2, 1.3, 1.05]], width=100, height=50), [[0, 0, 100, 50]])


def test_no_boxes_map_to_an_empty_float32_array():
    pixels = boxes_to_pixels(np.zeros((0, 4)), width=10, height=10)
    assert pixels.shape == (0, 4) and pixels.dtype == np.float32


# ----- modes -----


def image_in_mode(mode: str) -> Image.Image:
    """A 40×30 image in ``mode`` whose left half is bright and right half dark."""
    gray = np.zeros((30, 40), dtype=np.uint8)
    gray[:, :20] = 200
    base = Image.fromarray(gray, "L")
    if mode == "I;16":
        sixteen_bit = gray.astype("<u2") * 257  # 200 · 257 = 51400 of 65535
        return Image.frombytes("I;16", (40, 30), sixteen_bit.tobytes())
    if mode == "P":
        return base.convert("RGB").convert("P")
    if mode == "P+transparency":
        image = base.convert("RGB").convert("P")
        image.info["transparency"] = 0
        return image
    return base.convert(mode)


MODES_AND_FORMATS = [
    ("L", "PNG"),
    ("LA", "PNG"),
    ("P", "PNG"),
    ("P+transparency", "PNG"),
    ("RGBA", "PNG"),
    ("CMYK", "TIFF"),
    ("I;16", "PNG"),
    ("1", "PNG"),
]


@pytest.mark.parametrize(("mode", "format"), MODES_AND_FORMATS, ids=[mode for mode, _ in MODES_AND_FORMATS])
def test_every_image_mode_becomes_rgb_uint8_of_the_model_size(mode, format):
    data = encode(image_in_mode(mode), format)
    assert Image.open(io.BytesIO(data)).mode == mode.split("+")[0]  # the file really is in that mode
    prepared = prepare_for_model(data, name=f"{mode}.{format.lower()}")
    assert prepared.pixels.dtype == np.uint8
    assert prepared.pixels.shape == (300, 300, 3)
    assert prepared.size == (30, 40)


@pytest.mark.parametrize(("mode", "format"), MODES_AND_FORMATS, ids=[mode for mode, _ in MODES_AND_FORMATS])
def test_every_image_mode_keeps_its_bright_and_dark_halves(mode, format):
    pixels = np.asarray(load_image(encode(image_in_mode(mode), format)), dtype=int)
    left, right = pixels[:, :15].mean(), pixels[:, 25:].mean()
    assert left > right + 100, (left, right)


def test_sixteen_bit_images_are_scaled_by_their_depth_not_clipped():
    # 51400 of 65535 → 51400 >> 8 = 200 of 255, not clipped to 255.
    pixels = np.asarray(load_image(encode(image_in_mode("I;16"))))
    assert pixels[0, 0].tolist() == [200, 200, 200]


def test_alpha_is_dropped_not_blended():
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    assert np.asarray(load_image(encode(rgba)))[0, 0].tolist() == [10, 20, 30]


# ----- EXIF orientation -----


def jpeg_with_orientation(orientation: int) -> bytes:
    """A 60×30 JPEG (as stored): red block top-left, the rest white, tagged with ``orientation``."""
    stored = np.full((30, 60, 3), 255, dtype=np.uint8)
    stored[:15, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return encode(Image.fromarray(stored), "JPEG", quality=95, exif=exif.tobytes())


def is_red(pixel) -> bool:
    red, green, blue = (int(v) for v in pixel)
    return red > 200 and green < 60 and blue < 60


def test_orientation_6_is_turned_clockwise_to_upright():
    # Tag 6: stored image needs 90° clockwise: 60×30 becomes 30×60 and top-left goes top-right.
    upright = load_image(jpeg_with_orientation(6))
    assert upright.size == (30, 60)
    pixels = np.asarray(upright)
    assert is_red(pixels[5, 25]) and not is_red(pixels[5, 5])


def test_orientation_8_is_turned_counter_clockwise_to_upright():
    # Tag 8: 90° counter-clockwise: 60×30 becomes 30×60 and top-left goes bottom-left.
    upright = load_image(jpeg_with_orientation(8))
    assert upright.size == (30, 60)
    pixels = np.asarray(upright)
    assert is_red(pixels[55, 5]) and not is_red(pixels[5, 5])


def test_exif_rotation_equals_rotating_the_decoded_pixels():
    rotated = load_image(jpeg_with_orientation(6))
    stored = Image.open(io.BytesIO(jpeg_with_orientation(6))).convert("RGB")
    assert_array_equal(np.asarray(rotated), np.asarray(stored.transpose(Image.Transpose.ROTATE_270)))


def test_prepared_size_is_that_of_the_upright_image():
    assert prepare_for_model(jpeg_with_orientation(6), name="tagged.jpg").size == (60, 30)


# ----- kinds of input -----


def test_a_path_its_bytes_the_pil_image_and_its_array_prepare_identically(tmp_path):
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    path = tmp_path / "noise.png"
    picture.save(path)
    prepared = [
        prepare_for_model(item, name="x").pixels
        for item in (path, str(path), path.read_bytes(), picture, np.asarray(picture))
    ]
    for pixels in prepared[1:]:
        assert_array_equal(pixels, prepared[0])


@pytest.mark.parametrize("shape", [(20, 30), (20, 30, 1)])
def test_grayscale_arrays_become_gray_rgb(shape):
    array = np.full(shape, 77, dtype=np.uint8)
    assert np.asarray(load_image(array))[0, 0].tolist() == [77, 77, 77]


def test_float_arrays_are_refused_with_a_reason():
    with pytest.raises(InvalidImageError, match="uint8"):
        load_image(np.zeros((4, 4, 3), dtype=np.float32), name="frame")


def test_a_file_that_is_not_an_image_is_named_in_the_error(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("not a picture")
    with pytest.raises(InvalidImageError, match="notes.jpg") as caught:
        load_image(path, name=str(path))
    assert caught.value.name == str(path)


def test_a_missing_file_is_an_invalid_image_naming_it(tmp_path):
    with pytest.raises(InvalidImageError, match="missing.jpg: cannot read"):
        prepare_for_model(tmp_path / "missing.jpg", name=str(tmp_path / "missing.jpg"))


def test_a_truncated_jpeg_is_an_invalid_image():
    data = encode(Image.new("RGB", (64, 64), "blue"), "JPEG")
    with pytest.raises(InvalidImageError):
        load_image(data[: len(data) // 2], name="cut.jpg")


def test_unsupported_input_types_are_a_type_error():
    with pytest.raises(TypeError, match="expected a path"):
        load_image(42)


# ----- decompression bombs -----


def test_pillows_decompression_bomb_limit_is_left_on():
    import ssd300_client  # noqa: F401  (importing the client must not lift it)

    assert Image.MAX_IMAGE_PIXELS == PILLOW_DEFAULT_BOMB_LIMIT


def test_an_image_far_over_the_pixel_limit_is_refused_as_a_bomb(monkeypatch):
    data = encode(Image.new("L", (100, 100)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 pixels > 2 × 1,000: Pillow raises
    with pytest.raises(InvalidImageError, match="decompression bomb"):
        load_image(data, name="bomb.png")


# ----- server-side decode -----


def test_server_side_decode_sends_file_bytes_untouched(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg_with_orientation(6))
    assert prepare_for_server_decode(path, name=str(path)).encoded == path.read_bytes()


def test_server_side_decode_sends_in_memory_images_as_upright_png():
    stored = Image.open(io.BytesIO(jpeg_with_orientation(6)))
    encoded = prepare_for_server_decode(stored, name="x").encoded
    decoded = Image.open(io.BytesIO(encoded))
    assert decoded.format == "PNG" and decoded.size == (30, 60)


def test_server_side_decode_refuses_empty_bytes():
    with pytest.raises(InvalidImageError, match="empty"):
        prepare_for_server_decode(b"", name="blank")
